"""HeartbeatActor: keeps this node's record in the registry fresh and answers health checks.

Every ``heartbeat_interval`` it writes the node record with a TTL of 3 intervals, so a node that
misses three heartbeats disappears from the registry by itself. ``node.joined`` is published on the
first successful write and ``node.left`` when the actor stops (after the record is deleted). A failed
write is logged and retried on the next tick; it never crashes the actor. The outcome of each write and
of each health check sets ``secauto_redis_up`` (1 reached, 0 unreachable). With Redis Sentinel it also
asks the sentinels every second where the primary is, so that a failover moves the node's
connections at once rather than when the old primary is demoted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from loguru import logger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actors.context import NodeContext
from actors.core import Actor, ActorDeadError
from actors.messages import (
    Beat,
    CheckHealth,
    CheckPrimary,
    CheckStorage,
    ExecutorStats,
    GetStats,
    HealthReport,
    PrimaryMoved,
    SetStatus,
)
from secauto import __version__
from secauto.models import NodeInfo, format_timestamp, make_event
from secauto.store.connection import REDIS_UNAVAILABLE, follow_failover
from secauto.store.safety import check_eviction

CAPABILITIES = ["playbook_execution", "job_processing"]
MISSED_BEATS_ALLOWED = 3
PRIMARY_CHECK_S = 1.0  # with Sentinel: how often to ask where the Redis primary is
STORAGE_CHECK_S = 60.0  # cluster mode: how often to look at Redis' maxmemory-policy again


class HeartbeatActor(Actor):
    def __init__(self, ctx: NodeContext, executor_name: str = "executor") -> None:
        self.ctx = ctx
        self.executor_name = executor_name
        self.joined = False
        self.status = "active"
        self.last_error: str | None = None
        self.storage_problem: str | None = None  # an unsafe eviction policy, shown by /health
        self.storage_checked = False
        self.log = logger.bind(component="heartbeat", node_id=ctx.node_id)

    async def on_start(self) -> None:
        self.start_timer("beat", self.ctx.heartbeat_interval, Beat(), initial_delay=0.0)
        if self.ctx.settings.redis.sentinels:
            self.start_timer("primary", PRIMARY_CHECK_S, CheckPrimary())
        if self.ctx.settings.config.cluster.enabled:
            self.start_timer("storage", STORAGE_CHECK_S, CheckStorage(), initial_delay=0.0)

    async def on_stop(self) -> None:
        if not self.joined:
            return
        try:
            await self.ctx.registry.remove(self.ctx.node_id)
            await self.ctx.registry.publish(make_event("node.left", node_id=self.ctx.node_id))
        except RedisError as exc:
            self.log.warning("could not remove the node record at stop ({}); it expires by itself", exc)

    async def receive(self, message: Any) -> Any:
        match message:
            case Beat():
                await self._beat()
            case SetStatus(status=status):
                self.status = status
                await self._beat()
            case CheckHealth():
                return await self._check_health()
            case CheckPrimary():
                await self._check_primary()
            case CheckStorage():
                await self._check_storage()
            case _:
                raise TypeError(f"heartbeat got an unexpected message {message!r}")
        return None

    async def record(self) -> NodeInfo:
        stats: ExecutorStats = await self.system.get(self.executor_name).ask(GetStats(), timeout=5.0)
        now = time.time()
        return NodeInfo(
            id=self.ctx.node_id, host=self.ctx.host, port=self.ctx.port, status=self.status,
            started_at=self.ctx.started_at, last_seen=format_timestamp(now), capabilities=CAPABILITIES,
            load=stats.load, jobs_running=stats.running, jobs_completed=stats.completed,
            jobs_failed=stats.failed, capacity=stats.capacity, version=__version__, last_seen_epoch=now)

    async def _beat(self) -> None:
        info = await self.record()
        ttl_ms = int(self.ctx.heartbeat_interval * MISSED_BEATS_ALLOWED * 1000)
        try:
            await self.ctx.registry.write(info, ttl_ms)
            if not self.joined:
                await self.ctx.registry.publish(make_event("node.joined", node_id=self.ctx.node_id))
                self.joined = True
                self.log.info("node joined cluster {}", self.ctx.queue.keys.cluster)
            if self.last_error is not None:
                self.log.info("Redis reachable again")
            self.last_error = None
            self.ctx.metrics.redis_up.set(1)
        except (*REDIS_UNAVAILABLE, OSError) as exc:
            if self.last_error is None:
                self.log.error("heartbeat failed, Redis unreachable: {}", exc)
            self.last_error = f"Redis unreachable: {exc}"
            self.ctx.metrics.redis_up.set(0)

    async def _check_primary(self) -> None:
        try:
            moved_to = await follow_failover(self.ctx.queue.redis)
        except (*REDIS_UNAVAILABLE, OSError) as exc:
            self.log.warning("cannot ask the sentinels for the primary: {}", exc)
            return
        if moved_to is not None:
            self.log.warning("Redis primary moved to {} (Sentinel failover); reconnecting", moved_to)
            # Writes of the last seconds (heartbeats, lease renewals) may have gone to the old primary:
            # the reaper must give every node time to write again before judging anyone lost.
            with contextlib.suppress(KeyError, ActorDeadError):
                self.system.get("reaper").tell(PrimaryMoved())

    async def _check_health(self) -> HealthReport:
        warnings = (self.storage_problem,) if self.storage_problem else ()
        try:
            await asyncio.wait_for(self.ctx.queue.redis.ping(), timeout=1.0)
        except (RedisError, OSError, TimeoutError) as exc:
            self.ctx.metrics.redis_up.set(0)
            return HealthReport(healthy=False, reason=f"Redis unreachable: {exc or type(exc).__name__}",
                                warnings=warnings)
        self.ctx.metrics.redis_up.set(1)
        return HealthReport(healthy=True, warnings=warnings)

    async def _check_storage(self) -> None:
        """Look at the eviction policy (at start, then every STORAGE_CHECK_S): an unsafe one is logged as an
        error when first seen and explained by /health; a refused CONFIG GET is a warning, once."""
        try:
            check = await asyncio.wait_for(check_eviction(self.ctx.queue.redis), timeout=5.0)
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError):
            return  # Redis down: the beat reports it; look again later
        if check.refused is not None:
            if not self.storage_checked:
                self.log.warning("cannot read Redis' maxmemory-policy ({}); make sure it is {}", check.refused,
                                 "noeviction")
        elif check.problem != self.storage_problem and check.problem is not None:
            allowed = " (cluster.allow_eviction: true)" if self.ctx.settings.config.cluster.allow_eviction else ""
            self.log.error("{}{}", check.problem, allowed)
        self.storage_problem = check.problem
        self.storage_checked = True
