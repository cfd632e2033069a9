"""A msgspec conversion error as a :class:`Problem` whose path names the field that is wrong or missing.

msgspec says *where* a value failed, but not always down to the field: an unknown or missing field is
reported at the object that holds it (``Object contains unknown field `tries` - at `$.retry```), and a
value inside a dict is reported as ``$[...]`` whatever its key. :func:`type_problem` completes the
path: it appends the unknown or missing field's name, and finds the key behind each ``[...]`` by
converting the value again with that dict cut down to one entry at a time (only on the error path).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from secauto.engine.errors import Problem, child_path

_AT = re.compile(r" - at `(?:key` in `)?\$(.*)`$")
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]|(\[\.\.\.\])")
_NAMED_FIELD = re.compile(r"^Object (?:contains unknown|missing required) field `([^`]+)`$")

Key = str | int
_UNKNOWN_KEY = None  # a dict key msgspec did not name ("[...]")


def type_problem(exc: msgspec.ValidationError, value: Any, target_type: Any, path: str) -> Problem:
    """The problem behind ``exc`` (raised by ``msgspec.convert(value, target_type)``) at ``path`` + the
    offending part of ``value``. Never raises: a path it cannot complete stops at the last part it knows."""
    keys, message = _locate(exc)
    if keys is not None and _UNKNOWN_KEY in keys:
        keys = _pin_dict_keys(keys, value, target_type)
    where = path
    for key in keys or ():
        if key is None:
            break
        where = child_path(where, key)
    return Problem(where, message)


def _locate(exc: msgspec.ValidationError) -> tuple[list[Key | None] | None, str]:
    """(the keys msgspec named, or None if its path is not understood; the message)."""
    text = str(exc)
    match = _AT.search(text)
    message, sub = (text[: match.start()], match.group(1)) if match else (text, "")
    keys = _parse(sub)
    named = _NAMED_FIELD.match(message)
    if named is not None and keys is not None:
        keys.append(named.group(1))
    return keys, message


def _parse(sub: str) -> list[Key | None] | None:
    keys: list[Key | None] = []
    pos = 0
    while pos < len(sub):
        match = _SEGMENT.match(sub, pos)
        if match is None:
            return None
        name, index, _ = match.groups()
        keys.append(name if name is not None else int(index) if index is not None else _UNKNOWN_KEY)
        pos = match.end()
    return keys


def _pin_dict_keys(keys: list[Key | None], value: Any, target_type: Any) -> list[Key | None]:
    """Replace each unknown dict key by the first key whose entry alone still fails there."""
    while _UNKNOWN_KEY in keys:
        at = keys.index(_UNKNOWN_KEY)
        known: list[Key] = [key for key in keys[:at] if key is not None]
        container = _follow(value, known)
        if not isinstance(container, dict):
            return keys
        for key, item in container.items():
            try:
                msgspec.convert(_replaced(value, known, {key: item}), target_type)
            except msgspec.ValidationError as exc:
                found, _ = _locate(exc)
                if found is not None and found[: at + 1] == [*known, _UNKNOWN_KEY]:
                    keys = [*known, key, *found[at + 1 :]]
                    break
        else:
            return keys  # no single entry fails on its own: point at the dict
    return keys


def _follow(value: Any, keys: list[Key]) -> Any:
    for key in keys:
        in_dict = isinstance(value, dict) and key in value
        in_list = isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value)
        if not (in_dict or in_list):
            return None
        value = value[key]
    return value


def _replaced(value: Any, keys: list[Key], new: Any) -> Any:
    """``value`` with the part at ``keys`` replaced by ``new`` (copies along the way, never in place)."""
    if not keys:
        return new
    head, rest = keys[0], keys[1:]
    if isinstance(value, dict):
        return {**value, head: _replaced(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replaced(copy[head], rest, new)  # type: ignore[index]
    return copy
