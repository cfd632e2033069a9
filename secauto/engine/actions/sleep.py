"""``sleep``: wait ``seconds`` (at most a day); cancellable at any moment. The result is ``{}``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec

from secauto.engine.actions.base import ActionCall, ActionSpec


class SleepFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    seconds: Annotated[float, msgspec.Meta(ge=0, le=86_400)]


async def _run(call: ActionCall[SleepFields]) -> dict[str, object]:
    await asyncio.sleep(call.fields.seconds)
    return {}


ACTION = ActionSpec(name="sleep", fields=SleepFields, run=_run)
