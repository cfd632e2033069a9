"""``log``: write ``message`` (rendered; non-strings as JSON) to the engine's log at ``level``.

The step's result is ``{"message": <rendered text>}``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from secauto.engine.actions.base import ActionCall, ActionSpec
from secauto.engine.templates import to_text

Level = Literal["trace", "debug", "info", "success", "warning", "error", "critical"]


class LogFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    message: Any
    level: Level = "info"


async def _run(call: ActionCall[LogFields]) -> dict[str, str]:
    text = to_text(call.fields.message)
    call.runtime.log.bind(step=call.step.name).log(call.fields.level.upper(), "{}", text)
    return {"message": text}


ACTION = ActionSpec(name="log", fields=LogFields, run=_run)
