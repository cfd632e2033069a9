"""Schedules: ``GET/POST /schedules``, ``GET/PUT/DELETE /schedules/{name}``,
``POST /schedules/{name}/pause``, ``/resume`` and ``/trigger``.

Definitions are checked here (types by msgspec, then cron, time zone, every and the playbook, which is
resolved and validated now; an unknown ``{{secrets.NAME}}`` in it is a 400, as for a job submission)
and stored by the SchedulerActor; the leader fires them. Schedules from
config.yaml answer 409 ``managed_by_config`` to a change or delete; pause, resume and trigger work on
every schedule.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from actors.messages import DeleteSchedule, SaveSchedule
from secauto.api.errors import ApiError, ErrorDetail
from secauto.api.inputs import read_json, read_optional_json
from secauto.api.roles import requires
from secauto.api.secret_refs import require_secrets
from secauto.api.spec import operation, respond
from secauto.api.state import AUDIT_TARGET, ENGINE, IDENTITY, SYSTEM
from secauto.engine import PlaybookInvalid
from secauto.models import utc_now
from secauto.schedule_operations import get_schedule as read_schedule
from secauto.schedule_operations import is_schedule_name, refusal
from secauto.schedule_operations import list_schedules as read_schedules
from secauto.schedule_operations import pause_schedule as set_paused
from secauto.schedule_operations import trigger_schedule as trigger_now
from secauto.schedules.definition import ScheduleRecord, resolve_steps, secret_refs
from secauto.schedules.spec import (
    ScheduleName,
    ScheduleReplacement,
    ScheduleSpec,
    definition_problems,
    with_name,
)
from secauto.schedules.view import ScheduleDetail, ScheduleView


class ScheduleListResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    schedules: list[ScheduleView]  # by name
    timestamp: str = msgspec.field(default_factory=utc_now)


class ScheduleResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    schedule: ScheduleDetail
    created: bool  # POST/PUT: whether the schedule is new; false elsewhere
    timestamp: str = msgspec.field(default_factory=utc_now)


class TriggerResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    schedule: str
    job_id: str
    timestamp: str = msgspec.field(default_factory=utc_now)


class ScheduleDeletedResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    schedule: str
    deleted: Literal[True] = True
    timestamp: str = msgspec.field(default_factory=utc_now)


class PauseBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Optional body of pause and resume."""

    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


def name_from(request: web.Request) -> str:
    """The ``{name}`` path part; 404 for anything that cannot be a schedule's name."""
    name = request.match_info["name"]
    if not is_schedule_name(name):
        raise ApiError(404, "not_found", f"no schedule {name[:100]!r}")
    return name


def build_record(spec: ScheduleSpec, request: web.Request) -> ScheduleRecord:
    """Check a definition beyond its types and resolve its playbook; 400 naming each field."""
    problems = definition_problems(spec)
    if problems:
        field, message = problems[0]
        raise ApiError(400, "validation_error", f"{field}: {message}",
                       [ErrorDetail(field=field, message=text, path=f"$.{field}") for field, text in problems])
    try:
        steps = resolve_steps(spec, request.app[ENGINE])
    except PlaybookInvalid as exc:
        field = "playbook_name" if spec.playbook_name is not None else "playbook"
        details = [ErrorDetail(field=field, message=problem.message, path=f"$.{field}{problem.path[1:]}")
                   for problem in exc.problems]
        raise ApiError(400, "validation_error", f"invalid {field}: {exc}", details) from None
    return ScheduleRecord(spec=spec, steps=steps)


async def checked_record(spec: ScheduleSpec, request: web.Request) -> ScheduleRecord:
    """``build_record``, then 400 for every ``{{secrets.NAME}}`` that is not stored, as a job submission
    (the first one in the message, with its path in the playbook)."""
    record = build_record(spec, request)
    await require_secrets(request, [secret_refs(record, request.app[ENGINE])])
    return record


async def _detail(request: web.Request, name: str) -> ScheduleDetail:
    detail = await read_schedule(request.app[SYSTEM].get("scheduler"), name)
    if detail is None:
        raise _refused("not_found", name)
    return detail


def _refused(result: str, name: str) -> ApiError:
    why = refusal(result, name)
    return ApiError(why.status, why.code, why.message)


async def _save(request: web.Request, record: ScheduleRecord, mode: str) -> web.StreamResponse:
    name = record.spec.name
    result = await request.app[SYSTEM].get("scheduler").ask(SaveSchedule(record, mode), timeout=10.0)
    if result not in ("created", "updated", "unchanged"):
        raise _refused(result, name)
    return respond(request, ScheduleResponse(schedule=await _detail(request, name), created=result == "created"))


@requires("viewer")
@operation("Schedules, by name", ok=ScheduleListResponse)
async def list_schedules(request: web.Request) -> web.StreamResponse:
    _, schedules = await read_schedules(request.app[SYSTEM].get("scheduler"))
    return respond(request, ScheduleListResponse(schedules=schedules))


