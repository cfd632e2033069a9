"""What an action is: :class:`ActionSpec` (its typed fields and its coroutine) and what it receives.

An action module defines a fields struct (the types *after* template rendering) and an ``ACTION``
spec; the registry (:mod:`secauto.engine.actions`) picks it up by itself. An action signals failure
by raising :class:`~secauto.engine.errors.StepError`; it must let ``CancelledError`` propagate and
clean up whatever it started (processes, connections) when cancelled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import msgspec

from secauto.engine.model import Step
from secauto.engine.results import StepNotes, StepResult
from secauto.engine.settings import EngineSettings

if TYPE_CHECKING:
    from loguru import Logger

F = TypeVar("F", bound=msgspec.Struct)


class Runtime(Protocol):
    """The part of the runner that actions use (see :mod:`secauto.engine.runner`)."""

    settings: EngineSettings
    job_id: str | None
    log: Logger

    async def run_steps(self, steps: Sequence[Step], context: dict[str, Any]) -> list[StepResult]:
        """Run ``steps`` on ``context``; raises StepError (output = the results so far) on failure."""
        ...

    async def run_named(self, name: str, context: dict[str, Any]) -> list[StepResult]:
        """Load, validate and run the playbook ``name`` from playbooks_dir on ``context``."""
        ...

    def check_context(self, context: dict[str, Any]) -> None:
        """Raise a fatal StepError if ``context`` outgrew ``settings.max_context_bytes``."""
        ...


@dataclass(frozen=True, slots=True)
class ActionCall(Generic[F]):
    """One invocation: the step, its rendered and typed fields, the live context and the runtime."""

    step: Step
    fields: F
    context: dict[str, Any]
    runtime: Runtime
    notes: StepNotes = field(default_factory=StepNotes)  # filled by the action, recorded in the StepResult


@dataclass(frozen=True, slots=True)
class ActionSpec(Generic[F]):
    """An action: its name, fields struct, coroutine, and which fields hold steps or conditions."""

    name: str
    fields: type[F]
    run: Callable[[ActionCall[F]], Awaitable[Any]]
    step_lists: tuple[str, ...] = ()  # fields holding lists of nested steps
    required: tuple[str, ...] = ()  # step lists / conditions that must be present
    conditions: tuple[str, ...] = ()  # fields holding conditions
    # A field whose literal value names the step when it has no `name` ("run_script baseit.py").
    label_field: str | None = None
    # True when the action enforces the step's `timeout` itself (with a better message, e.g. the
    # script's stderr); the runner then only keeps a safety net a little past it.
    own_timeout: bool = False
    # Extra checks of single fields (e.g. a script name): a problem message, or None. Applied at
    # validation to literal values and at run time to rendered ones.
    field_checks: Mapping[str, Callable[[Any], str | None]] = field(default_factory=dict)
    # The fields that may reference stored secrets ({{secrets.NAME}}); see secauto.engine.secrets.
    secret_fields: tuple[str, ...] = ()
