"""Schedules in Redis: definitions, state, pending slots, history, and the scripts that change them.

Layout (``keys.py``): ``secauto:schedules:<cluster>`` (HASH name -> definition JSON),
``secauto:schedule:<cluster>:<name>`` (HASH: the state, scalar fields only, so the scripts never decode
user data), ``secauto:schedule-due:<cluster>`` (ZSET name -> due ms of the pending slot),
``secauto:schedule-history:<cluster>:<name>`` (LIST of slot outcomes, newest first, capped),
``secauto:schedule-jobs:<cluster>:<name>`` (SET of the schedule's possibly active jobs) and
``secauto:schedule-buffered:<cluster>`` (SET of names holding a buffered slot).

Every change is one Lua script (``lua/schedule_*.lua``). Every method raises redis-py's
``ConnectionError``/``TimeoutError`` when Redis cannot be reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from secauto.models import Event, Job, json_encoder
from secauto.schedules.definition import ScheduleRecord, Source, record_decoder, record_encoder
from secauto.schedules.plan import Intent
from secauto.schedules.timing import NEVER, iso_ms
from secauto.store.jobs import JobQueue
from secauto.store.keys import SCHEDULE_ACTIVE_MAX, SCHEDULE_HISTORY_MAX, SCHEDULES_MAX
from secauto.store.scripts import script_source

UpsertMode = Literal["create", "replace", "config"]
UpsertResult = Literal["created", "updated", "unchanged", "exists", "managed_by_config", "too_many", "stale"]
PauseResult = Literal["paused", "resumed", "not_paused", "not_found", "stale"]
DeleteResult = Literal["deleted", "not_found", "managed_by_config"]


class ScheduleState(msgspec.Struct, kw_only=True):
    """The state HASH of a schedule, decoded."""

    slot: int  # the pending slot (ms); NEVER when there is none
    due: int  # its due time (ms)
    rev: str  # bumped by every change of the definition
    paused: bool = False
    paused_at: str | None = None
    pause_note: str | None = None
    source: Source = "api"
    created_at: str | None = None
    updated_at: str | None = None
    last_slot: int | None = None  # the newest slot handled (fired, skipped, missed or paused)
    last_job: str | None = None  # the newest job created (fire or trigger)
    last_fire_slot: str | None = None
    last_fire_at: str | None = None
    buffered_slot: int | None = None  # overlap buffer_one: the slot (ms) waiting for the running job


class StoredSchedule(msgspec.Struct, kw_only=True):
    record: ScheduleRecord
    state: ScheduleState


class FireEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One slot for :meth:`ScheduleStore.fire`: its intent and, to fire, its job and job.submitted event."""

    slot: int
    intent: Intent
    until: int | None = None
    job: Job | None = None
    event: Event | None = None


_STATE_INTS = ("slot", "due", "last_slot", "buffered_slot")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_state(raw: dict[Any, Any]) -> ScheduleState:
    fields = {_text(key): _text(value) for key, value in raw.items()}
    values: dict[str, Any] = {name: value for name, value in fields.items()
                              if name in ScheduleState.__struct_fields__ and value != ""}
    for name in _STATE_INTS:
        if name in values:
            values[name] = int(values[name])
    values["paused"] = fields.get("paused") == "1"
    values.setdefault("slot", NEVER)
    values.setdefault("due", NEVER)
    values.setdefault("rev", "0")
    return msgspec.convert(values, ScheduleState)


