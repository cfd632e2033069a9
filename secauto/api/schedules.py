"""Schedules: ``GET/POST /schedules``, ``GET/PUT/DELETE /schedules/{name}``,
``POST /schedules/{name}/pause``, ``/resume`` and ``/trigger``.

Definitions are checked here (types by msgspec, then cron, time zone, every and the playbook, which is
resolved and validated now) and stored by the SchedulerActor; the leader fires them. Schedules from
config.yaml answer 409 ``managed_by_config`` to a change or delete; pause, resume and trigger work on
every schedule.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from actors.messages import (
    DeleteSchedule,
    GetSchedule,
    ListSchedules,
    PauseSchedule,
    SaveSchedule,
    TriggerSchedule,
)
from secauto.api.errors import ApiError, ErrorDetail
from secauto.api.inputs import read_json, read_optional_json
from secauto.api.roles import requires
from secauto.api.spec import operation, respond
from secauto.api.state import AUDIT_TARGET, ENGINE, IDENTITY, SYSTEM
from secauto.engine import PlaybookInvalid
from secauto.models import utc_now
from secauto.schedules.definition import ScheduleRecord, resolve_steps
from secauto.schedules.spec import (
    SCHEDULE_NAME_PATTERN,
    Catchup,
    Overlap,
    ScheduleName,
    ScheduleReplacement,
    ScheduleSpec,
    definition_problems,
    with_name,
)
from secauto.schedules.timing import NEVER, iso_ms
from secauto.store.schedules import StoredSchedule

_NAME = re.compile(SCHEDULE_NAME_PATTERN)
NEXT_FIRES = 5


class HistoryEntry(msgspec.Struct, kw_only=True):
    """One slot's outcome: fired, triggered, skipped_overlap, missed or paused. A long outage is one
    ``missed`` (or ``paused``) entry covering ``slot`` .. ``until``."""

    slot: str
    outcome: str
    job_id: str | None  # the job created (fired, triggered)
    until: str | msgspec.UnsetType = msgspec.UNSET


class LastFire(msgspec.Struct, kw_only=True):
    slot: str  # the slot (RFC 3339 UTC; the trigger time for a trigger)
    job_id: str
    fired_at: str


class ScheduleView(msgspec.Struct, kw_only=True):
    """A schedule as the API shows it: its definition and its state."""

    name: str
    cron: str | None
    every: float | None
    timezone: str
    playbook: list[Any] | None  # as given; null for a named playbook
    playbook_name: str | None
    context: dict[str, Any]
    priority: int
    tags: list[str]
    affinity: str | None
    timeout: float | None
    max_retries: int | None
    overlap: Overlap
    catchup: Catchup
    catchup_window: float
    jitter: float
    enabled: bool
    managed_by: Literal["config", "api"]
    created_at: str | None
    updated_at: str | None
    paused: bool
    paused_at: str | None
    pause_note: str | None
    next_fires: list[str]  # the next slots (RFC 3339 UTC); empty while paused or disabled
    last_fire: LastFire | None


class ScheduleDetail(ScheduleView, kw_only=True):
    history: list[HistoryEntry]  # newest slot first


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


_history_decoder = msgspec.json.Decoder(HistoryEntry)


def view(stored: StoredSchedule, now: int, history: list[bytes] | None = None) -> ScheduleDetail:
    """The API's view of a stored schedule at Redis time ``now``."""
    spec, state = stored.record.spec, stored.state
    next_fires: list[str] = []
    if spec.enabled and not state.paused and state.slot < NEVER:
        slots = [state.slot, *stored.record.timing.upcoming(state.slot, NEXT_FIRES - 1)]
        next_fires = [iso_ms(slot) for slot in slots if slot < NEVER]
    last_fire = None
    if state.last_job and state.last_fire_slot and state.last_fire_at:
        last_fire = LastFire(slot=state.last_fire_slot, job_id=state.last_job, fired_at=state.last_fire_at)
    entries = [_history_decoder.decode(raw) for raw in history or []]
    entries.sort(key=lambda entry: entry.slot, reverse=True)  # a buffered slot is recorded after newer ones
    return ScheduleDetail(
        name=spec.name, cron=spec.cron, every=spec.every, timezone=spec.timezone, playbook=spec.playbook,
        playbook_name=spec.playbook_name, context=spec.context, priority=spec.priority, tags=list(spec.tags),
        affinity=spec.affinity, timeout=spec.timeout, max_retries=spec.max_retries, overlap=spec.overlap,
        catchup=spec.catchup, catchup_window=spec.catchup_window, jitter=spec.jitter, enabled=spec.enabled,
        managed_by=state.source, created_at=state.created_at, updated_at=state.updated_at, paused=state.paused,
        paused_at=state.paused_at, pause_note=state.pause_note or None, next_fires=next_fires, last_fire=last_fire,
        history=entries)


