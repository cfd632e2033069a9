"""``run_script``: run ``<scripts_dir>/<script>`` with the context overlaid by ``parameters``.

The script's JSON object is merged into the context (top-level keys replace), except the classic key
``incident_updates``, which is merged key by key into ``context["incident"]``; the object is the step's
result. The step result's ``runner`` says whether the script ran warm or spawned. The script's
timeout is the step's ``timeout``, else ``engine.script_timeout``. Failures and
cancellation: see :mod:`secauto.engine.scripts`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from secauto.engine.actions.base import ActionCall, ActionSpec
from secauto.engine.scripts import run_script, script_name_problem


class RunScriptFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    script: str
    parameters: dict[str, Any] = {}


def merge_output(context: dict[str, Any], output: dict[str, Any]) -> None:
    """Merge a script's object into the context (replacing top-level keys only, never in place)."""
    for key, value in output.items():
        if key == "incident_updates" and isinstance(value, dict):
            current = context.get("incident")
            context["incident"] = {**(current if isinstance(current, dict) else {}), **value}
        else:
            context[key] = value


async def _run(call: ActionCall[RunScriptFields]) -> dict[str, Any]:
    payload = {**call.context, **call.fields.parameters}
    runtime = call.runtime
    runtime.log.debug("running script {}", call.fields.script)
    output = await run_script(call.fields.script, payload, runtime.settings, time_limit=call.step.options.timeout,
                              notes=call.notes, log=runtime.log)
    merge_output(call.context, output)
    return output


ACTION = ActionSpec(
    name="run_script",
    fields=RunScriptFields,
    run=_run,
    label_field="script",
    own_timeout=True,
    field_checks={"script": script_name_problem},
    secret_fields=("parameters",),
)
