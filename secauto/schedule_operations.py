"""Reads and actions on schedules through the node's scheduler actor, shared by the HTTP API
(:mod:`secauto.api.schedules`) and the dashboard (:mod:`secauto.ui.schedules`), so both show, pause,
resume and trigger schedules the same way and explain a refusal with the same words (as
:mod:`secauto.operations` does for jobs).

Every function asks the scheduler; an actor that is busy or stopping raises the actor runtime's
``AskTimeoutError`` / ``ActorDeadError`` and a Redis outage raises redis-py's connection errors: callers
turn those into their own 503 answers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from actors.core import ActorRef
from actors.messages import GetSchedule, LatestOutcomes, ListSchedules, PauseSchedule, TriggerSchedule
from secauto.schedules.spec import SCHEDULE_NAME_PATTERN
from secauto.schedules.view import HistoryEntry, ScheduleDetail, ScheduleView, history_decoder, summary, view
from secauto.store.schedules import PauseResult

ASK_TIMEOUT_S = 10.0
_NAME = re.compile(SCHEDULE_NAME_PATTERN)


def is_schedule_name(text: str) -> bool:
    return bool(_NAME.match(text))


class Refusal(msgspec.Struct, frozen=True):
    """Why the scheduler did not do what was asked: an HTTP status, the API's error code, a message."""

    status: int
    code: str
    message: str


def refusal(result: str, name: str) -> Refusal:
    """The refusal for a scheduler answer other than success (``exists``, ``managed_by_config``,
    ``too_many``, ``not_found``, ``stale``)."""
    if result == "managed_by_config":
        return Refusal(409, "managed_by_config", f"schedule {name} comes from config.yaml; change or remove it "
                                                 "there (pause, resume and trigger work here)")
    if result == "exists":
        return Refusal(409, "conflict", f"a schedule named {name} exists; PUT /schedules/{name} replaces it")
    if result == "too_many":
        return Refusal(409, "conflict", "too many schedules; delete some first")
    if result == "not_found":
        return Refusal(404, "not_found", f"no schedule {name!r}")
    return Refusal(409, "conflict", f"schedule {name} changed meanwhile; try again")


async def list_schedules(scheduler: ActorRef, *, offset: int = 0,
                         limit: int | None = None) -> tuple[int, list[ScheduleView]]:
    """(How many schedules there are, those from ``offset`` on, by name, at most ``limit``), without
    their history. Only the listed ones get their next fires computed."""
    now, stored = await scheduler.ask(ListSchedules(), timeout=ASK_TIMEOUT_S)
    shown = stored[offset:] if limit is None else stored[offset:offset + limit]
    return len(stored), [summary(view(item, now)) for item in shown]


async def get_schedule(scheduler: ActorRef, name: str) -> ScheduleDetail | None:
    """One schedule with its history (newest slot first), or None if there is none by that name."""
    now, stored, history = await scheduler.ask(GetSchedule(name), timeout=ASK_TIMEOUT_S)
    return None if stored is None else view(stored, now, history)


async def latest_outcomes(scheduler: ActorRef, names: Sequence[str]) -> dict[str, HistoryEntry]:
    """The newest recorded history entry of each of ``names`` that has one (one Redis round-trip)."""
    entries: list[bytes | None] = await scheduler.ask(LatestOutcomes(tuple(names)), timeout=ASK_TIMEOUT_S)
    return {name: history_decoder.decode(raw) for name, raw in zip(names, entries, strict=True) if raw is not None}


async def pause_schedule(scheduler: ActorRef, name: str, *, resume: bool, note: str = "") -> PauseResult:
    """Pause (or resume) a schedule: ``paused``, ``resumed``, ``not_paused`` (a resume of a schedule that
    is not paused changes nothing), ``not_found``, or ``stale`` (changed meanwhile, every retry)."""
    result: PauseResult = await scheduler.ask(PauseSchedule(name, resume, note), timeout=ASK_TIMEOUT_S)
    return result


async def trigger_schedule(scheduler: ActorRef, name: str, submitted_by: str | None) -> str | None:
    """Create one job of the schedule now (``submitted_by``: the key's name); its id, or None for an
    unknown schedule."""
    job_id: str | None = await scheduler.ask(TriggerSchedule(name, submitted_by), timeout=ASK_TIMEOUT_S)
    return job_id
