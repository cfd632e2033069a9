"""A schedule as users see it (the API's answers and the dashboard's pages): its definition, its state
at a given Redis time, its next fires and its history."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from secauto.schedules.spec import Catchup, Overlap
from secauto.schedules.timing import NEVER, iso_ms
from secauto.store.schedules import StoredSchedule

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


history_decoder = msgspec.json.Decoder(HistoryEntry)


def view(stored: StoredSchedule, now: int, history: list[bytes] | None = None) -> ScheduleDetail:
    """The view of a stored schedule at Redis time ``now``, with its ``history`` entries (JSON, as
    stored) sorted newest slot first. Raises msgspec's errors for an entry that does not decode."""
    spec, state = stored.record.spec, stored.state
    next_fires: list[str] = []
    if spec.enabled and not state.paused and state.slot < NEVER:
        slots = [state.slot, *stored.record.timing.upcoming(state.slot, NEXT_FIRES - 1)]
        next_fires = [iso_ms(slot) for slot in slots if slot < NEVER]
    last_fire = None
    if state.last_job and state.last_fire_slot and state.last_fire_at:
        last_fire = LastFire(slot=state.last_fire_slot, job_id=state.last_job, fired_at=state.last_fire_at)
    entries = [history_decoder.decode(raw) for raw in history or []]
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
    """The view without the history (what ``GET /schedules`` lists)."""
    return ScheduleView(**{name: getattr(detail, name) for name in ScheduleView.__struct_fields__})
