"""The action registry: every module in this package that defines ``ACTION`` is an action.

Adding an action is adding one module here with a fields struct and an ``ACTION = ActionSpec(...)``;
:func:`registry` finds it by itself (modules whose name starts with ``_`` and ``base`` are skipped).
Two modules declaring the same action name is a programming error (``RuntimeError`` at import).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from functools import cache
from typing import Any

from secauto.engine.actions.base import ActionCall, ActionSpec, Runtime

__all__ = ["ActionCall", "ActionSpec", "Runtime", "get_action", "registry"]


@cache
def registry() -> Mapping[str, ActionSpec[Any]]:
    """All actions by name, discovered once from this package's modules."""
    found: dict[str, ActionSpec[Any]] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_") or module_info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        spec = getattr(module, "ACTION", None)
        if not isinstance(spec, ActionSpec):
            continue
        if spec.name in found:
            raise RuntimeError(f"action {spec.name!r} is defined twice (second in {module.__name__})")
        found[spec.name] = spec
    return found


def get_action(name: str) -> ActionSpec[Any] | None:
    return registry().get(name)
