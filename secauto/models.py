"""Typed records shared by the store, the actors and the API: jobs, node records and events.

All of them travel as JSON (msgspec). The job record's first fields form a *header* that the Lua
scripts in ``store/lua`` read and rewrite without decoding the rest of the record (Redis' cjson would
turn empty lists into objects and round large numbers), so the header's field order below is part of
the storage format: keep it in step with ``HEADER`` in ``store/lua/lib.lua``.
"""

from __future__ import annotations

import functools
import os
import time
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

# waiting: some of its dependencies (depends_on) have not ended yet; it is in no queue.
JobStatus = Literal["waiting", "pending", "running", "completed", "failed", "cancelled"]
FINISHED_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
# What a job does when one of its dependencies ends failed or cancelled for good.
DependencyFailurePolicy = Literal["cancel", "run"]

# Priorities are bounded so that the queue score (-priority * 1e12 + sequence) stays exact in a double.
MIN_PRIORITY = -1000
MAX_PRIORITY = 1000


def utc_now() -> str:
    """The current time as RFC 3339 UTC with milliseconds, e.g. ``2024-01-15T10:35:00.123Z``."""
    return format_timestamp(time.time())


def format_timestamp(epoch: float) -> str:
    seconds = int(epoch)
    return f"{_second_prefix(seconds)}.{int((epoch - seconds) * 1000):03d}Z"


@functools.lru_cache(maxsize=4)
def _second_prefix(seconds: int) -> str:
    # Timestamps are formatted thousands of times a second under load; the date part rarely changes.
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def new_job_id() -> str:
    """``job-`` and 32 random hex digits (128 bits from os.urandom: uuid4's randomness without its
    object, which cost more than the rest of the id on the submit path)."""
    return f"job-{os.urandom(16).hex()}"