class ScheduleStore:
    """The schedules of one cluster. Jobs are created the way ``submit.lua`` does it (placement and
    index retention from ``queue``)."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.redis = queue.redis
        self.keys = queue.keys
        register = self.redis.register_script
        self._upsert = register(script_source("schedule_upsert"))
        self._fire = register(script_source("schedule_fire"))
        self._release = register(script_source("schedule_release"))
        self._trigger = register(script_source("schedule_trigger"))
        self._pause = register(script_source("schedule_pause"))
        self._delete = register(script_source("schedule_delete"))

    async def redis_time(self) -> int:
        """The Redis clock, in ms since the epoch: what decides when slots are due."""
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # -- reading ---------------------------------------------------------------------------------------

    async def get(self, name: str) -> StoredSchedule | None:
        """The stored definition and state, or None (a definition that does not decode is logged by the
        caller as it raises msgspec's errors)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.schedules, name)
            pipe.hgetall(self.keys.schedule_state(name))
            raw, state = await pipe.execute()
        if raw is None or not state:
            return None
        return StoredSchedule(record=record_decoder.decode(raw), state=decode_state(state))

    async def names(self) -> list[str]:
        return sorted(_text(name) for name in await self.redis.hkeys(self.keys.schedules))

    async def all(self) -> list[StoredSchedule]:
        """Every schedule, by name."""
        raw: dict[Any, Any] = await self.redis.hgetall(self.keys.schedules)
        names = sorted(_text(name) for name in raw)
        if not names:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.schedule_state(name))
            states = await pipe.execute()
        by_name = {_text(name): value for name, value in raw.items()}
        return [StoredSchedule(record=record_decoder.decode(by_name[name]), state=decode_state(state))
                for name, state in zip(names, states, strict=True) if state]

    async def history(self, name: str, limit: int = SCHEDULE_HISTORY_MAX) -> list[bytes]:
        """The history entries (JSON), newest recorded first."""
        entries = await self.redis.lrange(self.keys.schedule_history(name), 0, limit - 1)
        return [entry.encode() if isinstance(entry, str) else entry for entry in entries]

    async def latest(self, names: Sequence[str]) -> list[bytes | None]:
        """Each schedule's newest recorded history entry (JSON) or None, in one round-trip."""
        if not names:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.lindex(self.keys.schedule_history(name), 0)
            entries = await pipe.execute()
        return [entry.encode() if isinstance(entry, str) else entry for entry in entries]

    async def due(self, limit: int) -> tuple[int, list[tuple[str, int]]]:
        """(Redis time, the ``limit`` earliest pending slots as (name, due ms)), in one round-trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zrange(self.keys.schedule_due, 0, limit - 1, withscores=True)
            (seconds, micros), entries = await pipe.execute()
        now = int(seconds) * 1000 + int(micros) // 1000
        return now, [(_text(name), int(score)) for name, score in entries]

    async def buffered(self) -> list[str]:
        return sorted(_text(name) for name in await self.redis.smembers(self.keys.schedule_buffered))

    # -- changing --------------------------------------------------------------------------------------

    async def upsert(self, record: ScheduleRecord, *, source: Source, mode: UpsertMode, def_hash: str,
                     timing_hash: str, first_slot: int, first_due: int, now_iso: str) -> UpsertResult:
        """Store a definition (see ``schedule_upsert.lua`` for what is kept)."""
        name = record.spec.name
        result = await self._upsert(
            keys=[self.keys.schedules, self.keys.schedule_state(name), self.keys.schedule_due],
            args=[name, record_encoder.encode(record), def_hash, timing_hash, source, mode, first_slot, first_due,
                  "1" if record.spec.enabled else "0", SCHEDULES_MAX, now_iso, NEVER])
        return _text(result)  # type: ignore[return-value]

    async def fire(self, *, token: str, name: str, state: ScheduleState, overlap: str, entries: Sequence[FireEntry],
                   next_slot: int, next_due: int, now_iso: str) -> list[str] | None:
        """Handle due slots and move the pending slot (``schedule_fire.lua``). Returns the outcome per
        entry, ``[]`` when the plan was stale (state changed meanwhile), None when not the leader."""
        args: list[Any] = [token, name, state.slot, state.rev, "1" if state.paused else "0", next_slot, next_due,
                           overlap, SCHEDULE_HISTORY_MAX, SCHEDULE_ACTIVE_MAX, self.keys.job_prefix,
                           self.keys.node_prefix, self.queue.dispatch.placement, self._index_ms(),
                           self.keys.channel, self.keys.control, now_iso, NEVER]
        for entry in entries:
            args += [entry.slot, iso_ms(entry.slot), entry.intent, iso_ms(entry.until) if entry.until else "",
                     entry.job.id if entry.job else "", json_encoder.encode(entry.job) if entry.job else "",
                     json_encoder.encode(entry.event) if entry.event else ""]
        result = await self._fire(keys=self._fire_keys(name), args=args)
        status = int(result[0])
        if status < 0:
            return None
        if status == 0:
            return []
        return [_text(item) for item in result[1:]]

    async def release(self, *, token: str, name: str, slot: int | None, job: Job | None, event: Event | None,
                      now_iso: str) -> int | None:
        """Create the job of the buffered ``slot`` once the schedule's jobs ended (``schedule_release.lua``);
        with no slot, only drop ``name`` from the buffered set if it holds no buffered slot. Returns 2
        (created), 1 (still waiting), 0 (nothing or another slot buffered), None (not the leader)."""
        built = [slot, iso_ms(slot), job.id, json_encoder.encode(job), json_encoder.encode(event)] \
            if slot is not None and job is not None and event is not None else ["", "", "", "", ""]
        result = int(await self._release(
            keys=self._fire_keys(name),
            args=[token, name, SCHEDULE_HISTORY_MAX, SCHEDULE_ACTIVE_MAX, self.keys.job_prefix, self.keys.node_prefix,
                  self.queue.dispatch.placement, self._index_ms(), self.keys.channel, self.keys.control, now_iso,
                  *built]))
        return None if result < 0 else result

    async def trigger(self, name: str, job: Job, event: Event, *, now_iso: str) -> bool:
        """Create one job of the schedule now; False for an unknown schedule."""
        keys = [self.keys.schedules, self.keys.schedule_state(name), self.keys.schedule_history(name),
                self.keys.schedule_jobs(name), self.keys.queue, self.keys.sequence, self.keys.capacity,
                self.keys.round_robin, self.keys.job_index]
        args: list[Any] = [name, job.id, json_encoder.encode(job), json_encoder.encode(event), job.scheduled_for,
                           SCHEDULE_HISTORY_MAX, SCHEDULE_ACTIVE_MAX, self.keys.job_prefix, self.keys.node_prefix,
                           self.queue.dispatch.placement, self._index_ms(), self.keys.channel, self.keys.control,
                           now_iso]
        return bool(await self._trigger(keys=keys, args=args))

    async def pause(self, name: str, *, note: str, now_iso: str) -> PauseResult:
        return await self._pause_call(name, ["pause", now_iso, note, NEVER, NEVER, "1"])

    async def resume(self, name: str, *, note: str, now_iso: str, next_slot: int, next_due: int,
                     enabled: bool) -> PauseResult:
        return await self._pause_call(name, ["resume", now_iso, note, next_slot, next_due, "1" if enabled else "0"])

    async def _pause_call(self, name: str, args: list[Any]) -> PauseResult:
        result = await self._pause(keys=[self.keys.schedules, self.keys.schedule_state(name), self.keys.schedule_due],
                                   args=[name, *args, NEVER])
        return _text(result)  # type: ignore[return-value]

    async def delete(self, name: str, *, mode: Literal["api", "config"]) -> DeleteResult:
        result = await self._delete(
            keys=[self.keys.schedules, self.keys.schedule_state(name), self.keys.schedule_due,
                  self.keys.schedule_history(name), self.keys.schedule_jobs(name), self.keys.schedule_buffered],
            args=[name, mode])
        return _text(result)  # type: ignore[return-value]

    def _fire_keys(self, name: str) -> list[str]:
        keys = self.keys
        return [keys.leader, keys.schedules, keys.schedule_state(name), keys.schedule_due, keys.schedule_history(name),
                keys.schedule_jobs(name), keys.queue, keys.sequence, keys.capacity, keys.round_robin, keys.job_index,
                keys.schedule_buffered]

    def _index_ms(self) -> int:
        policy = self.queue.policy
        return 1000 * max(policy.job_retention_s, policy.dlq_retention_s)
