"""Reads and actions on jobs through the node's actors, shared by the HTTP API (:mod:`secauto.api`) and
the dashboard (:mod:`secauto.ui`), so both filter, page, count and change jobs the same way.

Every function asks the dispatcher; an actor that is busy or stopping raises the actor runtime's
``AskTimeoutError`` / ``ActorDeadError`` and a Redis outage raises redis-py's connection errors: callers
turn those into their own 503 answers.
"""

from __future__ import annotations

import statistics

import msgspec

from actors.core import ActorRef
from actors.messages import CancelJob, ForgetJob, ListDeadLetters, ListJobs, RecentEnds, RequeueJob
from secauto.models import Job, JobStatus, JobView, job_decoder, job_view_decoder
from secauto.store.jobs import RequeueResult

MAX_SCAN = 5000  # index entries one listing may read while filtering
STATS_WINDOW_S = 3600
RECENT_SAMPLE = 10_000  # attempt ends kept in the recent list (keys.RECENT_MAX)


# ------------------------------------------------------------------------------------------ listing
class JobFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which jobs a listing keeps; None means "any"."""

    status: JobStatus | None = None
    tag: str | None = None
    node: str | None = None
    schedule: str | None = None  # jobs this schedule created

    def matches(self, job: Job) -> bool:
        return ((self.status is None or job.status == self.status)
                and (self.tag is None or self.tag in job.tags)
                and (self.node is None or job.assigned_to == self.node)
                and (self.schedule is None or job.schedule == self.schedule))


class JobPage(msgspec.Struct, frozen=True, kw_only=True):
    jobs: list[Job]  # newest first
    next_cursor: str | None  # where the next (older) page starts; None when nothing older remains


async def find_jobs(dispatcher: ActorRef, wanted: JobFilter, *, limit: int, cursor: str | None) -> JobPage:
    """Up to ``limit`` jobs matching ``wanted``, newest first, older than ``cursor`` (a decimal index score
    from a previous page; None: from the newest).

    Reads at most MAX_SCAN index entries, so a sparse filter may return fewer than ``limit`` jobs
    together with a cursor to go on from: a page never makes the node read the whole queue.
    """
    before = float(cursor) if cursor is not None else None
    found: list[Job] = []
    scanned, more = 0, True
    while more and len(found) < limit and scanned < MAX_SCAN:
        batch = min(MAX_SCAN - scanned, max(100, 4 * limit))
        pairs, more = await dispatcher.ask(ListJobs(before=before, scan=batch), timeout=10.0)
        scanned += batch
        for score, record in pairs:
            before = score
            job = job_decoder.decode(record)
            if wanted.matches(job):
                found.append(job)
                if len(found) == limit:
                    more = more or score != pairs[-1][0]
                    break
        if not pairs:
            more = False
    return JobPage(jobs=found, next_cursor=str(int(before)) if more and before is not None else None)


# -------------------------------------------------------------------------------------------- stats
class Percentiles(msgspec.Struct, kw_only=True):
    p50: float | None
    p95: float | None


class NodeCounts(msgspec.Struct, kw_only=True):
    completed: int
    failed: int


class Stats(msgspec.Struct, kw_only=True):
    window_seconds: int
    attempts: int  # attempts that ended in the window
    completed: int
    failed: int
    success_rate: float | None  # null without attempts
    failure_rate: float | None
    duration_ms: Percentiles
    per_node: dict[str, NodeCounts]
    sampled: bool  # true when only the newest 10,000 attempt ends were read


async def recent_ends(dispatcher: ActorRef) -> list[str]:
    """The latest attempt ends, newest first: ``"end_ms status node duration_ms"``."""
    ends: list[str] = await dispatcher.ask(RecentEnds(), timeout=10.0)
    return ends


def summarize(ends: list[str], now_ms: int, window_s: int = STATS_WINDOW_S) -> Stats:
    """Stats over the attempt ends (newest first) of the last ``window_s`` seconds."""
    since = now_ms - window_s * 1000
    durations: list[int] = []
    per_node: dict[str, NodeCounts] = {}
    completed = failed = 0
    for line in ends:
        end_ms, status, node, duration = line.split(" ")
        if int(end_ms) < since:
            break  # newest first: the rest is older
        entry = per_node.setdefault(node, NodeCounts(completed=0, failed=0))
        if status == "completed":
            completed += 1
            entry.completed += 1
        else:
            failed += 1
            entry.failed += 1
        durations.append(int(duration))
    total = completed + failed

    def percentile(fraction: float) -> float | None:
        if not durations:
            return None
        if len(durations) == 1:
            return float(durations[0])
        return round(statistics.quantiles(durations, n=100, method="inclusive")[int(fraction * 100) - 1], 1)

    return Stats(
        window_seconds=window_s,
        attempts=total,
        completed=completed,
        failed=failed,
        success_rate=round(completed / total, 4) if total else None,
        failure_rate=round(failed / total, 4) if total else None,
        duration_ms=Percentiles(p50=percentile(0.50), p95=percentile(0.95)),
        per_node=per_node,
        sampled=len(ends) >= RECENT_SAMPLE and bool(ends) and int(ends[-1].split(" ")[0]) >= since,
    )


def throughput(ends: list[str], now_ms: int, *, buckets: int = 60, bucket_s: int = 60) -> list[int]:
    """Attempt ends per bucket over the last ``buckets * bucket_s`` seconds, oldest bucket first."""
    counts = [0] * buckets
    span_ms = bucket_s * 1000
    for line in ends:
        age = now_ms - int(line.split(" ", 1)[0])
        if age < 0:
            age = 0  # another node's clock a little ahead: count it as now
        index = age // span_ms
        if index >= buckets:
            break  # newest first: the rest is older
        counts[buckets - 1 - index] += 1
    return counts


# ------------------------------------------------------------------------------------------ actions
CANCELLABLE: frozenset[str] = frozenset({"waiting", "pending", "running"})
RETRYABLE: frozenset[str] = frozenset({"failed", "cancelled"})


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """What a request to change a job's status found: the status the job had, whether the change
    applied (False: the job is in a status the change does not apply to, and nothing changed), and the
    status it has now if it applied (a retried job with dependencies may be waiting, or cancelled again
    at once when one of them failed)."""

    job_id: str
    before: JobStatus
    applied: bool
    after: JobStatus | None = None


async def cancel_job(dispatcher: ActorRef, job_id: str) -> Change | None:
    """Cancel a waiting or pending job at once, a running one within a second on the node that runs it;
    its dependents are settled (by default cancelled too). None for an unknown job."""
    before: JobStatus | None = await dispatcher.ask(CancelJob(job_id), timeout=10.0)
    if before is None:
        return None
    applied = before in CANCELLABLE
    return Change(job_id=job_id, before=before, applied=applied, after="cancelled" if applied else None)


def _requeued(job_id: str, requeued: RequeueResult) -> Change | None:
    if requeued.before is None or requeued.before == "not_dead":
        return None
    return Change(job_id=job_id, before=msgspec.convert(requeued.before, JobStatus),
                  applied=requeued.after is not None, after=requeued.after)


async def retry_job(dispatcher: ActorRef, job_id: str) -> Change | None:
    """Run a failed or cancelled job again, with a fresh retry budget (a job with dependencies enters
    them again). None for an unknown job."""
    requeued: RequeueResult = await dispatcher.ask(RequeueJob(job_id), timeout=10.0)
    return _requeued(job_id, requeued)


async def requeue_dead_letter(dispatcher: ActorRef, job_id: str) -> Change | None:
    """Put a dead-lettered job back in the queue (a job with dependencies enters them again). None when
    it is not in the DLQ."""
    requeued: RequeueResult = await dispatcher.ask(RequeueJob(job_id, only_dead=True), timeout=10.0)
    return _requeued(job_id, requeued)


async def delete_dead_letter(dispatcher: ActorRef, job_id: str) -> bool:
    """Delete a dead-lettered job's record for good; False when it is not in the DLQ."""
    deleted: bool = await dispatcher.ask(ForgetJob(job_id), timeout=10.0)
    return deleted


async def dead_letters(dispatcher: ActorRef, *, offset: int, limit: int) -> tuple[int, list[JobView]]:
    """(DLQ size, the public views of up to ``limit`` entries from ``offset``, newest first); a
    ``limit`` of 0 reads the size only."""
    size, records = await dispatcher.ask(ListDeadLetters(offset=offset, limit=limit), timeout=10.0)
    return int(size), [job_view_decoder.decode(record) for record in records]
