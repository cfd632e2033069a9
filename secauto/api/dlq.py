"""The dead-letter queue: ``GET /cluster/dlq``, ``POST /cluster/dlq/{id}/requeue``,
``DELETE /cluster/dlq/{id}``."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from actors.messages import ForgetJob, ListDeadLetters, RequeueJob
from secauto.api.app import SYSTEM, parse_query, requires
from secauto.api.cluster import job_id_from
from secauto.api.errors import ApiError, json_response
from secauto.models import utc_now


class DlqQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0


@requires("viewer")
async def list_dead_letters(request: web.Request) -> web.StreamResponse:
    query = parse_query(request, DlqQuery)
    size, records = await request.app[SYSTEM].get("dispatcher").ask(
        ListDeadLetters(offset=query.offset, limit=query.limit), timeout=10.0)
    # Records are stored JSON already: splice them rather than decode and re-encode them.
    body = (b'{"success":true,"dlq":{"size":' + str(size).encode() + b',"offset":' + str(query.offset).encode()
            + b',"jobs":[' + b",".join(records) + b']},"timestamp":"' + utc_now().encode() + b'"}')
    return web.Response(body=body, content_type="application/json")


@requires("operator")
async def requeue_dead_letter(request: web.Request) -> web.StreamResponse:
    job_id = job_id_from(request)
    before = await request.app[SYSTEM].get("dispatcher").ask(RequeueJob(job_id, only_dead=True), timeout=10.0)
    if before is None or before == "not_dead":
        raise ApiError(404, "not_found", f"job {job_id!r} is not in the dead-letter queue")
    return json_response({"success": True, "job_id": job_id, "status": "pending", "previous_status": before})


@requires("admin")
async def delete_dead_letter(request: web.Request) -> web.StreamResponse:
    job_id = job_id_from(request)
    if not await request.app[SYSTEM].get("dispatcher").ask(ForgetJob(job_id), timeout=10.0):
        raise ApiError(404, "not_found", f"job {job_id!r} is not in the dead-letter queue")
    return json_response({"success": True, "job_id": job_id, "deleted": True})


ROUTES = [
    ("GET", "/cluster/dlq", list_dead_letters),
    ("POST", "/cluster/dlq/{job_id}/requeue", requeue_dead_letter),
    ("DELETE", "/cluster/dlq/{job_id}", delete_dead_letter),
]
