"""``/ui/jobs`` (cursor pages filtered by status, tag, node or schedule; job id search), ``/ui/jobs/{id}``
(the detail) and the job actions ``POST /ui/jobs/{id}/cancel`` and ``/retry`` (operators)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, get_args
from urllib.parse import urlencode

import msgspec
from aiohttp import web

from actors.core import ActorRef
from actors.messages import GetJob
from secauto.api.cluster import JOB_ID_PATTERN
from secauto.api.job_dependencies import with_dependencies
from secauto.api.spec import audited, whole
from secauto.api.state import SYSTEM
from secauto.models import JobStatus, JobView, job_view_decoder
from secauto.operations import CANCELLABLE, RETRYABLE, Change, JobFilter, cancel_job, find_jobs, retry_job
from secauto.schedules.spec import SCHEDULE_NAME_PATTERN
from secauto.ui.access import access
from secauto.ui.errors import PageError, read_query
from secauto.ui.render import render
from secauto.ui.sessions import is_fragment, redirect

PAGE_SIZE = 50
STATUSES: tuple[str, ...] = get_args(JobStatus)
_JOB_ID = re.compile(JOB_ID_PATTERN)
# The notices an action may leave for the page it redirects to (fixed texts: nothing from the URL is shown).
NOTICES = {
    "cancelled": "Cancel requested: a waiting or pending job stops at once, a running one within a second; "
                 "jobs waiting for it are settled as their on_dependency_failure says.",
    "retried": "The job is queued again with a fresh retry budget (a job with dependencies waits for them again).",
    "not_cancellable": "Nothing done: only waiting, pending or running jobs can be cancelled.",
    "not_retryable": "Nothing done: only failed or cancelled jobs can be retried.",
}


class JobsQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    status: JobStatus | None = None
    tag: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    node: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    schedule: Annotated[str, msgspec.Meta(pattern=SCHEDULE_NAME_PATTERN)] | None = None
    id: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    cursor: Annotated[str, msgspec.Meta(pattern=whole(r"[0-9]{1,20}"))] | None = None


def _filters(query: JobsQuery) -> dict[str, str]:
    pairs = (("status", query.status), ("tag", query.tag), ("node", query.node), ("schedule", query.schedule))
    return {name: value for name, value in pairs if value is not None}


async def _job_record(request: web.Request, job_id: str) -> bytes | None:
    """The job's stored record, or None for an unknown (or expired) job or a text that is not a job id."""
    if not _JOB_ID.match(job_id):
        return None
    raw: bytes | None = await request.config_dict[SYSTEM].get("dispatcher").ask(GetJob(job_id), timeout=5.0)
    return raw


async def find_job(request: web.Request, job_id: str) -> JobView | None:
    """The job's view, or None for an unknown (or expired) job or a text that is not a job id."""
    raw = await _job_record(request, job_id)
    return None if raw is None else job_view_decoder.decode(raw)


@access("viewer")
async def jobs_page(request: web.Request) -> web.StreamResponse:
    """One page of jobs, newest first; ``id`` opens that job's page when it exists."""
    query = read_query(request, JobsQuery)
    notice = None
    if query.id is not None:
        wanted = query.id.strip()
        if await find_job(request, wanted) is not None:
            return redirect(f"/ui/jobs/{wanted}")
        notice = "No job with that id (unknown, or expired after the retention period)."
    filters = _filters(query)
    page = await find_jobs(request.config_dict[SYSTEM].get("dispatcher"),
                           JobFilter(status=query.status, tag=query.tag, node=query.node, schedule=query.schedule),
                           limit=PAGE_SIZE, cursor=query.cursor)
    context = {
        "nav": "jobs",
        "live": True,
        "notice": notice,
        "query": query,
        "statuses": STATUSES,
        "jobs": page.jobs,
        "live_url": "/ui/jobs?" + urlencode({**filters, **({"cursor": query.cursor} if query.cursor else {})}),
        "older_url": "/ui/jobs?" + urlencode({**filters, "cursor": page.next_cursor}) if page.next_cursor else None,
        "newest_url": "/ui/jobs?" + urlencode(filters) if query.cursor else None,
    }
    return render(request, "jobs_live.html" if is_fragment(request) else "jobs.html", context)


@access("viewer")
async def job_page(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["job_id"]
    raw = await _job_record(request, job_id)
    if raw is None:
        raise PageError(404, "No such job (unknown, or expired after the retention period).")
    job = await with_dependencies(request, raw)
    context = {
        "nav": "jobs",
        "live": True,
        "job": job,
        "notice": NOTICES.get(request.query.get("notice", "")),
        "cancellable": job.status in CANCELLABLE,
        "retryable": job.status in RETRYABLE,
    }
    return render(request, "job_live.html" if is_fragment(request) else "job.html", context)


async def _change(request: web.Request, change: Callable[[ActorRef, str], Awaitable[Change | None]],
                  done: str, refused: str) -> web.StreamResponse:
    """Apply ``change`` to the job of the path; back to its page with a notice saying what happened."""
    job_id = request.match_info["job_id"]
    result = await change(request.config_dict[SYSTEM].get("dispatcher"), job_id) if _JOB_ID.match(job_id) else None
    if result is None:
        raise PageError(404, "No such job (unknown, or expired after the retention period).")
    return redirect(f"/ui/jobs/{job_id}?notice={done if result.applied else refused}")


@access("operator")
@audited("job.cancel")
async def cancel(request: web.Request) -> web.StreamResponse:
    return await _change(request, cancel_job, "cancelled", "not_cancellable")


@access("operator")
@audited("job.retry")
async def retry(request: web.Request) -> web.StreamResponse:
    return await _change(request, retry_job, "retried", "not_retryable")


ROUTES = [
    ("GET", "/jobs", jobs_page),
    ("GET", "/jobs/{job_id}", job_page),
    ("POST", "/jobs/{job_id}/cancel", cancel),
    ("POST", "/jobs/{job_id}/retry", retry),
]
