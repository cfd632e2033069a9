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

Submissions by a key with a ``max_pending`` quota share calls only with submissions of the same key and
quota: the script refuses such a call whole (``QuotaExceeded``) when its jobs do not all fit, and says
how many of the key's jobs are live; the writer then fails, in order, the submissions that do not fit
and sends the others in one more call (if the count moved meanwhile and that call is refused too, one
call each), so that exactly those that do not fit are refused, each whole. Far from the quota this costs
nothing (a key with a quota submitting 16 at a time was half as fast when each submission had a call of
its own); at the quota it costs one refused call and one more per batch. Submissions without a quota
never share a call with quota'd ones. When the writer stops (dispatcher stopping or restarting), every
submission not yet answered fails with ``ActorDeadError``: none is left waiting, and until it runs again
:meth:`SubmitWriter.add` refuses new ones with ``ActorDeadError`` (the API answers 503 with
Retry-After).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence

from actors.core import ActorDeadError
from secauto.logs import LineLogger
from secauto.metrics import NodeMetrics
from secauto.models import Job, make_event, utc_now
from secauto.store.jobs import JobQueue, Quota, QuotaExceeded

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
                    while (self._pending and _may_share_a_call(batch[0], self._pending[0])
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

    async def _store(self, batch: list[_Submission], *, retry: bool = False) -> None:
        """One script call for ``batch``; resolves or fails each submission's future. A quota'd batch
        refused whole is sent again with only the submissions that fit (see the module docstring);
        if that ``retry`` is refused too, one submission per call."""
        jobs = [job for submission in batch for job in submission.jobs]
        delays = [delay for submission in batch for delay in submission.delays_ms]
        now = utc_now()  # one timestamp for the events of one call (they are published together)
        events = [make_event("job.submitted", timestamp=now, job_id=job.id, node_id=self.node_id, status="pending",
                             priority=job.priority) for job in jobs]
        try:
            stored = await self.queue.submit(jobs, events, delays_ms=delays, durable_replicas=self.durable_replicas,
                                             durable_timeout_ms=self.durable_timeout_ms, quota=batch[0].quota)
        except QuotaExceeded as exc:
            if len(batch) == 1:
                _fail(batch, exc)
            elif not retry:
                fitting = _fitting(batch, exc)
                if fitting:
                    await self._store(fitting, retry=True)
            else:  # the key's count moved since the refusal (another node): each alone, in order
                for submission in batch:
                    await self._store([submission], retry=True)
            return
        except Exception as exc:  # each waiting request answers it (503 for Redis errors)
            _fail(batch, exc)
            return
        self.metrics.jobs_submitted.inc(stored)
        for job in jobs:
            self.lines.info("Job submitted to distributed queue", job_id=job.id)
        for submission in batch:
            if not submission.done.done():  # its request may have timed out meanwhile
                submission.done.set_result(None)


def _may_share_a_call(head: _Submission, following: _Submission) -> bool:
    """Whether ``following`` may go in ``head``'s script call. Not when either has dependencies: the
    script refuses a whole call for one unknown dependency, and that refusal must reach only the
    submission that named it. Not across quotas: a call counts against one quota."""
    return not head.has_dependencies and not following.has_dependencies and head.quota == following.quota


def _fitting(batch: list[_Submission], refusal: QuotaExceeded) -> list[_Submission]:
    """The submissions of a refused quota'd call that fit, in order, in the room the refusal reported
    (what one call each would store); the others fail now with QuotaExceeded."""
    room = refusal.max_pending - refusal.live
    fitting: list[_Submission] = []
    for submission in batch:
        if len(submission.jobs) <= room:
            fitting.append(submission)
            room -= len(submission.jobs)
        else:
            _fail([submission], QuotaExceeded(refusal.max_pending - room, refusal.max_pending))
    return fitting


def _fail(batch: list[_Submission], exc: BaseException) -> None:
    for submission in batch:
        if not submission.done.done():
            submission.done.set_exception(exc)