@requires("operator")
@operation("Create a schedule", body=ScheduleSpec, ok=ScheduleResponse, errors=(409,), audit="schedule.create",
           description="409 if the name exists (PUT replaces). The playbook is resolved and validated now.")
async def create_schedule(request: web.Request) -> web.StreamResponse:
    spec = await read_json(request, ScheduleSpec)
    request[AUDIT_TARGET] = spec.name
    return await _save(request, await checked_record(spec, request), "create")


@requires("operator")
@operation("Create or replace a schedule", body=ScheduleReplacement, ok=ScheduleResponse,
           path={"name": ScheduleName}, errors=(409,), audit="schedule.put",
           description="The same definition again changes nothing; a changed one keeps the history, the pause "
                       "and, unless cron/every, timezone, jitter or enabled changed, the pending slot. 409 "
                       "managed_by_config for a schedule from config.yaml.")
async def put_schedule(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    body = await read_json(request, ScheduleReplacement)
    if not is_schedule_name(name):
        raise ApiError(400, "validation_error", "the path is not a schedule name",
                       [ErrorDetail(field="name", message="letters, digits, '_', '.', '-'; at most 100")])
    if body.name is not None and body.name != name:
        raise ApiError(400, "validation_error", "name differs from the path",
                       [ErrorDetail(field="name", message=f"must be {name!r} (the path) or left out", path="$.name")])
    return await _save(request, await checked_record(with_name(body, name), request), "replace")


@requires("viewer")
@operation("A schedule: definition, pause, next fires, last fire, history", ok=ScheduleResponse,
           path={"name": ScheduleName}, errors=(404,))
async def get_schedule(request: web.Request) -> web.StreamResponse:
    return respond(request, ScheduleResponse(schedule=await _detail(request, name_from(request)), created=False))


@requires("operator")
@operation("Delete a schedule made through the API", ok=ScheduleDeletedResponse, path={"name": ScheduleName},
           errors=(404, 409), audit="schedule.delete",
           description="Its jobs are left alone. 409 managed_by_config for a config schedule.")
async def delete_schedule(request: web.Request) -> web.StreamResponse:
    name = name_from(request)
    result = await request.app[SYSTEM].get("scheduler").ask(DeleteSchedule(name), timeout=10.0)
    if result != "deleted":
        raise _refused(result, name)
    return respond(request, ScheduleDeletedResponse(schedule=name))


async def _pause(request: web.Request, *, resume: bool) -> web.StreamResponse:
    name = name_from(request)
    body = await read_optional_json(request, PauseBody, PauseBody())
    result = await set_paused(request.app[SYSTEM].get("scheduler"), name, resume=resume, note=body.note)
    if result not in ("paused", "resumed", "not_paused"):
        raise _refused(result, name)
    return respond(request, ScheduleResponse(schedule=await _detail(request, name), created=False))


@requires("operator")
@operation("Pause a schedule", body=PauseBody, body_required=False, ok=ScheduleResponse, path={"name": ScheduleName},
           errors=(404,), audit="schedule.pause",
           description="Its slots are recorded `paused` until it is resumed. Optional body "
                       '`{"note": "..."}`.')
async def pause_schedule(request: web.Request) -> web.StreamResponse:
    return await _pause(request, resume=False)


@requires("operator")
@operation("Resume a schedule", body=PauseBody, body_required=False, ok=ScheduleResponse, path={"name": ScheduleName},
           errors=(404, 409), audit="schedule.resume",
           description="It goes on from now: the slots that passed while it was paused do not "
                       "fire. Resuming a schedule that is not paused changes nothing.")
async def resume_schedule(request: web.Request) -> web.StreamResponse:
    return await _pause(request, resume=True)


@requires("operator")
@operation("Run one job of a schedule now", ok=TriggerResponse, path={"name": ScheduleName}, errors=(404,),
           audit="schedule.trigger",
           description="The job's scheduled_for is now; the schedule's pending slot does not move and the "
                       "overlap policy does not apply.")
async def trigger_schedule(request: web.Request) -> web.StreamResponse:
    name = name_from(request)
    identity = request.get(IDENTITY)
    job_id = await trigger_now(request.app[SYSTEM].get("scheduler"), name,
                               identity.name if identity is not None else None)
    if job_id is None:
        raise _refused("not_found", name)
    return respond(request, TriggerResponse(schedule=name, job_id=job_id))


ROUTES = [
    ("GET", "/schedules", list_schedules),
    ("POST", "/schedules", create_schedule),
    ("GET", "/schedules/{name}", get_schedule),
    ("PUT", "/schedules/{name}", put_schedule),
    ("DELETE", "/schedules/{name}", delete_schedule),
    ("POST", "/schedules/{name}/pause", pause_schedule),
    ("POST", "/schedules/{name}/resume", resume_schedule),
    ("POST", "/schedules/{name}/trigger", trigger_schedule),
]
