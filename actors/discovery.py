"""DiscoveryActor: the node's live view of the cluster.

The view is rebuilt from the registry every heartbeat interval and on every ``node.joined`` /
``node.left`` / ``leader.changed`` event (the dispatcher's subscription forwards them). A node whose
record is gone or whose ``last_seen`` is older than 3 heartbeats is shown ``inactive`` for another 3
heartbeats, then dropped; a node that left gracefully (``node.left``) is dropped at once.

The answering node's own entry is current, not a heartbeat old: its counters and load come from the
executor when the view is asked for (other nodes' entries are as their last heartbeat wrote them). If
the executor does not answer (stopped, or too busy), the entry stays as the registry has it.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from loguru import logger

from actors.context import NodeContext
from actors.core import Actor, ActorDeadError, AskTimeoutError
from actors.messages import ClusterView, ExecutorStats, GetClusterView, GetStats, MembershipEvent, Refresh
from secauto.models import NodeInfo, event_decoder, format_timestamp
from secauto.store.connection import REDIS_UNAVAILABLE

MISSED_BEATS_INACTIVE = 3


class DiscoveryActor(Actor):
    def __init__(self, ctx: NodeContext, executor_name: str = "executor") -> None:
        self.ctx = ctx
        self.executor_name = executor_name
        self.known: dict[str, NodeInfo] = {}
        self.leader: str | None = None
        self.log = logger.bind(component="discovery", node_id=ctx.node_id)

    async def on_start(self) -> None:
        self.start_timer("refresh", self.ctx.heartbeat_interval, Refresh(), initial_delay=0.0)

    async def receive(self, message: Any) -> Any:
        match message:
            case Refresh():
                await self._refresh()
            case MembershipEvent(payload=payload):
                event = event_decoder.decode(payload) if payload else None
                if event is not None and event.type == "node.left" and event.node_id:
                    if self.known.pop(event.node_id, None) is not None:
                        self.log.info("node {} left the cluster", event.node_id)
                else:
                    await self._refresh()
            case GetClusterView():
                await self._refresh()
                queue_size, queue_ready = await self.ctx.queue.queue_sizes()
                nodes = sorted(self.known.values(), key=lambda node: node.id)
                nodes = [await self._current(node) if node.id == self.ctx.node_id else node for node in nodes]
                return ClusterView(nodes=nodes, leader=self.leader, queue_size=queue_size, queue_ready=queue_ready)
            case _:
                raise TypeError(f"discovery got an unexpected message {message!r}")
        return None

    async def _current(self, record: NodeInfo) -> NodeInfo:
        """This node's record with its executor's live counters, seen now (its status stays as
        published: ``draining`` is written at once, and ``inactive`` is how the others see it)."""
        try:
            stats: ExecutorStats = await self.system.get(self.executor_name).ask(GetStats(), timeout=1.0)
        except (KeyError, ActorDeadError, AskTimeoutError) as exc:
            self.log.debug("own entry left as last published, the executor did not answer: {!r}", exc)
            return record
        current = msgspec.structs.replace(record, load=stats.load, jobs_running=stats.running,
                                          jobs_completed=stats.completed, jobs_failed=stats.failed,
                                          capacity=stats.capacity)
        if record.status == "inactive":  # the others have not heard from it: keep when they last did
            return current
        now = time.time()
        return msgspec.structs.replace(current, last_seen=format_timestamp(now), last_seen_epoch=now)

    async def _refresh(self) -> None:
        try:
            records = await self.ctx.registry.live_nodes()
            self.leader = await self.ctx.registry.leader()
        except REDIS_UNAVAILABLE as exc:
            self.log.warning("cannot read the registry: {}", exc)
            records = []
        now = time.time()
        interval = self.ctx.heartbeat_interval
        live = {record.id: record for record in records}
        for node_id, record in list(self.known.items()):
            if node_id in live:
                continue
            silent_for = now - record.last_seen_epoch
            if silent_for > 2 * MISSED_BEATS_INACTIVE * interval:
                del self.known[node_id]
                self.log.info("node {} dropped after {:.0f}s without heartbeat", node_id, silent_for)
            elif record.status != "inactive":
                self.known[node_id] = msgspec.structs.replace(record, status="inactive")
                self.log.warning("node {} is inactive (missed {} heartbeats)", node_id, MISSED_BEATS_INACTIVE)
        for node_id, record in live.items():
            stale = now - record.last_seen_epoch > MISSED_BEATS_INACTIVE * interval
            self.known[node_id] = msgspec.structs.replace(record, status="inactive") if stale else record
