"""``play``: run the named playbook from ``engine.playbooks_dir`` on the same context.

The name is confined to the folder (see :func:`~secauto.engine.loader.resolve_named_playbook`); the
sub-playbook is validated before it runs. The step's result is the sub-playbook's step results. A
failing sub-step fails this step (and carries the results so far). Nesting is limited to
``engine.max_depth`` levels, which turns endless recursion into a clear, fatal error.
"""

from __future__ import annotations

from typing import Any

import msgspec

from secauto.engine.actions.base import ActionCall, ActionSpec
from secauto.engine.loader import playbook_name_problem


class PlayFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    playbook: str


async def _run(call: ActionCall[PlayFields]) -> list[Any]:
    results = await call.runtime.run_named(call.fields.playbook, call.context)
    output: list[Any] = msgspec.to_builtins(results)
    return output


ACTION = ActionSpec(
    name="play",
    fields=PlayFields,
    run=_run,
    label_field="playbook",
    field_checks={"playbook": playbook_name_problem},
)