def summary(detail: ScheduleDetail) -> ScheduleView:
    return ScheduleView(**{name: getattr(detail, name) for name in ScheduleView.__struct_fields__})


def name_from(request: web.Request) -> str:
    """The ``{name}`` path part; 404 for anything that cannot be a schedule's name."""
    name = request.match_info["name"]
    if not _NAME.match(name):
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


async def _detail(request: web.Request, name: str) -> ScheduleDetail:
    now, stored, history = await request.app[SYSTEM].get("scheduler").ask(GetSchedule(name), timeout=10.0)
    if stored is None:
        raise ApiError(404, "not_found", f"no schedule {name!r}")
    return view(stored, now, history)


def _refused(result: str, name: str) -> ApiError:
    if result == "managed_by_config":
        return ApiError(409, "managed_by_config", f"schedule {name} comes from config.yaml; change or remove it there "
                                                  "(pause, resume and trigger work here)")
    if result == "exists":
        return ApiError(409, "conflict", f"a schedule named {name} exists; PUT /schedules/{name} replaces it")
    if result == "too_many":
        return ApiError(409, "conflict", "too many schedules; delete some first")
    if result == "not_found":
        return ApiError(404, "not_found", f"no schedule {name!r}")
    return ApiError(409, "conflict", f"schedule {name} changed meanwhile; try again")


async def _save(request: web.Request, record: ScheduleRecord, mode: str) -> web.StreamResponse:
    name = record.spec.name
    result = await request.app[SYSTEM].get("scheduler").ask(SaveSchedule(record, mode), timeout=10.0)
    if result not in ("created", "updated", "unchanged"):
        raise _refused(result, name)
    return respond(request, ScheduleResponse(schedule=await _detail(request, name), created=result == "created"))


@requires("viewer")
@operation("Schedules, by name", ok=ScheduleListResponse)
async def list_schedules(request: web.Request) -> web.StreamResponse:
    now, stored = await request.app[SYSTEM].get("scheduler").ask(ListSchedules(), timeout=10.0)
    return respond(request, ScheduleListResponse(schedules=[summary(view(item, now)) for item in stored]))


@requires("operator")
@operation("Create a schedule", body=ScheduleSpec, ok=ScheduleResponse, errors=(409,), audit="schedule.create",
           description="409 if the name exists (PUT replaces). The playbook is resolved and validated now.")
async def create_schedule(request: web.Request) -> web.StreamResponse:
    spec = await read_json(request, ScheduleSpec)
    request[AUDIT_TARGET] = spec.name
    return await _save(request, build_record(spec, request), "create")


@requires("operator")
@operation("Create or replace a schedule", body=ScheduleReplacement, ok=ScheduleResponse,
           path={"name": ScheduleName}, errors=(409,), audit="schedule.put",
           description="The same definition again changes nothing; a changed one keeps the history, the pause "
                       "and, unless cron/every, timezone, jitter or enabled changed, the pending slot. 409 "
                       "managed_by_config for a schedule from config.yaml.")
async def put_schedule(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    body = await read_json(request, ScheduleReplacement)
    if not _NAME.match(name):
        raise ApiError(400, "validation_error", "the path is not a schedule name",
                       [ErrorDetail(field="name", message="letters, digits, '_', '.', '-'; at most 100")])
    if body.name is not None and body.name != name:
        raise ApiError(400, "validation_error", "name differs from the path",
                       [ErrorDetail(field="name", message=f"must be {name!r} (the path) or left out", path="$.name")])
    return await _save(request, build_record(with_name(body, name), request), "replace")


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
    result = await request.app[SYSTEM].get("scheduler").ask(PauseSchedule(name, resume, body.note), timeout=10.0)
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
    job_id = await request.app[SYSTEM].get("scheduler").ask(
        TriggerSchedule(name, identity.name if identity is not None else None), timeout=10.0)
    if job_id is None:
        raise ApiError(404, "not_found", f"no schedule {name!r}")
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
