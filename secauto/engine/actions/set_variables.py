"""``set``: ``variables: {name: value}`` are rendered and stored as top-level context keys.

The step's result is the rendered variables. No error cases beyond template errors.
"""

from __future__ import annotations

from typing import Any

import msgspec

from secauto.engine.actions.base import ActionCall, ActionSpec


class SetFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    variables: dict[str, Any]


async def _run(call: ActionCall[SetFields]) -> dict[str, Any]:
    call.context.update(call.fields.variables)
    return call.fields.variables


ACTION = ActionSpec(name="set", fields=SetFields, run=_run)
