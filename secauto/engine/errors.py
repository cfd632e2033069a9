"""The engine's errors: validation problems (before a run) and step errors (during a run).

* :class:`PlaybookInvalid` is raised by validation and loading, before anything runs. It carries every
  :class:`Problem` found, each with the JSON path of the offending value (``$[2].parameters.target``).
* :class:`StepError` is raised inside a run by templates, conditions and actions. The runner turns it
  into a failed :class:`~secauto.engine.results.StepResult`; it never escapes ``run_playbook``.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Problem(msgspec.Struct, frozen=True):
    """One validation problem: where (a JSON path such as ``$[2].parameters.target``) and what."""

    path: str
    message: str


class PlaybookInvalid(Exception):
    """A playbook (or its context, file or name) cannot be run; ``problems`` says why and where."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems) or [Problem("$", "invalid playbook")]
        first = self.problems[0]
        more = len(self.problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        super().__init__(f"{first.path}: {first.message}{suffix}")

    @classmethod
    def single(cls, path: str, message: str) -> PlaybookInvalid:
        return cls([Problem(path, message)])


class StepError(Exception):
    """A step failed. ``fatal`` errors (the ``fail`` action, limits) ignore ``retry`` and ``on_error``.

    ``output`` optionally carries what the step produced before failing (e.g. the results of an ``if``
    branch up to the failing step), recorded in the failed step's result.
    """

    def __init__(self, message: str, *, fatal: bool = False, output: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.fatal = fatal
        self.output = output


_MSGSPEC_AT = re.compile(r" - at `\$(.*)`$")


def split_validation_error(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's ``Expected `int`, got `str` - at `$.retry.attempts``` as ``(".retry.attempts", "Expected...")``."""
    text = str(exc)
    match = _MSGSPEC_AT.search(text)
    if match:
        return match.group(1), text[: match.start()]
    return "", text


def short(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters, for quoting user input in messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def child_path(parent: str, key: str | int) -> str:
    """``$`` + ``0`` -> ``$[0]``; ``$[0]`` + ``target`` -> ``$[0].target``; odd keys are quoted."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if _IDENT.match(key):
        return f"{parent}.{key}"
    return f"{parent}[{msgspec.json.encode(key).decode()}]"
