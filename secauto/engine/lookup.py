"""Reading values out of the context by path: ``alert.sender``, ``hosts.0.ip``, ``items.-1``.

Rules (shared by templates and ``{"var": ...}``):

* an exact top-level key is tried first, so a key containing dots (``"a.b"``) is reachable;
* ``context`` alone is the whole context (unless the context has a key named ``context``);
* otherwise the path is split on dots and walked: maps by key, lists by integer index (negative
  indexes count from the end).

A path that does not resolve raises :class:`MissingVariable`, whose message names the path and the
segment that failed. Nothing here mutates the context.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from secauto.engine.errors import StepError

_INDEX = re.compile(r"^-?[0-9]{1,9}$")
# A path is one or more non-empty segments; segments hold anything but dots, braces, pipes and quotes.
PATH_RE = re.compile(r"^[^.{}|\"'\s]+(\.[^.{}|\"'\s]+)*$")
MAX_PATH_LENGTH = 256


class MissingVariable(StepError):
    """A path that names nothing in the context."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"unknown variable {path!r} ({detail})")
        self.path = path


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a valid variable path, or None when it is."""
    if not path:
        return "empty variable path"
    if len(path) > MAX_PATH_LENGTH:
        return f"variable path longer than {MAX_PATH_LENGTH} characters"
    if not PATH_RE.fullmatch(path):
        return f"bad variable path {path!r} (use dotted names such as alert.sender or hosts.0.ip)"
    return None


def lookup(context: Mapping[str, Any], path: str) -> Any:
    """The value at ``path`` in ``context``; raises :class:`MissingVariable` if there is none."""
    if path in context:
        return context[path]
    if path == "context":
        return context
    current: Any = context
    walked: list[str] = []
    for segment in path.split("."):
        if isinstance(current, Mapping):
            if segment not in current:
                where = ".".join(walked) or "the context"
                raise MissingVariable(path, f"no {segment!r} in {where}")
            current = current[segment]
        elif isinstance(current, list):
            if not _INDEX.match(segment):
                raise MissingVariable(path, f"{'.'.join(walked)} is a list; {segment!r} is not an index")
            index = int(segment)
            if not -len(current) <= index < len(current):
                raise MissingVariable(path, f"index {index} out of range for {'.'.join(walked)}")
            current = current[index]
        else:
            kind = "null" if current is None else type(current).__name__
            raise MissingVariable(path, f"{'.'.join(walked)} is {kind}, not an object or list")
        walked.append(segment)
    return current
