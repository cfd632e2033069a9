"""ReaperActor: holds (or waits for) the leader lease; only the leader recovers orphaned jobs (and, told
by it after each election round, only the leader's SchedulerActor fires schedules).

Election: the lease lives 2/3 of ``election_timeout`` and every node tries to take or renew it every
1/6, so a new leader is in place within 5/6 of ``election_timeout`` after the old one's death. Each
recovery pass is a Lua script that first checks the caller still holds the lease, so a deposed leader
changes nothing.

Recovery is driven by liveness, never by run time: a job is taken back when its lease expired (its
node stopped renewing) or when its node's record is gone (3 missed heartbeats). After this node lost
Redis, nothing is reaped for one lease period (or heartbeat interval, if longer) once Redis answers again,
or after a Sentinel failover moved the primary (writes of the last seconds may be lost with the old one):
every node's renewals and heartbeats failed during the outage too, and they must get the chance to
renew before anything counts as lost (otherwise a Redis blip would requeue every running job). The time from the lost
node's last sign of life to the takeover is logged and observed in ``secauto_recovery_seconds``.

The leader also works off the dependency backlog: dependents that the script recording a job's end had
no budget left to settle (a large or deep graph; see ``store/lua/lib.lua``, "Dependencies"). Each pass
runs at most MAX_SETTLE_CALLS settle scripts, so one tick stays short whatever the backlog.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

from loguru import logger

from actors.context import NodeContext
from actors.core import Actor, ActorDeadError
from actors.messages import Elect, IsLeader, LeadershipChanged, PrimaryMoved, Reap
from secauto.models import make_event
from secauto.store.connection import REDIS_UNAVAILABLE
from secauto.store.jobs import Recovery

MAX_SETTLE_CALLS = 10  # settle scripts per reap pass (each settles at most RetentionPolicy.settle_budget)


class ReaperActor(Actor):
    def __init__(self, ctx: NodeContext, scheduler_name: str = "scheduler") -> None:
        self.ctx = ctx
        self.scheduler_name = scheduler_name
        self.token = f"{ctx.node_id}:{secrets.token_hex(8)}"
        self.is_leader = False
        self._last_redis_error = 0.0  # monotonic time of this node's last failed Redis call
        self.log = logger.bind(component="reaper", node_id=ctx.node_id)

    @property
    def election_timeout(self) -> float:
        return self.ctx.settings.config.cluster.election_timeout

    @property
    def reap_interval(self) -> float:
        return max(0.1, min(self.ctx.settings.config.cluster.lease_timeout / 3, self.ctx.heartbeat_interval, 5.0))

    async def on_start(self) -> None:
        self.start_timer("elect", self.election_timeout / 6, Elect(), initial_delay=0.0)
        self.start_timer("reap", self.reap_interval, Reap())

    async def on_stop(self) -> None:
        self._announce(leader=False)
        if self.is_leader:
            try:
                await self.ctx.registry.release_leadership(self.token)
                self.log.info("released leadership")
            except REDIS_UNAVAILABLE as exc:
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
            case PrimaryMoved():
                self._last_redis_error = time.monotonic()  # same grace as after an outage
            case _:
                raise TypeError(f"reaper got an unexpected message {message!r}")
        return None

    async def _elect(self) -> None:
        lease_ms = int(self.election_timeout * 2000 / 3)
        event = make_event("leader.changed", node_id=self.ctx.node_id)
        try:
            outcome = await self.ctx.registry.hold_leadership(self.token, lease_ms, event)
        except REDIS_UNAVAILABLE as exc:
            self._last_redis_error = time.monotonic()
            self.log.warning("leader election failed: {}", exc)
            return
        was_leader, self.is_leader = self.is_leader, outcome > 0
        self.ctx.metrics.is_leader.set(1 if self.is_leader else 0)
        self._announce(leader=self.is_leader)
        if self.is_leader and not was_leader:
            self.log.info("became cluster leader")
            await self._reap()  # a new leader catches up at once
        elif was_leader and not self.is_leader:
            self.log.warning("lost cluster leadership")

    async def _reap(self) -> None:
        cluster = self.ctx.settings.config.cluster
        grace = max(cluster.lease_timeout, cluster.heartbeat_interval)
        if time.monotonic() - self._last_redis_error < grace:
            return None  # just reconnected: let the nodes renew and heartbeat first
        try:
            expired = await self.ctx.queue.recover(leader_token=self.token, mode="expired", cause="lease expired")
            if expired is None:
                return self._deposed()
            self._account(expired, lost_since_ms=expired.oldest_deadline_ms - self.ctx.lease_ms)
            _, lost_nodes = await self.ctx.registry.scan()
            if lost_nodes:
                recovered = await self.ctx.queue.recover(leader_token=self.token, mode="nodes",
                                                         cause="node lost (missed 3 heartbeats)",
                                                         nodes=list(lost_nodes))
                if recovered is None:
                    return self._deposed()
                self._account(recovered, lost_since_ms=min(lost_nodes.values()))
                await self.ctx.registry.forget(lost_nodes)
                self.log.warning("node(s) lost: {}", ", ".join(sorted(lost_nodes)))
            left = expired.dependency_backlog  # checked by the recovery pass: no extra round-trip when empty
            for _ in range(MAX_SETTLE_CALLS):
                if not left:
                    break
                settled = await self.ctx.queue.settle_backlog(leader_token=self.token)
                if settled is None:
                    return self._deposed()
                left = settled
            else:
                if left:
                    self.log.info("dependency backlog: {} job(s) still have dependents to settle", left)
        except REDIS_UNAVAILABLE as exc:
            self._last_redis_error = time.monotonic()
            self.log.warning("reap failed: {}", exc)
        return None

    def _announce(self, *, leader: bool) -> None:
        """Tell the scheduler (every round, so a restarted scheduler learns it too) whether it may fire."""
        with contextlib.suppress(KeyError, ActorDeadError):
            self.system.get(self.scheduler_name).tell(LeadershipChanged(self.token if leader else None))

    def _deposed(self) -> None:
        self._announce(leader=False)
        self.is_leader = False
        self.ctx.metrics.is_leader.set(0)
        self.log.warning("lost cluster leadership (lease taken); stopped reaping")

    def _account(self, recovery: Recovery, *, lost_since_ms: int) -> None:
        if not recovery.total:
            return
        seconds = max(0.0, time.time() - lost_since_ms / 1000)
        metrics = self.ctx.metrics
        metrics.jobs_recovered.inc(recovery.total)
        metrics.recovery_time.observe(seconds)
        if recovery.failed:
            metrics.jobs_dead_lettered.labels(reason="node_lost").inc(recovery.failed)
        if recovery.quarantined:
            metrics.jobs_dead_lettered.labels(reason="poison").inc(recovery.quarantined)
        self.log.bind(recovery_s=round(seconds, 3)).warning(
            "recovered {} orphaned job(s): {} requeued, {} failed (retries used up), {} quarantined (poison)",
            recovery.total, recovery.requeued, recovery.failed, recovery.quarantined)
