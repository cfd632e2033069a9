"""``foreach``: run ``steps`` once per element of ``items`` (usually a template such as ``{{hosts}}``).

Each iteration runs on its own shallow copy of the context with ``item`` (or the name given in ``as``)
and ``index`` added, so iterations never see each other's changes and the enclosing context is not
modified; collect results with the step's ``output`` option. ``concurrency`` (default 1, at most 64)
iterations run at once, in order of index.

The result has one entry per item that ran: ``{"index", "item", "success", "results"}`` plus
``"error"`` for a failed one. The first failing iteration stops the loop: no new iteration starts,
those already running finish, and the step fails with the entries so far. Cancellation cancels every
running iteration (killing their scripts) and propagates.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec

from secauto.engine.actions.base import ActionCall, ActionSpec
from secauto.engine.errors import StepError
from secauto.engine.lookup import path_problem


class ForeachFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    items: Annotated[list[Any], msgspec.Meta(max_length=100_000)]
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    as_: str = msgspec.field(name="as", default="item")


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or "." in name:
        return f"'as' must be a plain variable name, got {name!r}"
    return path_problem(name)


async def _run(call: ActionCall[ForeachFields]) -> list[dict[str, Any]]:
    items = call.fields.items
    steps = call.step.children.get("steps", ())
    runtime = call.runtime
    entries: list[dict[str, Any] | None] = [None] * len(items)
    failures: list[tuple[int, StepError]] = []
    indexes = iter(range(len(items)))

    async def worker() -> None:
        for index in indexes:  # shared by the workers: each takes the next index
            if failures:
                return
            item = items[index]
            scope = {**call.context, call.fields.as_: item, "index": index}
            try:
                results = await runtime.run_steps(steps, scope)
            except StepError as exc:
                failures.append((index, exc))
                entries[index] = {"index": index, "item": item, "success": False, "error": exc.message,
                                  "results": exc.output if isinstance(exc.output, list) else []}  # fmt: skip
                return
            entries[index] = {"index": index, "item": item, "success": True, "results": msgspec.to_builtins(results)}

    async with asyncio.TaskGroup() as group:
        for _ in range(min(call.fields.concurrency, len(items))):
            group.create_task(worker())
    done = [entry for entry in entries if entry is not None]
    if failures:
        index, first = min(failures, key=lambda failure: failure[0])
        raise StepError(f"item {index}: {first.message}", fatal=first.fatal, output=done)
    return done


ACTION = ActionSpec(
    name="foreach",
    fields=ForeachFields,
    run=_run,
    step_lists=("steps",),
    required=("steps",),
    field_checks={"as": _name_problem},
)
