"""What a schedule is: its definition (from ``schedules:`` in config.yaml or from the API) and the checks
msgspec cannot express (exactly one of cron or every, a parsable cron, a known time zone).

The job fields are those of ``POST /cluster/jobs`` (without ``delay``/``run_at``: the schedule decides
when). A definition is checked twice: by msgspec when it is decoded (types, bounds, unknown fields) and
by :func:`definition_problems`; the playbook is resolved and validated by
:func:`secauto.schedules.definition.resolve_steps`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from secauto.models import MAX_PRIORITY, MIN_PRIORITY

# Anchored the same way for msgspec (Python's re) and for JSON Schema validators of /openapi.json. Names
# made only of dots are refused: URLs normalise `/schedules/..` to another path, so they could never be
# opened, paused or deleted.
SCHEDULE_NAME_PATTERN = r"^(?!\.+$)(?:[A-Za-z0-9_.-]{1,100})(?!\n)$"
ScheduleName = Annotated[str, msgspec.Meta(pattern=SCHEDULE_NAME_PATTERN,
                                           description="letters, digits, '_', '.', '-'; at most 100; not only dots")]
_Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^(?:[A-Za-z0-9_.:-]+)(?!\n)$")]

Overlap = Literal["skip", "buffer_one", "allow"]
Catchup = Literal["latest", "none", "all"]

MAX_EVERY_S = 366 * 86400
MAX_JITTER_S = 3600
MAX_CATCHUP_WINDOW_S = 366 * 86400


class ScheduleFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every field of a definition except its name (``PUT /schedules/{name}`` takes the name from the path)."""

    cron: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    every: Annotated[float, msgspec.Meta(ge=1, le=MAX_EVERY_S)] | None = None
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"
    playbook: list[Any] | None = None
    playbook_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    context: dict[str, Any] = {}
    priority: Annotated[int, msgspec.Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY)] = 0
    tags: Annotated[list[_Tag], msgspec.Meta(max_length=32)] = []
    affinity: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)] | None = None
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    overlap: Overlap = "skip"
    catchup: Catchup = "latest"
    catchup_window: Annotated[float, msgspec.Meta(ge=0, le=MAX_CATCHUP_WINDOW_S)] = 3600.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=MAX_JITTER_S)] = 0.0
    enabled: bool = True


class ScheduleSpec(ScheduleFields, kw_only=True, forbid_unknown_fields=True):
    """A complete definition: the body of ``POST /schedules`` and one entry of ``schedules:``."""

    name: ScheduleName


class ScheduleReplacement(ScheduleFields, kw_only=True, forbid_unknown_fields=True):
    """The body of ``PUT /schedules/{name}``: the name may be repeated (it must then match the path)."""

    name: ScheduleName | None = None


def with_name(fields: ScheduleFields, name: str) -> ScheduleSpec:
    """``fields`` as a complete definition named ``name``."""
    values = {field: getattr(fields, field) for field in ScheduleFields.__struct_fields__}
    return ScheduleSpec(name=name, **values)


def definition_problems(spec: ScheduleFields) -> list[tuple[str, str]]:
    """What is wrong with the timing and playbook fields beyond their types, as ``(field, message)``
    pairs (empty: nothing)."""
    from secauto.schedules.timing import CronError, parse_cron, zone_problem

    problems: list[tuple[str, str]] = []
    if (spec.cron is None) == (spec.every is None):
        problems.append(("cron", "give exactly one of cron or every"))
    elif spec.cron is not None:
        try:
            parse_cron(spec.cron)
        except CronError as exc:
            problems.append(("cron", str(exc)))
    zone = zone_problem(spec.timezone)
    if zone is not None:
        problems.append(("timezone", zone))
    if spec.every is not None and spec.jitter >= spec.every:
        problems.append(("jitter", "must be less than every (jitter may not reorder the slots)"))
    if (spec.playbook is None) == (spec.playbook_name is None):
        problems.append(("playbook", "give exactly one of playbook or playbook_name"))
    return problems
