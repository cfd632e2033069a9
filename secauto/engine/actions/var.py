"""``var`` (the classic ``{"var": "a.b.0"}`` step): the step's result is the value at ``path``.

A missing path fails the step naming it, unless ``default`` is given (or the step has
``strict_templates: false``, which gives null).
"""

from __future__ import annotations

from typing import Any

import msgspec

from secauto.engine.actions.base import ActionCall, ActionSpec
from secauto.engine.lookup import MissingVariable, lookup, path_problem
from secauto.engine.secrets import WHERE_ALLOWED, is_secret_path

_NO_DEFAULT: Any = msgspec.UNSET


class VarFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    path: str
    default: Any = _NO_DEFAULT


async def _run(call: ActionCall[VarFields]) -> Any:
    try:
        return lookup(call.context, call.fields.path)
    except MissingVariable:
        if call.fields.default is not _NO_DEFAULT:
            return call.fields.default
        if not call.step.options.strict_templates:
            return None
        raise


def _path_problem(path: Any) -> str | None:
    if not isinstance(path, str):
        return None  # the type check reports it
    return path_problem(path) or (WHERE_ALLOWED if is_secret_path(path) else None)


ACTION = ActionSpec(name="var", fields=VarFields, run=_run, field_checks={"path": _path_problem})
