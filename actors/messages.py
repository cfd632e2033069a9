"""The typed messages the node's actors exchange (and the API asks them)."""

from __future__ import annotations

import msgspec

from secauto.models import Job, NodeInfo


# --- Dispatcher ---------------------------------------------------------------------------------
class SubmitJobs(msgspec.Struct, frozen=True):
    """Ask: store and queue jobs. Answers the number stored."""

    jobs: list[Job]


class GetJob(msgspec.Struct, frozen=True):
    """Ask: the stored JSON of a job (bytes) or None."""

    job_id: str


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


class JobDone(msgspec.Struct, frozen=True):
    """Tell (a job's task -> its executor): the attempt ended."""

    job_id: str
    status: str  # completed | failed | abandoned (not written: lease lost or shutdown)


class RenewLeases(msgspec.Struct, frozen=True):
    """Timer: renew the leases of every running job in one call."""


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


class Drain(msgspec.Struct, frozen=True):
    """Ask: wait up to ``grace`` seconds for running jobs, then abandon the rest (their leases expire
    or, with issue-4 hand-back, are returned). Answers the number of jobs still running at the end."""

    grace: float


# --- Heartbeat ----------------------------------------------------------------------------------
class Beat(msgspec.Struct, frozen=True):
    """Timer: publish the node record."""


class CheckHealth(msgspec.Struct, frozen=True):
    """Ask: is Redis reachable? Answers a HealthReport."""


class HealthReport(msgspec.Struct, frozen=True):
    healthy: bool
    reason: str | None = None


# --- Discovery ----------------------------------------------------------------------------------
class Refresh(msgspec.Struct, frozen=True):
    """Timer or event: re-read the registry."""


class NodeLeft(msgspec.Struct, frozen=True):
    node_id: str


class GetClusterView(msgspec.Struct, frozen=True):
    """Ask: the live view of the cluster (a ClusterView)."""


class ClusterView(msgspec.Struct, frozen=True):
    nodes: list[NodeInfo]
    leader: str | None
    queue_size: int


# --- Reaper -------------------------------------------------------------------------------------
class Elect(msgspec.Struct, frozen=True):
    """Timer: acquire or renew the leader lease."""


class Reap(msgspec.Struct, frozen=True):
    """Timer: (leader only) recover jobs whose lease expired."""


class IsLeader(msgspec.Struct, frozen=True):
    """Ask: does this node hold the leader lease? Answers bool."""
