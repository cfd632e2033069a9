"""What a run produces: one :class:`StepResult` per executed step and a :class:`PlaybookResult`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

StepStatus = Literal["completed", "failed", "skipped"]
# How a run_script step's script was run: a fork of the node's warm runner, or a fresh interpreter.
RunnerMode = Literal["warm", "spawn"]


class StepResult(msgspec.Struct, kw_only=True):
    """The record of one step. ``output`` is the action's result (see the README, "Playbooks")."""

    name: str
    action: str
    status: str  # "completed" | "failed" | "skipped"
    started_at: str  # RFC 3339, UTC
    duration_ms: float
    output: Any = None
    error: str | None = None
    # run_script: "warm" (a fork of the node's warm runner) or "spawn" (a fresh interpreter), for the
    # step's last attempt; None for other actions.
    runner: RunnerMode | None = None


@dataclass(slots=True)
class StepNotes:
    """What an action reports about how it ran a step, beside its output (one per step, shared by its
    attempts: the last attempt's values are recorded in the :class:`StepResult`)."""

    runner: RunnerMode | None = None


class PlaybookResult(msgspec.Struct, kw_only=True):
    """The outcome of ``run_playbook``: ``success`` is false when a step failed the playbook."""

    success: bool
    results: list[StepResult]
    context: dict[str, Any]
    error: str | None = None


def utc_now() -> str:
    """The current time as RFC 3339 UTC with milliseconds (``2025-01-02T03:04:05.678Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
