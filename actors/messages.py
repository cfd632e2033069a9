"""The typed messages the node's actors exchange (and the API asks them)."""

from __future__ import annotations

import msgspec

from secauto.models import Job, NodeInfo
from secauto.schedules.definition import ScheduleRecord


# --- Dispatcher ---------------------------------------------------------------------------------
class GetJob(msgspec.Struct, frozen=True):
    """Ask: the stored JSON of a job (bytes) or None."""

    job_id: str


class GetDependencyState(msgspec.Struct, frozen=True):
    """Ask: (the dependencies job ``job_id`` still waits on, the current status of each of
    ``depends_on`` or None where its record is gone)."""

    job_id: str
    depends_on: list[str]


class CancelJob(msgspec.Struct, frozen=True):
    """Ask: cancel a waiting, pending or running job (and settle its dependents). Answers its status
    before the call, or None if unknown."""

    job_id: str


class RequeueJob(msgspec.Struct, frozen=True):
    """Ask: put a failed or cancelled job back in the queue. Answers a RequeueResult (the status
    before: None for an unknown job, ``not_dead`` when ``only_dead`` and the job is not in the DLQ;
    the status after, None when nothing changed)."""

    job_id: str
    only_dead: bool = False


class ForgetJob(msgspec.Struct, frozen=True):
    """Ask: delete a dead-lettered job. Answers True, or False if it is not in the DLQ."""

    job_id: str


class ListDeadLetters(msgspec.Struct, frozen=True):
    """Ask: (DLQ size, records of the newest entries from offset)."""

    offset: int
    limit: int


class ListJobs(msgspec.Struct, frozen=True):
    """Ask: up to ``scan`` (index score, record) pairs, newest first, before ``before``; and whether
    more remain."""

    before: float | None
    scan: int


class RecentEnds(msgspec.Struct, frozen=True):
    """Ask: the latest attempt ends ("end_ms status node duration_ms"), newest first."""


class Wake(msgspec.Struct, frozen=True):
    """Tell: there may be work in the queue (pub/sub notification, poll timer or freed slots)."""


class JobsFinished(msgspec.Struct, frozen=True):
    """Tell (executor -> dispatcher): ``count`` slots are free again."""

    count: int


class StopClaiming(msgspec.Struct, frozen=True):
    """Ask: claim nothing more (graceful shutdown)."""


# --- Executor -----------------------------------------------------------------------------------
class RunJobs(msgspec.Struct, frozen=True):
    """Tell (dispatcher -> executor): run these claimed jobs."""

    jobs: list[Job]


class StopAttempts(msgspec.Struct, frozen=True):
    """Tell: stop these running attempts now, writing nothing (lease lost, or the job was cancelled)."""

    job_ids: list[str]
    reason: str


class GetStats(msgspec.Struct, frozen=True):
    """Ask: the executor's counters."""


class ExecutorStats(msgspec.Struct, frozen=True):
    running: int
    completed: int
    failed: int
    capacity: int

    @property
    def load(self) -> float:
        return round(self.running / self.capacity, 4) if self.capacity else 0.0


class HandBack(msgspec.Struct, frozen=True):
    """Ask (graceful stop, after the grace period): stop the attempts still running and hand their
    jobs back to the queue. Answers the number handed back."""


# --- Heartbeat ----------------------------------------------------------------------------------
class Beat(msgspec.Struct, frozen=True):
    """Timer: publish the node record."""


class SetStatus(msgspec.Struct, frozen=True):
    """Ask: change the status in the node record (``draining`` at shutdown) and publish it now."""

    status: str


class CheckStorage(msgspec.Struct, frozen=True):
    """Timer (cluster mode): is Redis' eviction policy safe for SecAuto's keys?"""


class CheckPrimary(msgspec.Struct, frozen=True):
    """Timer (Sentinel only): has the Redis primary moved?"""


class CheckHealth(msgspec.Struct, frozen=True):
    """Ask: is Redis reachable? Answers a HealthReport."""


class HealthReport(msgspec.Struct, frozen=True):
    healthy: bool
    reason: str | None = None
    warnings: tuple[str, ...] = ()  # problems that do not make the node unready (Redis eviction policy)


# --- Discovery ----------------------------------------------------------------------------------
class Refresh(msgspec.Struct, frozen=True):
    """Timer or event: re-read the registry."""


class MembershipEvent(msgspec.Struct, frozen=True):
    """Tell (dispatcher -> discovery): a node./leader. event payload, or b"" after a resubscription."""

    payload: bytes


class GetClusterView(msgspec.Struct, frozen=True):
    """Ask: the live view of the cluster (a ClusterView)."""


class ClusterView(msgspec.Struct, frozen=True):
    nodes: list[NodeInfo]
    leader: str | None
    queue_size: int  # every pending job
    queue_ready: int = 0  # the pending jobs that may start now (not held back by a delay or backoff)


# --- Reaper -------------------------------------------------------------------------------------
class Elect(msgspec.Struct, frozen=True):
    """Timer: acquire or renew the leader lease."""


class Reap(msgspec.Struct, frozen=True):
    """Timer: (leader only) recover jobs whose lease expired."""


class PrimaryMoved(msgspec.Struct, frozen=True):
    """Tell (heartbeat -> reaper): a Sentinel failover moved the Redis primary."""


class IsLeader(msgspec.Struct, frozen=True):
    """Ask: does this node hold the leader lease? Answers bool."""



# --- Scheduler ----------------------------------------------------------------------------------
class LeadershipChanged(msgspec.Struct, frozen=True):
    """Tell (reaper -> scheduler), after every election round: the leader lease token this node holds,
    or None. Only the holder fires schedules (the fire script checks the token again)."""

    token: str | None


class ScheduleTick(msgspec.Struct, frozen=True):
    """Timer: (leader only) fire the schedules that are due; sync config schedules until done."""


class SaveSchedule(msgspec.Struct, frozen=True):
    """Ask: store a definition (``mode`` create, replace or config). Answers an UpsertResult string."""

    record: ScheduleRecord
    mode: str


class ListSchedules(msgspec.Struct, frozen=True):
    """Ask: (Redis time ms, every StoredSchedule)."""


class GetSchedule(msgspec.Struct, frozen=True):
    """Ask: (Redis time ms, the StoredSchedule or None, its history entries as JSON bytes)."""

    name: str


class LatestOutcomes(msgspec.Struct, frozen=True):
    """Ask: each named schedule's newest recorded history entry (JSON bytes), or None, in order."""

    names: tuple[str, ...]


class DeleteSchedule(msgspec.Struct, frozen=True):
    """Ask: delete a schedule made through the API. Answers deleted, not_found or managed_by_config."""

    name: str


class PauseSchedule(msgspec.Struct, frozen=True):
    """Ask: pause (``resume`` False) or resume a schedule. Answers a PauseResult string."""

    name: str
    resume: bool
    note: str = ""


class TriggerSchedule(msgspec.Struct, frozen=True):
    """Ask: run one job of the schedule now. Answers the job id, or None for an unknown schedule."""

    name: str
    submitted_by: str | None = None