class Attempt(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One try of a job: where and when it ran and how it ended."""

    attempt: int
    node: str
    started_at: str | None = None
    ended_at: str | None = None
    # completed, failed, timeout, node_lost, handed_back, cancelled
    outcome: str
    error: str | None = None


class Job(msgspec.Struct, kw_only=True):
    """A job as stored at ``secauto:job:<id>`` and returned by ``GET /cluster/jobs/{id}``."""

    # --- header: rewritten by the Lua scripts; order and types are the storage format ---
    id: str
    status: JobStatus = "pending"
    attempt: int = 0  # the fencing token: each claim increments it, every later write must match it
    retry_count: int = 0
    max_retries: int = 3
    priority: int = 0
    assigned_to: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    error: str | None = None
    # Why the job failed or was dead-lettered: playbook_error, timeout, node_lost, poison, cancelled,
    # dependency_failed.
    reason: str | None = None
    node_losses: int = 0  # attempts that ended with their node lost (poison-job detection)
    avoid_node: str | None = None  # a retry prefers another node than this one ...
    avoid_until: int = 0  # ... until this time (ms since the epoch, Redis clock)
    affinity: str | None = None
    target: str | None = None  # round robin: the node picked at submission
    enqueued_at: int = 0  # when it last became claimable (ms since the epoch, Redis clock)
    tag_list: str | None = None  # the tags, comma-separated, for the Lua scripts' tag limits
    # Dependencies: the policy, and the dependencies' ids comma-separated for the Lua scripts (which
    # release, cancel and keep alive along these edges). These two and depends_on/dependency_keys below
    # are absent (UNSET) from the record of a job without dependencies: most jobs have none, and every
    # script that rewrites a record copies all of it. lib.lua reads an absent one as null.
    on_dependency_failure: DependencyFailurePolicy | UnsetType = UNSET
    parent_list: str | UnsetType = UNSET
    # --- body: written by Python, except `attempts`, to which Lua appends (it must stay last) ---
    submitted_at: str
    submitted_to: str  # the node whose API accepted the job
    submitted_by: str | None = None  # the name of the API key that submitted it, or schedule:<name>
    schedule: str | None = None  # the schedule that created it
    scheduled_for: str | None = None  # RFC 3339 UTC: the schedule's slot (the trigger time for a trigger)
    tags: list[str] = []
    timeout: float | None = None
    run_at: str | None = None  # RFC 3339: not started before this time (from run_at, for display)
    playbook_name: str | None = None
    # the ids of the jobs this one waits for, as submitted (batch keys resolved)
    depends_on: list[str] | UnsetType = UNSET
    dependency_keys: dict[str, str] | UnsetType = UNSET  # dependency id -> its batch key, if named by key
    playbook: list[Any] = []
    context: dict[str, Any] = {}
    results: list[Any] = []
    attempts: list[Attempt] = []


class DependencyOutcome(msgspec.Struct, kw_only=True):
    """Only what a dependent's run reads of a stored job: its status and final context."""

    status: JobStatus
    context: dict[str, Any] = {}


class JobDependencies(msgspec.Struct, kw_only=True):
    """Only the dependency fields of a stored job (a cheap decode of the record)."""

    depends_on: list[str] = []
    dependency_keys: dict[str, str] = {}


class DependencyState(msgspec.Struct, kw_only=True):
    """One dependency as a job's view shows it: its id and its current status (null once its record
    is gone: expired or deleted from the dead-letter queue)."""

    id: str
    status: JobStatus | None


class JobView(msgspec.Struct, kw_only=True):
    """A job as the API shows it (``GET /cluster/jobs/{id}``, the DLQ): the cluster document's fields
    plus what users need to follow a job, without the bookkeeping that only the Lua scripts read
    (``node_losses``, ``avoid_node``, ``avoid_until``, ``target``, ``enqueued_at``, ``tag_list``,
    ``parent_list``, ``dependency_keys``).

    Decoded straight from the stored record: fields not listed here are skipped by the decoder.
    ``waiting_on`` and ``dependencies`` are not stored in the record: ``GET /cluster/jobs/{id}`` fills
    them in from the store (``secauto.api.cluster.with_dependencies``); they stay empty elsewhere and for
    a job without dependencies.
    """

    id: str
    status: JobStatus
    playbook_name: str | None = None
    playbook: list[Any] = []
    context: dict[str, Any] = {}
    submitted_at: str
    submitted_by: str | None = None
    submitted_to: str
    schedule: str | None = None  # null unless a schedule created the job
    scheduled_for: str | None = None  # the slot it ran for (RFC 3339 UTC); null unless from a schedule
    started_at: str | None = None
    completed_at: str | None = None
    assigned_to: str | None = None  # the node running it, or the one that ran its last attempt
    results: list[Any] = []
    error: str | None = None
    # Why the job failed or was dead-lettered: playbook_error, timeout, node_lost, poison, cancelled,
    # dependency_failed.
    reason: str | None = None
    attempt: int = 0  # attempts started so far; the latest one's fencing token
    retry_count: int = 0
    max_retries: int = 3
    priority: int = 0
    tags: list[str] = []
    affinity: str | None = None
    timeout: float | None = None
    run_at: str | None = None
    depends_on: list[str] = []
    on_dependency_failure: DependencyFailurePolicy | None = None
    waiting_on: list[str] = []  # the dependencies that have not ended yet (only while waiting)
    dependencies: dict[str, DependencyState] = {}  # by batch key, else job id
    attempts: list[Attempt] = []


class NodeView(msgspec.Struct, kw_only=True):
    """A node as the document's node object shows it (``GET /cluster``)."""

    id: str
    host: str
    port: int
    status: str  # active | draining | inactive (inactive is only ever computed by readers)
    started_at: str
    last_seen: str
    capabilities: list[str]
    load: float
    jobs_running: int
    jobs_completed: int
    jobs_failed: int
    capacity: int
    version: str

    @classmethod
    def of(cls, node: NodeView) -> NodeView:
        """The view of a node record (dropping what only the record carries)."""
        return NodeView(**{name: getattr(node, name) for name in NodeView.__struct_fields__})


class NodeInfo(NodeView, kw_only=True):
    """The node record at ``secauto:nodes:<cluster>:<node_id>``: the view plus what readers need."""

    last_seen_epoch: float  # for staleness checks without parsing timestamps


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A lifecycle event on ``secauto:events:<cluster>``.

    ``type`` is always the first key of the JSON so that subscribers can route on a byte prefix.
    The Lua scripts emit the same shape (see ``event()`` in ``store/lua/lib.lua``).
    """

    type: str
    version: int
    timestamp: str
    job_id: str | None = None
    node_id: str | None = None
    status: str | None = None
    attempt: int | None = None
    priority: int | None = None
    error: str | None = None
    reason: str | None = None
    schedule: str | None = None  # schedule.* events (and their job's)
    scheduled_for: str | None = None


EVENT_VERSION = 1
EVENT_TYPES = frozenset({
    "job.submitted", "job.started", "job.completed", "job.failed", "job.retrying", "job.dead_lettered",
    "job.cancelled", "job.requeued", "job.released", "node.joined", "node.left", "leader.changed",
    "schedule.fired", "schedule.skipped", "schedule.missed",
})


def make_event(kind: str, *, timestamp: str | None = None, **fields: Any) -> Event:
    """An event of type ``kind``, stamped now unless ``timestamp`` is given (events published together
    share one)."""
    return Event(type=kind, version=EVENT_VERSION, timestamp=timestamp or utc_now(), **fields)


json_encoder = msgspec.json.Encoder()
job_decoder = msgspec.json.Decoder(Job)
job_view_decoder = msgspec.json.Decoder(JobView)
job_dependencies_decoder = msgspec.json.Decoder(JobDependencies)
dependency_outcome_decoder = msgspec.json.Decoder(DependencyOutcome)
node_decoder = msgspec.json.Decoder(NodeInfo)
event_decoder = msgspec.json.Decoder(Event)
