"""The dead-letter queue: ``GET /cluster/dlq``, ``POST /cluster/dlq/{id}/requeue``,
``DELETE /cluster/dlq/{id}``."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from secauto.api.cluster import JobId, JobStatusResponse, job_id_from
from secauto.api.errors import ApiError
from secauto.api.inputs import parse_query
from secauto.api.roles import requires
from secauto.api.spec import operation, respond
from secauto.api.state import SYSTEM
from secauto.models import JobView, utc_now
from secauto.operations import dead_letters
from secauto.operations import delete_dead_letter as delete_dead_letter_of
from secauto.operations import requeue_dead_letter as requeue_dead_letter_of


class DlqQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50
    offset: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)] = 0  # Redis wants offset + limit in 64 bits


class DlqPage(msgspec.Struct, kw_only=True):
    size: int  # dead-lettered jobs in all
    offset: int
    jobs: list[JobView]  # newest first


class DlqResponse(msgspec.Struct, kw_only=True):
    """``GET /cluster/dlq``: dead-lettered jobs in their public view."""

    success: Literal[True] = True
    dlq: DlqPage
    timestamp: str = msgspec.field(default_factory=utc_now)


class DeletedResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    job_id: str
    deleted: Literal[True] = True
    timestamp: str = msgspec.field(default_factory=utc_now)


@requires("viewer")
@operation("Dead-lettered jobs, newest first", query=DlqQuery, ok=DlqResponse)
async def list_dead_letters(request: web.Request) -> web.StreamResponse:
    query = parse_query(request, DlqQuery)
    size, jobs = await dead_letters(request.app[SYSTEM].get("dispatcher"), offset=query.offset, limit=query.limit)
    return respond(request, DlqResponse(dlq=DlqPage(size=size, offset=query.offset, jobs=jobs)))


@requires("operator")
@operation("Requeue a dead-lettered job", ok=JobStatusResponse, path={"job_id": JobId}, errors=(404,),
           audit="dlq.requeue")
async def requeue_dead_letter(request: web.Request) -> web.StreamResponse:
    """Put a dead-lettered job back in the queue with a fresh retry budget (a job with dependencies
    enters them again: ``status`` is pending, waiting, or cancelled if a dependency failed)."""
    job_id = job_id_from(request)
    change = await requeue_dead_letter_of(request.app[SYSTEM].get("dispatcher"), job_id)
    if change is None or change.after is None:
        raise ApiError(404, "not_found", f"job {job_id!r} is not in the dead-letter queue")
    return respond(request, JobStatusResponse(job_id=change.job_id, status=change.after, previous_status=change.before))


@requires("admin")
@operation("Delete a dead-lettered job", ok=DeletedResponse, path={"job_id": JobId}, errors=(404,),
           audit="dlq.delete")
async def delete_dead_letter(request: web.Request) -> web.StreamResponse:
    """Delete a dead-lettered job's record for good."""
    job_id = job_id_from(request)
    if not await delete_dead_letter_of(request.app[SYSTEM].get("dispatcher"), job_id):
        raise ApiError(404, "not_found", f"job {job_id!r} is not in the dead-letter queue")
    return respond(request, DeletedResponse(job_id=job_id))


ROUTES = [
    ("GET", "/cluster/dlq", list_dead_letters),
    ("POST", "/cluster/dlq/{job_id}/requeue", requeue_dead_letter),
    ("DELETE", "/cluster/dlq/{job_id}", delete_dead_letter),
]
