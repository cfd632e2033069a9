"""SchedulerActor: keeps the schedules, and fires them while this node leads the cluster.

Every node runs one. On any node it answers the API (define, list, pause, resume, trigger, delete) and,
at start, makes the config-managed schedules match this node's ``schedules:`` (retried every tick
until Redis answers). Only on the leader (the reaper tells it the lease token after each election round)
does it fire: it wakes every :data:`TICK_S` and at the next due time, reads the Redis clock and the
earliest pending slots, plans each due schedule (:func:`secauto.schedules.plan.plan_pass`) and hands
the plan to one Lua script that checks the lease token, the pending slot and the definition's revision
before it creates jobs, records the outcomes and moves the pending slot. A stale plan (another node
changed the schedule meanwhile) is dropped and planned again on the next tick; a refused token means
this node was deposed and it stops firing until told otherwise. Redis errors (unreachable, or a primary
being demoted) are logged and retried on the next tick, and a script error is logged for its schedule
alone; they never crash the actor.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from loguru import logger
from redis.exceptions import ReadOnlyError, ResponseError

from actors.context import NodeContext
from actors.core import Actor
from actors.messages import (
    DeleteSchedule,
    GetSchedule,
    LatestOutcomes,
    LeadershipChanged,
    ListSchedules,
    PauseSchedule,
    SaveSchedule,
    ScheduleTick,
    TriggerSchedule,
)
from secauto.models import make_event, new_job_id
from secauto.schedules.definition import (
    ScheduleRecord,
    Source,
    definition_hash,
    schedule_job,
    secret_refs,
    slot_job_id,
    timing_hash,
)
from secauto.schedules.plan import plan_pass
from secauto.schedules.timing import NEVER, CronError, iso_ms
from secauto.store.connection import REDIS_UNAVAILABLE
from secauto.store.schedules import FireEntry, PauseResult, ScheduleStore, UpsertMode, UpsertResult

TICK_S = 1.0  # the longest a new or changed schedule waits before the leader looks at it
DUE_BATCH = 200  # pending slots read per tick (more are read at once if all of them were due)
_STALE_RETRIES = 3


class DueTick(msgspec.Struct, frozen=True):
    """Timer: the earliest pending slot is due now."""


class SchedulerActor(Actor):
    def __init__(self, ctx: NodeContext, store: ScheduleStore, configured: list[ScheduleRecord] | None) -> None:
        """``configured``: the schedules of this node's config.yaml, None when it has no ``schedules:``
        key (then config-managed schedules are left as they are)."""
        self.ctx = ctx
        self.store = store
        self.configured = configured
        self.token: str | None = None
        self.synced = False
        self.grace_ms = int(max(5.0, ctx.settings.config.cluster.election_timeout) * 1000)
        self._broken: set[str] = set()  # schedules whose stored definition cannot be used (logged once)
        self.log = logger.bind(component="scheduler", node_id=ctx.node_id)

    async def on_start(self) -> None:
        self.start_timer("tick", TICK_S, ScheduleTick(), initial_delay=0.0)

    async def receive(self, message: Any) -> Any:
        match message:
            case ScheduleTick() | DueTick():
                await self._tick()
            case LeadershipChanged(token=token):
                gained = token is not None and token != self.token
                self.token = token
                if gained:
                    self.ref.tell(ScheduleTick())
            case SaveSchedule(record=record, mode=mode):
                return await self.save(record, "config" if mode == "config" else "api", mode)  # type: ignore[arg-type]
            case ListSchedules():
                return await self.store.redis_time(), await self.store.all()
            case GetSchedule(name=name):
                stored = await self.store.get(name)
                history = await self.store.history(name) if stored is not None else []
                return await self.store.redis_time(), stored, history
            case LatestOutcomes(names=names):
                return await self.store.latest(names)
            case DeleteSchedule(name=name):
                result = await self.store.delete(name, mode="api")
                if result == "deleted":
                    self.log.info("schedule {} deleted", name)
                return result
            case PauseSchedule(name=name, resume=resume, note=note):
                return await self._pause(name, resume=resume, note=note)
            case TriggerSchedule(name=name, submitted_by=submitted_by):
                return await self._trigger(name, submitted_by)
            case _:
                raise TypeError(f"scheduler got an unexpected message {message!r}")
        return None

    # -- definitions -----------------------------------------------------------------------------------

    async def save(self, record: ScheduleRecord, source: Source, mode: UpsertMode) -> UpsertResult:
        """Store a definition; its first slot is the first one after the Redis time."""
        timing = record.timing
        for _ in range(_STALE_RETRIES):
            now = await self.store.redis_time()
            first = timing.next_after(now)
            result = await self.store.upsert(record, source=source, mode=mode,
                                             def_hash=definition_hash(record, source),
                                             timing_hash=timing_hash(record.spec), first_slot=first,
                                             first_due=timing.due(first), now_iso=iso_ms(now))
            if result != "stale":
                if result in ("created", "updated"):
                    self.log.info("schedule {} {} ({})", record.spec.name, result, source)
                return result
            await asyncio.sleep(0.01)
        return "stale"

    async def _sync_config(self) -> None:
        """Make the config-managed schedules match ``schedules:`` (see the README for removals)."""
        for record in self.configured or []:
            result = await self.save(record, "config", "config")
            if result not in ("created", "updated", "unchanged"):
                self.log.error("config schedule {} not stored: {}", record.spec.name, result)
        await self._warn_unknown_secrets()
        if self.configured is not None:
            wanted = {record.spec.name for record in self.configured}
            for stored in await self.store.all():
                name = stored.record.spec.name
                if stored.state.source == "config" and name not in wanted:
                    await self.store.delete(name, mode="config")
                    self.log.warning("schedule {} deleted: it is no longer in this node's config.yaml", name)
        self.synced = True

    async def _warn_unknown_secrets(self) -> None:
        """Config schedules are stored even when their playbook names a secret that is not stored (yet:
        secrets are stored through the API, usually after the first start). Say so once, at start: a job
        they create fails that step with "unknown secret" until the secret is stored."""
        vault = self.ctx.vault
        refs = {record.spec.name: secret_refs(record, self.ctx.engine) for record in self.configured or []}
        names = {ref.name for found in refs.values() for ref in found}
        if vault is None or not names:
            return
        missing = set(await vault.missing(names))
        for name, found in refs.items():
            unknown = sorted({ref.name for ref in found if ref.name in missing})
            if unknown:
                self.log.warning("config schedule {} uses secrets that are not stored: {}; its jobs fail that step "
                                 "until they are (POST /secrets)", name, ", ".join(unknown))

    async def _pause(self, name: str, *, resume: bool, note: str) -> PauseResult:
        now = await self.store.redis_time()
        if not resume:
            result = await self.store.pause(name, note=note, now_iso=iso_ms(now))
            if result == "paused":
                self.log.info("schedule {} paused", name)
            return result
        for _ in range(_STALE_RETRIES):
            stored = await self.store.get(name)
            if stored is None:
                return "not_found"
            timing = stored.record.timing
            next_slot = timing.next_after(now)
            result = await self.store.resume(name, note=note, now_iso=iso_ms(now), next_slot=next_slot,
                                             next_due=timing.due(next_slot), enabled=stored.record.spec.enabled)
            if result != "stale":
                if result == "resumed":
                    self.log.info("schedule {} resumed; next slot {}", name, iso_ms(next_slot))
                return result
            await asyncio.sleep(0.01)
            now = await self.store.redis_time()
        return "stale"

    async def _trigger(self, name: str, submitted_by: str | None) -> str | None:
        stored = await self.store.get(name)
        if stored is None:
            return None
        now = await self.store.redis_time()
        job = schedule_job(stored.record, job_id=new_job_id(), slot=now, now_ms=now, node_id=self.ctx.node_id,
                           default_max_retries=self.ctx.settings.config.cluster.max_retries,
                           submitted_by=submitted_by)
        event = make_event("job.submitted", job_id=job.id, node_id=self.ctx.node_id, status="pending",
                           priority=job.priority, schedule=name, scheduled_for=job.scheduled_for)
        if not await self.store.trigger(name, job, event, now_iso=iso_ms(now)):
            return None
        self.ctx.metrics.schedule_fires.labels(schedule=name, outcome="triggered").inc()
        self.log.bind(job_id=job.id).info("schedule {} triggered by {}", name, submitted_by or "-")
        return job.id

    # -- firing (leader only) --------------------------------------------------------------------------

    async def _tick(self) -> None:
        try:
            if not self.synced:
                await self._sync_config()
            if self.token is None:
                return
            now, pending = await self.store.due(DUE_BATCH)
            for name, due in pending:
                if due > now or self.token is None:
                    break
                try:
                    await self._fire(name, now)
                except ResponseError as exc:
                    if isinstance(exc, ReadOnlyError):
                        raise
                    # One schedule's failing script must not stop the others; it is tried again next tick.
                    self.log.error("schedule {} could not be fired: {}", name, exc)
            if self.token is not None:
                for name in await self.store.buffered():
                    await self._release(name, now)
        except REDIS_UNAVAILABLE as exc:
            self.log.warning("scheduler tick failed, will retry: {}", exc)
            return
        if self.token is None:
            return
        later = [due for _, due in pending if due > now]
        if later:
            delay = (min(later) - now) / 1000
            if delay < TICK_S:
                self.start_timer("due", max(0.001, delay), DueTick(), repeat=False)
        elif len(pending) == DUE_BATCH:
            self.ref.tell(DueTick())  # a backlog: go on at once

    async def _fire(self, name: str, now: int) -> None:
        try:
            stored = await self.store.get(name)
            if stored is None:
                return
            record, state = stored.record, stored.state
            timing = record.timing
        except (msgspec.DecodeError, msgspec.ValidationError, CronError, ValueError) as exc:
            if name not in self._broken:
                self._broken.add(name)
                self.log.error("schedule {} cannot be fired, its stored definition is unusable: {}", name, exc)
            return
        self._broken.discard(name)
        if state.slot >= NEVER or timing.due(state.slot) > now:
            return  # read before a change: the next tick sees the new state
        spec = record.spec
        plan = plan_pass(timing, pending=state.slot, now=now, paused=state.paused, catchup=spec.catchup,
                         window_ms=int(spec.catchup_window * 1000), grace_ms=self.grace_ms)
        entries = [self._entry(record, entry.slot, entry.intent, entry.until, now) for entry in plan.entries]
        token = self.token
        if token is None:
            return
        outcomes = await self.store.fire(token=token, name=name, state=state, overlap=spec.overlap, entries=entries,
                                         next_slot=plan.next_slot, next_due=timing.due(plan.next_slot),
                                         now_iso=iso_ms(now))
        if outcomes is None:
            self.token = None
            self.log.warning("not the leader any more; stopped firing schedules")
            return
        if not outcomes:
            self.log.debug("schedule {} changed while planning; planning again", name)
            return
        for entry, outcome in zip(entries, outcomes, strict=True):
            self._account(name, entry, outcome)

    def _entry(self, record: ScheduleRecord, slot: int, intent: str, until: int | None, now: int) -> FireEntry:
        if intent != "fire":
            return FireEntry(slot=slot, intent=intent, until=until)  # type: ignore[arg-type]
        name = record.spec.name
        job = schedule_job(record, job_id=slot_job_id(self.ctx.queue.keys.cluster, name, slot), slot=slot, now_ms=now,
                           node_id=self.ctx.node_id, default_max_retries=self.ctx.settings.config.cluster.max_retries)
        event = make_event("job.submitted", job_id=job.id, node_id=self.ctx.node_id, status="pending",
                           priority=job.priority, schedule=name, scheduled_for=job.scheduled_for)
        return FireEntry(slot=slot, intent="fire", job=job, event=event)

    def _account(self, name: str, entry: FireEntry, outcome: str) -> None:
        slot = iso_ms(entry.slot)
        if outcome == "buffered":
            self.log.info("schedule {}: slot {} waits for the running job (buffer_one)", name, slot)
            return
        if outcome not in ("fired", "skipped_overlap", "missed", "paused"):
            return
        self.ctx.metrics.schedule_fires.labels(schedule=name, outcome=outcome).inc()
        log = self.log.bind(job_id=entry.job.id) if outcome == "fired" and entry.job else self.log
        if outcome == "fired":
            log.info("schedule {} fired for {}", name, slot)
        elif outcome == "missed":
            until = f" to {iso_ms(entry.until)}" if entry.until else ""
            log.warning("schedule {} missed slot {}{} (catchup)", name, slot, until)
        else:
            log.info("schedule {} skipped slot {} ({})", name, slot, outcome)

    async def _release(self, name: str, now: int) -> None:
        """overlap buffer_one: create the buffered slot's job once the schedule's jobs ended."""
        token = self.token
        try:
            stored = await self.store.get(name)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # logged by _fire
        if token is None:
            return
        if stored is None or stored.state.buffered_slot is None:  # drop the name from the set, atomically
            await self.store.release(token=token, name=name, slot=None, job=None, event=None, now_iso=iso_ms(now))
            return
        entry = self._entry(stored.record, stored.state.buffered_slot, "fire", None, now)
        job_id = entry.job.id if entry.job is not None else None
        result = await self.store.release(token=token, name=name, slot=stored.state.buffered_slot, job=entry.job,
                                          event=entry.event, now_iso=iso_ms(now))
        if result is None:
            self.token = None
        elif result == 2:
            self.ctx.metrics.schedule_fires.labels(schedule=name, outcome="fired").inc()
            self.log.bind(job_id=job_id).info("schedule {} fired its buffered slot {}", name,
                                                    iso_ms(stored.state.buffered_slot))
