"""``/ui/schedules`` (every schedule: timing, state, next fire, latest outcome), ``/ui/schedules/{name}``
(definition, next fires, history with job links) and the operator actions ``POST
/ui/schedules/{name}/pause`` (optional note), ``/resume`` and ``/trigger``, audited under the API's
action names (``schedule.pause``, ...).

Reads and actions go through :mod:`secauto.schedule_operations`, as the API's do, so both show and
change schedules the same way. The action buttons sit outside the live part of the detail page: a live
refresh never wipes a note being typed.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from secauto.api.cluster import JOB_ID_PATTERN
from secauto.api.spec import audited
from secauto.api.state import SYSTEM
from secauto.schedule_operations import (
    get_schedule,
    is_schedule_name,
    latest_outcomes,
    list_schedules,
    pause_schedule,
    refusal,
    trigger_schedule,
)
from secauto.ui.access import access
from secauto.ui.errors import PageError, read_query
from secauto.ui.jobs import find_job
from secauto.ui.render import render
from secauto.ui.sessions import is_fragment, redirect
from secauto.ui.state import VISITOR

PAGE_SIZE = 100
NOTE_MAX = 500  # as the API's pause body
NO_SCHEDULE = "No such schedule (unknown, or deleted)."
# The notices an action may leave for the page it redirects to (fixed texts: nothing from the URL is shown
# but a job id, which must look like one).
NOTICES = {
    "paused": "Paused: its slots are recorded as paused until it is resumed.",
    "resumed": "Resumed: it goes on from the next slot; the slots that passed while paused do not fire.",
    "not_paused": "Nothing done: the schedule is not paused.",
}


class SchedulesQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    offset: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0


class ScheduleQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    notice: Literal["paused", "resumed", "not_paused", "triggered"] | None = None
    job: Annotated[str, msgspec.Meta(pattern=JOB_ID_PATTERN)] | None = None  # the job a trigger created


def _name(request: web.Request) -> str:
    """The ``{name}`` path part; 404 for anything that cannot be a schedule's name."""
    name = request.match_info["name"]
    if not is_schedule_name(name):
        raise PageError(404, NO_SCHEDULE)
    return name


@access("viewer")
async def schedules_page(request: web.Request) -> web.StreamResponse:
    """One page of schedules, by name, each with its newest recorded outcome."""
    query = read_query(request, SchedulesQuery)
    scheduler = request.config_dict[SYSTEM].get("scheduler")
    total, schedules = await list_schedules(scheduler, offset=query.offset, limit=PAGE_SIZE)
    context = {
        "nav": "schedules",
        "live": True,
        "schedules": schedules,
        "latest": await latest_outcomes(scheduler, [schedule.name for schedule in schedules]),
        "total": total,
        "offset": query.offset,
        "page_size": PAGE_SIZE,
        "live_url": "/ui/schedules" + (f"?offset={query.offset}" if query.offset else ""),
    }
    return render(request, "schedules_live.html" if is_fragment(request) else "schedules.html", context)


@access("viewer")
async def schedule_page(request: web.Request) -> web.StreamResponse:
    """A schedule: its state, definition, next fires and history; its last job's status."""
    name = _name(request)
    query = read_query(request, ScheduleQuery)
    schedule = await get_schedule(request.config_dict[SYSTEM].get("scheduler"), name)
    if schedule is None:
        raise PageError(404, NO_SCHEDULE)
    last_job = await find_job(request, schedule.last_fire.job_id) if schedule.last_fire else None
    context = {
        "nav": "schedules",
        "live": True,
        "schedule": schedule,
        "last_job": last_job,
        "notice": NOTICES.get(query.notice or ""),
        "triggered": query.job if query.notice == "triggered" else None,
    }
    return render(request, "schedule_live.html" if is_fragment(request) else "schedule.html", context)


async def _set_paused(request: web.Request, *, resume: bool) -> web.StreamResponse:
    name = _name(request)
    form = await request.post()
    note = form.get("note", "")
    if not isinstance(note, str):
        raise PageError(400, "note: must be text")
    note = note.strip()
    if len(note) > NOTE_MAX:
        raise PageError(400, f"note: at most {NOTE_MAX} characters")
    result = await pause_schedule(request.config_dict[SYSTEM].get("scheduler"), name, resume=resume, note=note)
    if result == "not_found":
        raise PageError(404, NO_SCHEDULE)
    if result not in NOTICES:  # changed meanwhile, on every retry
        why = refusal(result, name)
        raise PageError(why.status, why.message)
    return redirect(f"/ui/schedules/{name}?notice={result}")


@access("operator")
@audited("schedule.pause")
async def pause(request: web.Request) -> web.StreamResponse:
    return await _set_paused(request, resume=False)


@access("operator")
@audited("schedule.resume")
async def resume(request: web.Request) -> web.StreamResponse:
    return await _set_paused(request, resume=True)


@access("operator")
@audited("schedule.trigger")
async def trigger(request: web.Request) -> web.StreamResponse:
    """One job of the schedule now, submitted by the visitor's key; back to the schedule, naming the job."""
    name = _name(request)
    job_id = await trigger_schedule(request.config_dict[SYSTEM].get("scheduler"), name,
                                    request[VISITOR].identity.name)
    if job_id is None:
        raise PageError(404, NO_SCHEDULE)
    return redirect(f"/ui/schedules/{name}?notice=triggered&job={job_id}")


ROUTES = [
    ("GET", "/schedules", schedules_page),
    ("GET", "/schedules/{name}", schedule_page),
    ("POST", "/schedules/{name}/pause", pause),
    ("POST", "/schedules/{name}/resume", resume),
    ("POST", "/schedules/{name}/trigger", trigger),
]
