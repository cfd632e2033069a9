"""Reading many jobs: ``GET /cluster/jobs`` (filtered, newest first, cursor pagination) and
``GET /cluster/stats`` (success and failure rates, run-time percentiles, jobs per node, last hour)."""

from __future__ import annotations

import time
from typing import Annotated, Literal, TypeVar

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from secauto.api.inputs import parse_query
from secauto.api.roles import requires
from secauto.api.spec import operation, respond, whole
from secauto.api.state import SYSTEM
from secauto.models import Job, JobStatus, utc_now
from secauto.operations import JobFilter, Stats, find_jobs, recent_ends, summarize

T = TypeVar("T")


class JobsQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # UNSET, not None, for "not given": parse_query would read `?tag=null` as None.
    status: JobStatus | UnsetType = UNSET
    tag: Annotated[str, msgspec.Meta(max_length=64)] | UnsetType = UNSET
    node: Annotated[str, msgspec.Meta(max_length=64)] | UnsetType = UNSET
    schedule: Annotated[str, msgspec.Meta(max_length=100)] | UnsetType = UNSET  # jobs a schedule created
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
    schedule: str | None  # the schedule that created it, if any
    scheduled_for: str | None  # its slot (RFC 3339 UTC)


class JobListResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    jobs: list[JobSummary]  # newest first
    next_cursor: str | None  # pass as ``cursor`` for the next page; null when nothing older remains
    timestamp: str = msgspec.field(default_factory=utc_now)


class StatsResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    stats: Stats
    timestamp: str = msgspec.field(default_factory=utc_now)


def _summary(job: Job) -> JobSummary:
    return JobSummary(id=job.id, status=job.status, priority=job.priority, tags=job.tags,
                      playbook_name=job.playbook_name, submitted_at=job.submitted_at, started_at=job.started_at,
                      completed_at=job.completed_at, assigned_to=job.assigned_to, attempt=job.attempt,
                      retry_count=job.retry_count, reason=job.reason, error=job.error, schedule=job.schedule,
                      scheduled_for=job.scheduled_for)


@requires("viewer")
@operation("Jobs, newest first, filtered by status, tag, node or schedule, in cursor pages", query=JobsQuery,
           ok=JobListResponse)
async def list_jobs(request: web.Request) -> web.StreamResponse:
    """Newest first. ``next_cursor`` continues the listing; it is null once nothing older remains.
    A request reads at most ``operations.MAX_SCAN`` index entries while filtering, so a sparse filter may return
    fewer than ``limit`` jobs together with a cursor to go on from."""
    query = parse_query(request, JobsQuery)
    wanted = JobFilter(status=_given(query.status), tag=_given(query.tag), node=_given(query.node),
                       schedule=_given(query.schedule))
    page = await find_jobs(request.app[SYSTEM].get("dispatcher"), wanted, limit=query.limit,
                           cursor=_given(query.cursor))
    return respond(request, JobListResponse(jobs=[_summary(job) for job in page.jobs], next_cursor=page.next_cursor))


def _given(value: T | UnsetType) -> T | None:
    return None if isinstance(value, UnsetType) else value


@requires("viewer")
@operation("Success and failure rates, run-time percentiles and jobs per node over the last hour",
           ok=StatsResponse)
async def stats(request: web.Request) -> web.StreamResponse:
    ends = await recent_ends(request.app[SYSTEM].get("dispatcher"))
    return respond(request, StatsResponse(stats=summarize(ends, int(time.time() * 1000))))


ROUTES = [
    ("GET", "/cluster/jobs", list_jobs),
    ("GET", "/cluster/stats", stats),
]
