"""What a run produces: one :class:`StepResult` per executed step and a :class:`PlaybookResult`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

StepStatus = Literal["completed", "failed", "skipped"]


class StepResult(msgspec.Struct, kw_only=True):
    """The record of one step. ``output`` is the action's result (see the README, "Playbooks")."""

    name: str
    action: str
    status: str  # "completed" | "failed" | "skipped"
    started_at: str  # RFC 3339, UTC
    duration_ms: float
    output: Any = None
    error: str | None = None


class PlaybookResult(msgspec.Struct, kw_only=True):
    """The outcome of ``run_playbook``: ``success`` is false when a step failed the playbook."""

    success: bool
    results: list[StepResult]
    context: dict[str, Any]
    error: str | None = None


def utc_now() -> str:
    """The current time as RFC 3339 UTC with milliseconds (``2025-01-02T03:04:05.678Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
