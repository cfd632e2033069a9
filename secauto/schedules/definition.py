"""A checked schedule as stored, and the jobs it creates.

A definition is resolved once, when it is defined (API) or loaded (config.yaml at node start): a named
playbook is read from ``playbooks_dir`` and validated then, and its steps are stored with the definition.
So every node fires exactly the same steps, and a broken playbook is a 400 (or a config error) at
definition time rather than a failed fire at 3 a.m. Changing a named playbook's file takes effect when
the schedule is defined again (``PUT``, or the next node start for config schedules).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import msgspec

from secauto.engine import (
    EngineSettings,
    PlaybookInvalid,
    load_playbook_file,
    resolve_named_playbook,
    validate_playbook,
)
from secauto.engine.model import SecretRef
from secauto.models import Job
from secauto.schedules.spec import ScheduleSpec
from secauto.schedules.timing import Timing, iso_ms, parse_cron

Source = Literal["config", "api"]


class ScheduleRecord(msgspec.Struct, kw_only=True):
    """What ``secauto:schedules:<cluster>`` holds for one schedule: the definition as given, and the
    playbook steps its jobs run."""

    spec: ScheduleSpec
    steps: list[Any]

    @property
    def timing(self) -> Timing:
        spec = self.spec
        return Timing.of(spec.name, cron=spec.cron, every=spec.every, timezone=spec.timezone, jitter=spec.jitter)


record_encoder = msgspec.json.Encoder(order="deterministic")
record_decoder = msgspec.json.Decoder(ScheduleRecord)


def resolve_steps(spec: ScheduleSpec, engine: EngineSettings) -> list[Any]:
    """The steps the schedule's jobs run: the inline playbook, or the named one read from
    ``playbooks_dir``; validated. Raises :class:`PlaybookInvalid` (with JSON paths) on any problem."""
    playbook: Any = spec.playbook
    if spec.playbook_name is not None:
        playbook = load_playbook_file(resolve_named_playbook(spec.playbook_name, engine))
    if playbook is None:
        raise PlaybookInvalid.single("$", "give exactly one of playbook or playbook_name")
    validate_playbook(playbook, engine)
    if isinstance(playbook, dict):  # a playbook document {"name", "steps": [...]}
        playbook = playbook["steps"]
    return list(playbook)


def secret_refs(record: ScheduleRecord, engine: EngineSettings) -> tuple[SecretRef, ...]:
    """The ``{{secrets.NAME}}`` the schedule's jobs use, with JSON paths into the inline playbook as given
    (or into the named playbook's steps), as ``POST /cluster/jobs`` reports them. Validation is cached:
    this does not validate the playbook again."""
    playbook: Any = record.spec.playbook if record.spec.playbook is not None else record.steps
    return validate_playbook(playbook, engine).secret_refs


def definition_hash(record: ScheduleRecord, source: Source) -> str:
    """Changes whenever anything the schedule does changes (or who manages it)."""
    return hashlib.sha256(record_encoder.encode(record) + source.encode()).hexdigest()


def timing_hash(spec: ScheduleSpec) -> str:
    """Changes whenever the slots change: a new hash resets the pending slot to the first one after now."""
    cron = parse_cron(spec.cron) if spec.cron is not None else None
    parts = [cron, spec.every, spec.timezone if cron is not None else None, spec.jitter, spec.enabled]
    return hashlib.sha256(msgspec.json.encode(parts)).hexdigest()


def slot_job_id(cluster: str, name: str, slot: int) -> str:
    """The id of the job of one slot: derived from (cluster, schedule, slot), so the same slot can never
    give two jobs (storing a job whose key exists stores nothing)."""
    return "job-" + hashlib.sha256(f"{cluster}\0{name}\0{slot}".encode()).hexdigest()[:32]


def schedule_job(record: ScheduleRecord, *, job_id: str, slot: int, now_ms: int, node_id: str,
                 default_max_retries: int, submitted_by: str | None = None) -> Job:
    """The pending job of ``slot`` (or of a trigger at ``slot`` = now), as ``POST /cluster/jobs`` would
    store it; ``submitted_by`` defaults to ``schedule:<name>``."""
    spec = record.spec
    return Job(
        id=job_id,
        max_retries=default_max_retries if spec.max_retries is None else spec.max_retries,
        priority=spec.priority,
        submitted_at=iso_ms(now_ms),
        submitted_to=node_id,
        submitted_by=submitted_by or f"schedule:{spec.name}",
        schedule=spec.name,
        scheduled_for=iso_ms(slot),
        tags=list(spec.tags),
        tag_list=",".join(spec.tags) or None,
        affinity=spec.affinity,
        timeout=spec.timeout,
        playbook_name=spec.playbook_name,
        playbook=record.steps,
        context=spec.context,
    )
