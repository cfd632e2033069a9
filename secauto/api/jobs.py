"""Reading many jobs: ``GET /cluster/jobs`` (filtered, newest first, cursor pagination) and
``GET /cluster/stats`` (success and failure rates, run-time percentiles, jobs per node, last hour)."""

from __future__ import annotations

import statistics
import time
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from actors.messages import ListJobs, RecentEnds
from secauto.api.inputs import parse_query
from secauto.api.roles import requires
from secauto.api.spec import operation, respond, whole
from secauto.api.state import SYSTEM
from secauto.models import Job, JobStatus, job_decoder, utc_now

MAX_SCAN = 5000  # index entries one request may read while filtering
STATS_WINDOW_S = 3600


class JobsQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # UNSET, not None, for "not given": parse_query would read `?tag=null` as None.
    status: JobStatus | UnsetType = UNSET
    tag: Annotated[str, msgspec.Meta(max_length=64)] | UnsetType = UNSET
    node: Annotated[str, msgspec.Meta(max_length=64)] | UnsetType = UNSET
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    cursor: Annotated[str, msgspec.Meta(pattern=whole(r"[0-9]{1,20}"))] | UnsetType = UNSET


class JobSummary(msgspec.Struct, kw_only=True):
    """A job without its playbook, context and results (GET /cluster/jobs/{id} has everything)."""

    id: str
    status: JobStatus
    priority: int
    tags: list[str]
    playbook_name: str | None
    submitted_at: str
    started_at: str | None
    completed_at: str | None
    assigned_to: str | None
    attempt: int
    retry_count: int
    reason: str | None
    error: str | None


class JobListResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    jobs: list[JobSummary]  # newest first
    next_cursor: str | None  # pass as ``cursor`` for the next page; null when nothing older remains
    timestamp: str = msgspec.field(default_factory=utc_now)


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


class StatsResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    stats: Stats
    timestamp: str = msgspec.field(default_factory=utc_now)


def _matches(job: Job, query: JobsQuery) -> bool:
    return ((query.status is UNSET or job.status == query.status)
            and (query.tag is UNSET or query.tag in job.tags)
            and (query.node is UNSET or job.assigned_to == query.node))


def _summary(job: Job) -> JobSummary:
    return JobSummary(id=job.id, status=job.status, priority=job.priority, tags=job.tags,
                      playbook_name=job.playbook_name, submitted_at=job.submitted_at, started_at=job.started_at,
                      completed_at=job.completed_at, assigned_to=job.assigned_to, attempt=job.attempt,
                      retry_count=job.retry_count, reason=job.reason, error=job.error)


@requires("viewer")
@operation("Jobs, newest first, filtered by status, tag or node, in cursor pages", query=JobsQuery,
           ok=JobListResponse)
async def list_jobs(request: web.Request) -> web.StreamResponse:
    """Newest first. ``next_cursor`` continues the listing; it is null once nothing older remains.
    A request reads at most MAX_SCAN index entries while filtering, so a sparse filter may return
    fewer than ``limit`` jobs together with a cursor to go on from."""
    query = parse_query(request, JobsQuery)
    dispatcher = request.app[SYSTEM].get("dispatcher")
    before = float(query.cursor) if query.cursor is not UNSET else None
    found: list[JobSummary] = []
    scanned, more = 0, True
    while more and len(found) < query.limit and scanned < MAX_SCAN:
        batch = min(MAX_SCAN - scanned, max(100, 4 * query.limit))
        pairs, more = await dispatcher.ask(ListJobs(before=before, scan=batch), timeout=10.0)
        scanned += batch
        for score, record in pairs:
            before = score
            job = job_decoder.decode(record)
            if _matches(job, query):
                found.append(_summary(job))
                if len(found) == query.limit:
                    more = more or score != pairs[-1][0]
                    break
        if not pairs:
            more = False
    cursor = str(int(before)) if more and before is not None else None
    return respond(request, JobListResponse(jobs=found, next_cursor=cursor))


def summarize(ends: list[str], now_ms: int, window_s: int = STATS_WINDOW_S) -> dict[str, Any]:
    """Stats over the attempt ends of the last ``window_s`` seconds."""
    since = now_ms - window_s * 1000
    durations: list[int] = []
    per_node: dict[str, dict[str, int]] = {}
    completed = failed = 0
    for line in ends:
        end_ms, status, node, duration = line.split(" ")
        if int(end_ms) < since:
            break  # newest first: the rest is older
        entry = per_node.setdefault(node, {"completed": 0, "failed": 0})
        entry[status] += 1
        if status == "completed":
            completed += 1
        else:
            failed += 1
        durations.append(int(duration))
    total = completed + failed

    def percentile(fraction: float) -> float | None:
        if not durations:
            return None
        if len(durations) == 1:
            return float(durations[0])
        return round(statistics.quantiles(durations, n=100, method="inclusive")[int(fraction * 100) - 1], 1)

    return {
        "window_seconds": window_s,
        "attempts": total,
        "completed": completed,
        "failed": failed,
        "success_rate": round(completed / total, 4) if total else None,
        "failure_rate": round(failed / total, 4) if total else None,
        "duration_ms": {"p50": percentile(0.50), "p95": percentile(0.95)},
        "per_node": per_node,
        "sampled": len(ends) >= 10_000 and bool(ends) and int(ends[-1].split(" ")[0]) >= since,
    }


@requires("viewer")
@operation("Success and failure rates, run-time percentiles and jobs per node over the last hour",
           ok=StatsResponse)
async def stats(request: web.Request) -> web.StreamResponse:
    ends: list[str] = await request.app[SYSTEM].get("dispatcher").ask(RecentEnds(), timeout=10.0)
    return respond(request, StatsResponse(stats=msgspec.convert(summarize(ends, int(time.time() * 1000)), Stats)))


ROUTES = [
    ("GET", "/cluster/jobs", list_jobs),
    ("GET", "/cluster/stats", stats),
]
