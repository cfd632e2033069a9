"""``if``: evaluate ``condition``, then run the ``then`` or the ``else`` steps on the same context.

The result is ``{"condition": bool, "branch": "then"|"else"|null, "results": [...]}`` (``branch`` is
null when the chosen list is absent). A condition error (a missing variable, an ordering comparison on
a string...) fails the step; a failing nested step fails this step with the nested results so far.
"""

from __future__ import annotations

from typing import Any

import msgspec

from secauto.engine.actions.base import ActionCall, ActionSpec
from secauto.engine.conditions import holds


class IfFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass  # `condition`, `then` and `else` are parsed by validation (Step.conditions / Step.children)


async def _run(call: ActionCall[IfFields]) -> dict[str, Any]:
    step = call.step
    verdict = await holds(step.conditions["condition"], call.context, strict=step.options.strict_templates)
    branch = "then" if verdict else "else"
    steps = step.children.get(branch)
    if steps is None:
        return {"condition": verdict, "branch": None, "results": []}
    call.runtime.log.debug("if {}: condition is {}, running '{}'", step.path, verdict, branch)
    results = await call.runtime.run_steps(steps, call.context)
    return {"condition": verdict, "branch": branch, "results": msgspec.to_builtins(results)}


ACTION = ActionSpec(
    name="if",
    fields=IfFields,
    run=_run,
    conditions=("condition",),
    step_lists=("then", "else"),
    required=("condition", "then"),
)
