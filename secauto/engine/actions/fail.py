"""``fail``: stop the playbook with ``message`` (rendered). The error is fatal: ``retry`` and
``on_error: continue`` do not apply, and it fails enclosing ``if``/``foreach``/``play`` steps too."""

from __future__ import annotations

from typing import Any

import msgspec

from secauto.engine.actions.base import ActionCall, ActionSpec
from secauto.engine.errors import StepError
from secauto.engine.templates import to_text


class FailFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    message: Any = "failed by the playbook"


async def _run(call: ActionCall[FailFields]) -> None:
    raise StepError(to_text(call.fields.message), fatal=True)


ACTION = ActionSpec(name="fail", fields=FailFields, run=_run)
