"""Typed, validated playbooks: what :func:`~secauto.engine.validation.validate_playbook` returns.

A :class:`Step` keeps its action's fields as written (templates are rendered only when the step runs,
then converted to the action's typed fields struct); nested step lists (``then``/``else``/``steps``)
and conditions (``when``, ``condition``) are already parsed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from secauto.engine.conditions import Expr

OnError = Literal["fail", "continue"]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``attempts`` is the total number of tries (first included); the delay grows by ``backoff``."""

    attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    delay: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 0.0
    backoff: Annotated[float, msgspec.Meta(ge=1, le=100)] = 1.0


class StepOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The options every step may carry, next to its action's fields."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=86_400)] | None = None
    retry: RetryPolicy = RetryPolicy()
    on_error: OnError = "fail"
    output: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    strict_templates: bool = True


OPTION_KEYS = frozenset({"name", "when", "timeout", "retry", "on_error", "output", "strict_templates"})


class SecretRef(msgspec.Struct, frozen=True):
    """A ``{{secrets.NAME}}`` in a playbook: the secret's name and the JSON path of the value using it."""

    name: str
    path: str


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One validated step."""

    action: str
    path: str  # JSON path in the document it came from, e.g. "$[2]" or "$[0].then[1]"
    name: str  # the step's `name`, else the action name
    fields: dict[str, Any]  # the action's own fields, unrendered
    options: StepOptions
    when: Expr | None = None
    conditions: dict[str, Expr] = {}  # e.g. the `if` action's "condition"
    children: dict[str, tuple[Step, ...]] = {}  # e.g. "then"/"else", "steps"
    secrets: tuple[str, ...] = ()  # the secrets its own fields reference, revealed when it runs


class Playbook(msgspec.Struct, frozen=True, kw_only=True):
    """A validated playbook: its steps, and the total number of steps including nested ones."""

    steps: tuple[Step, ...]
    step_count: int
    name: str | None = None
    description: str | None = None
    # Every secret referenced by the document's steps (nested ones included; not by playbooks that
    # `play` loads at run time): the API checks that they exist before accepting a job.
    secret_refs: tuple[SecretRef, ...] = ()
