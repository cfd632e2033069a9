"""ReaperActor: holds (or waits for) the leader lease; only the leader recovers orphaned jobs.

The lease lives ``election_timeout`` and is renewed every third of it. Each reap is one Lua script that
first checks the caller still holds the lease, so a deposed leader changes nothing. Jobs whose lease
expired go back to the queue (or fail once their retries are used up).
"""

from __future__ import annotations

import secrets
from typing import Any

from loguru import logger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actors.context import NodeContext
from actors.core import Actor
from actors.messages import Elect, IsLeader, Reap
from secauto.models import make_event

_REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)


class ReaperActor(Actor):
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.token = f"{ctx.node_id}:{secrets.token_hex(8)}"
        self.is_leader = False
        self.log = logger.bind(component="reaper", node_id=ctx.node_id)

    @property
    def reap_interval(self) -> float:
        return max(0.1, min(self.ctx.settings.config.cluster.lease_timeout / 3, 5.0))

    async def on_start(self) -> None:
        election = self.ctx.settings.config.cluster.election_timeout
        self.start_timer("elect", election / 3, Elect(), initial_delay=0.0)
        self.start_timer("reap", self.reap_interval, Reap())

    async def on_stop(self) -> None:
        if self.is_leader:
            try:
                await self.ctx.registry.release_leadership(self.token)
                self.log.info("released leadership")
            except _REDIS_ERRORS as exc:
                self.log.warning("could not release leadership ({}); the lease will expire", exc)
            self.is_leader = False

    async def receive(self, message: Any) -> Any:
        match message:
            case Elect():
                await self._elect()
            case Reap():
                if self.is_leader:
                    await self._reap()
            case IsLeader():
                return self.is_leader
            case _:
                raise TypeError(f"reaper got an unexpected message {message!r}")
        return None

    async def _elect(self) -> None:
        lease_ms = int(self.ctx.settings.config.cluster.election_timeout * 1000)
        event = make_event("leader.changed", node_id=self.ctx.node_id)
        try:
            outcome = await self.ctx.registry.hold_leadership(self.token, lease_ms, event)
        except _REDIS_ERRORS as exc:
            self.log.warning("leader election failed: {}", exc)
            return
        was_leader, self.is_leader = self.is_leader, outcome > 0
        if self.is_leader and not was_leader:
            self.log.info("became cluster leader")
        elif was_leader and not self.is_leader:
            self.log.warning("lost cluster leadership")

    async def _reap(self) -> None:
        try:
            outcome = await self.ctx.queue.reap(self.token, retention_s=self.ctx.retention_s)
        except _REDIS_ERRORS as exc:
            self.log.warning("reap failed: {}", exc)
            return
        if outcome is None:
            self.is_leader = False
            self.log.warning("lost cluster leadership (lease taken); stopped reaping")
            return
        requeued, failed = outcome
        if requeued or failed:
            self.log.info("recovered orphaned jobs: {} requeued, {} failed (retries exhausted)", requeued, failed)
