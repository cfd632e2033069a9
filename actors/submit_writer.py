"""SubmitWriter: stores the jobs the API submits, with as few script calls as the load allows.

Submissions queue up here and one writer task (the dispatcher's tracked task) sends them: everything
that arrived while the previous call was in flight goes out in the next ``submit`` script call (up to
``MAX_JOBS_PER_CALL`` jobs a call, whole submissions only). One submission alone costs one call, as
before; 16 concurrent ones cost a few. The script stores each job on its own (a batch of the API stays
all or nothing: it is never split) and publishes one wake-up per call. A submission with dependencies
always has a call of its own: the script refuses a whole call when one of them is unknown, and that
refusal must reach only the submission that named it.

The API hands submissions straight to :meth:`SubmitWriter.add` (no message through the dispatcher's
mailbox: that hop cost two loop wake-ups per request). Each submission gets a future, resolved once
its jobs are stored (and, with ``durable_submit``, acknowledged by the replicas). A call that fails
(Redis unreachable, durability not reached, a script error) fails the futures of every submission in
it with that exception.

A submission by a key with a ``max_pending`` quota goes in a call of its own, so that the script can
refuse it whole (``QuotaExceeded``, its future only) without touching the others; submissions without
a quota are coalesced as above and pay nothing for the feature. When the writer stops
(dispatcher stopping or restarting), every submission not yet answered fails with ``ActorDeadError``:
none is left waiting, and until it runs again :meth:`SubmitWriter.add` refuses new ones with
``ActorDeadError`` (the API answers 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence

from actors.core import ActorDeadError
from secauto.logs import LineLogger
from secauto.metrics import NodeMetrics
from secauto.models import EVENT_VERSION, Event, Job, utc_now
from secauto.store.jobs import JobQueue, Quota

MAX_JOBS_PER_CALL = 1000  # one API batch at most: bounds how long one script call holds Redis


class _Submission:
    __slots__ = ("delays_ms", "done", "has_dependencies", "jobs", "quota")

    def __init__(self, jobs: list[Job], delays_ms: list[int], done: asyncio.Future[None], quota: Quota | None) -> None:
        self.jobs = jobs
        self.delays_ms = delays_ms
        self.done = done
        self.quota = quota
        self.has_dependencies = any(job.parent_list for job in jobs)


class SubmitWriter:
    def __init__(self, queue: JobQueue, node_id: str, metrics: NodeMetrics, *, durable_replicas: int = 0,
                 durable_timeout_ms: int = 0) -> None:
        self.queue = queue
        self.node_id = node_id
        self.metrics = metrics
        self.durable_replicas = durable_replicas
        self.durable_timeout_ms = durable_timeout_ms
        self._pending: collections.deque[_Submission] = collections.deque()
        self._arrived = asyncio.Event()
        self._stopped = False  # run() ended (dispatcher stopping or restarting): add() refuses
        self.lines = LineLogger(component="dispatcher", node_id=node_id)  # the per-job line

    def add(self, jobs: list[Job], delays_ms: Sequence[int] | None = None,
            quota: Quota | None = None) -> asyncio.Future[None]:
        """Queue ``jobs`` (each after its delay in ms) for storing, counted against ``quota`` if given;
        the future says when they are stored (or fails with the store's error). Raises ActorDeadError
        while the writer is stopped (its dispatcher stopping or restarting)."""
        if self._stopped:
            raise ActorDeadError("the dispatcher is not running: the job cannot be stored now")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Submission(jobs, list(delays_ms) if delays_ms else [0] * len(jobs), done, quota))
        self._arrived.set()
        return done

    async def run(self) -> None:
        """Send the pending submissions, a call at a time, until cancelled; then fail what is left."""
        batch: list[_Submission] = []
        self._stopped = False
        try:
            while True:
                await self._arrived.wait()
                self._arrived.clear()
                while self._pending:
                    batch = [self._pending.popleft()]
                    size = len(batch[0].jobs)
                    # A call is refused whole (a quota, an unknown dependency): a submission with a quota
                    # or with dependencies goes alone, so that it is refused alone.
                    while (batch[0].quota is None and not batch[0].has_dependencies and self._pending
                           and self._pending[0].quota is None and not self._pending[0].has_dependencies
                           and size + len(self._pending[0].jobs) <= MAX_JOBS_PER_CALL):
                        batch.append(self._pending.popleft())
                        size += len(batch[-1].jobs)
                    await self._store(batch)
                    batch = []
        finally:
            self._stopped = True
            for submission in [*batch, *self._pending]:
                if not submission.done.done():
                    submission.done.set_exception(ActorDeadError("the dispatcher stopped before storing the job"))
            self._pending.clear()

    async def _store(self, batch: list[_Submission]) -> None:
        jobs = [job for submission in batch for job in submission.jobs]
        delays = [delay for submission in batch for delay in submission.delays_ms]
        now = utc_now()  # one timestamp for the events of one call (they are published together)
        events = [Event(type="job.submitted", version=EVENT_VERSION, timestamp=now, job_id=job.id, node_id=self.node_id,
                        status="pending", priority=job.priority) for job in jobs]
        try:
            stored = await self.queue.submit(jobs, events, delays_ms=delays, durable_replicas=self.durable_replicas,
                                             durable_timeout_ms=self.durable_timeout_ms, quota=batch[0].quota)
        except Exception as exc:  # each waiting request answers it (503 for Redis errors)
            for submission in batch:
                if not submission.done.done():
                    submission.done.set_exception(exc)
            return
        self.metrics.jobs_submitted.inc(stored)
        for job in jobs:
            self.lines.info("Job submitted to distributed queue", job_id=job.id)
        for submission in batch:
            if not submission.done.done():  # its request may have timed out meanwhile
                submission.done.set_result(None)
