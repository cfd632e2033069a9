"""AuditActor: writes the node's audit entries to the cluster's audit stream, in batches.

The API hands it each audited request's entry with :meth:`AuditActor.record`, a plain call from the
request's task (no mailbox hop, no Redis round-trip on the request path). Each entry is logged at once
as a ``component=audit`` line, buffered, and written with the others of its batch in one script call
:data:`FLUSH_DELAY_S` after the first of them (or as soon as :data:`FLUSH_AT` are waiting). So on a hard
crash (SIGKILL, power loss) the entries of the last ~100 ms are missing from the stream, though not from
the log; a graceful stop writes them.

While Redis is unreachable (or read-only: a demoted primary during a failover) the entries wait, up to
:data:`MAX_BUFFERED` (the oldest are dropped beyond that, with an error log and
``secauto_audit_entries_total{result="dropped"}``), and the flush is retried every :data:`RETRY_S`
seconds. No Redis error crashes the actor (a crash loop would take the node down).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from loguru import logger

from actors.core import Actor, ActorDeadError
from secauto.logs import LineLogger
from secauto.metrics import NodeMetrics
from secauto.store.audit import AuditEntry, AuditStore
from secauto.store.connection import REDIS_UNAVAILABLE

FLUSH_DELAY_S = 0.1
FLUSH_AT = 200
MAX_BUFFERED = 10_000
RETRY_S = 1.0


class FlushAudit(msgspec.Struct, frozen=True):
    """Timer, or ask (answers once the buffer was written, or the write failed and was planned again),
    so that ``GET /audit`` lists this node's latest entries."""


class AuditActor(Actor):
    mailbox_size = MAX_BUFFERED

    def __init__(self, node_id: str, store: AuditStore, metrics: NodeMetrics, *, flush_delay: float = FLUSH_DELAY_S,
                 retry_delay: float = RETRY_S, max_buffered: int = MAX_BUFFERED) -> None:
        self.store = store
        self.metrics = metrics
        self.flush_delay = flush_delay
        self.retry_delay = retry_delay
        self.max_buffered = max_buffered
        self.buffer: list[AuditEntry] = []
        self.flush_planned = False
        self.backing_off = False  # the last write failed: wait for the retry timer, do not flush early
        self.flush_told = False  # record() asked for an early flush (FLUSH_AT reached); not handled yet
        self.log = logger.bind(component="audit", node_id=node_id)
        self.lines = LineLogger(component="audit", node_id=node_id)  # the line of each entry

    async def on_start(self) -> None:
        self.flush_planned = False
        self.flush_told = False
        if self.buffer:
            self._plan_flush(self.flush_delay)

    async def on_stop(self) -> None:
        if self.buffer:
            try:
                await self._write()
            except REDIS_UNAVAILABLE as exc:
                self.log.error("{} audit entries could not be stored at shutdown ({}); they are in the log",
                               len(self.buffer), exc)

    async def receive(self, message: Any) -> Any:
        match message:
            case FlushAudit():
                self.flush_told = False
                if self.buffer:
                    await self._flush()
            case _:
                raise TypeError(f"audit got an unexpected message {message!r}")
        return None

    def record(self, entry: AuditEntry) -> None:
        """Log ``entry`` at once and buffer it for the next write, in the caller's task (the API's audit
        middleware). Raises ActorDeadError once the actor is stopping or stopped (nothing would write
        the buffer any more): the caller keeps the entry as a log line of its own."""
        if not self.ref.is_alive:
            raise ActorDeadError("the audit actor is stopped")
        if self._take(entry) and not self.flush_told:
            self.flush_told = True
            self.ref.tell(FlushAudit())  # the write itself runs in the actor's task

    def _take(self, entry: AuditEntry) -> bool:
        """Log and buffer ``entry`` (dropping the oldest beyond ``max_buffered``) and plan the flush;
        True when the buffer should be written now (FLUSH_AT reached and Redis not failing)."""
        self._log(entry)
        self.buffer.append(entry)
        if len(self.buffer) > self.max_buffered:
            dropped = len(self.buffer) - self.max_buffered
            del self.buffer[:dropped]
            self.metrics.audit_entries.labels(result="dropped").inc(dropped)
            self.log.error("audit buffer full (Redis unreachable?): dropped the {} oldest entries "
                           "(they are in the log)", dropped)
        if len(self.buffer) >= FLUSH_AT and not self.backing_off:
            return True
        if not self.flush_planned:
            self._plan_flush(self.flush_delay)
        return False

    def _plan_flush(self, delay: float) -> None:
        self.flush_planned = True
        self.start_timer("flush", delay, FlushAudit(), repeat=False)

    async def _flush(self) -> None:
        self.flush_planned = False
        self.cancel_timer("flush")
        try:
            await self._write()
            self.backing_off = False
        except REDIS_UNAVAILABLE as exc:
            self.backing_off = True
            self.log.warning("cannot store {} audit entries ({}); retrying in {:g}s", len(self.buffer), exc,
                             self.retry_delay)
            self._plan_flush(self.retry_delay)

    async def _write(self) -> None:
        batch = self.buffer
        self.buffer = []
        try:
            await self.store.append(batch, int(time.time() * 1000))
        except BaseException:
            self.buffer = batch + self.buffer
            raise
        self.metrics.audit_entries.labels(result="written").inc(len(batch))

    def _log(self, entry: AuditEntry) -> None:
        self.lines.info("audit: {} {} by {} -> {}", entry.action, entry.target or "-", entry.actor or "(no key)",
                      entry.status, actor=entry.actor, role=entry.role, action=entry.action, target=entry.target,
                      source_ip=entry.source_ip, outcome=entry.outcome, status=entry.status)
