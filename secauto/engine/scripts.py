"""The script runner behind ``run_script``: resolve safely, run sandboxed-ish, parse one JSON object.

* **Names**: ``[A-Za-z0-9_-]+`` with an optional ``.py``; the file must resolve (symlinks followed)
  to a regular file inside ``scripts_dir``. Anything else (``../x``, absolute paths, ``a/b``, a symlink
  pointing out of the folder) is refused before anything is spawned.
* **Process**: ``[settings.python, <resolved path>]``, no shell, working directory ``scripts_dir``,
  its own session and process group (see :mod:`secauto.engine.process` for the kill guarantees).
* **Environment**: an allowlist, ``PATH``, ``LANG``, ``HOME``, ``TMPDIR`` (when set) plus
  ``settings.script_env``. Nothing else of the server's environment (API keys, Redis password, webhook
  secrets) reaches a script.
* **Input**: one JSON object on stdin, the context overlaid with the step's parameters.
* **Output**: stdout must be exactly one JSON object; stdout and stderr are each capped at
  ``settings.max_output_bytes`` (a script that floods is killed and the step fails).
* **Limits**: ``settings.script_limits`` and ``settings.script_user`` are applied in the child before
  exec (:func:`~secauto.engine.script_limits.apply_in_child`); a script that fails on one of them gets
  an error naming it (``exceeded engine.script_limits.cpu_seconds (2s of CPU time) and was killed``).

Every failure is a :class:`~secauto.engine.errors.StepError` whose message carries the reason and the
tail of the script's stderr. Secret values are masked in the stderr and stdout quoted there *before*
they are cut to length, so a cut never leaves part of a secret showing. Cancellation kills the
script's process group and propagates.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from secauto.engine.errors import StepError, short
from secauto.engine.process import OutputTooLarge, ProcessFailure, run_process
from secauto.engine.script_limits import ScriptLimits, apply_in_child, limit_exceeded, start_failure
from secauto.engine.settings import EngineSettings
from secauto.redaction import REDACTOR

SCRIPT_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+(\.py)?\Z")
ENV_ALLOWLIST = ("PATH", "LANG", "HOME", "TMPDIR")
STDERR_TAIL = 2000
STDOUT_QUOTE = 200


def script_name_problem(name: Any) -> str | None:
    """Why ``name`` is not an acceptable script name, or None."""
    if not isinstance(name, str) or not SCRIPT_NAME_RE.match(name):
        return f"bad script name {short(name)}: use letters, digits, '_' and '-', optionally '.py'"
    return None


def resolve_script(name: str, scripts_dir: Path) -> Path:
    """The script file for ``name`` inside ``scripts_dir``; raises :class:`StepError` otherwise."""
    problem = script_name_problem(name)
    if problem:
        raise StepError(problem)
    filename = name if name.endswith(".py") else f"{name}.py"
    root = scripts_dir.resolve()
    try:
        resolved = (root / filename).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise StepError(f"script {name!r} not found in {root}") from None
    except (OSError, RuntimeError) as exc:  # symlink loops, permission problems
        raise StepError(f"script {name!r} cannot be resolved: {exc}") from None
    if not resolved.is_relative_to(root):
        raise StepError(f"script {name!r} resolves outside the scripts folder; refused")
    if not resolved.is_file():
        raise StepError(f"script {name!r} is not a regular file")
    return resolved


def script_environment(settings: EngineSettings) -> dict[str, str]:
    """The allowlisted environment a script runs with."""
    env = {key: os.environ[key] for key in ENV_ALLOWLIST if key in os.environ}
    env.update(settings.script_env)
    return env


def _tail(data: bytes) -> str:
    if not REDACTOR.active:
        return data[-STDERR_TAIL:].decode(errors="replace").strip()
    return REDACTOR.text(data.decode(errors="replace"))[-STDERR_TAIL:].strip()


def _head(data: bytes) -> str:
    if not REDACTOR.active:
        return data[:STDOUT_QUOTE].decode(errors="replace")
    return REDACTOR.text(data.decode(errors="replace"))[:STDOUT_QUOTE]


def _with_stderr(message: str, stderr: bytes) -> str:
    tail = _tail(stderr)
    return f"{message}; stderr: {tail}" if tail else message


def child_setup(settings: EngineSettings) -> Callable[[], None] | None:
    """What the spawned child runs before exec: the limits and the user switch, or None (nothing set,
    so the subprocess module keeps its faster vfork path)."""
    if settings.script_limits == ScriptLimits() and settings.script_user is None:
        return None
    return functools.partial(apply_in_child, settings.script_limits, settings.script_user)


async def run_script(
    name: str,
    payload: Mapping[str, Any],
    settings: EngineSettings,
    *,
    time_limit: float | None = None,
) -> dict[str, Any]:
    """Run script ``name`` with ``payload`` on stdin and return its JSON object.

    ``time_limit`` defaults to ``settings.script_timeout``. Raises :class:`StepError` on a bad name, a
    missing script, a non-serialisable payload, a start failure, a timeout, output over the cap, a
    non-zero exit or stdout that is not one JSON object. Cancellation kills the process group.
    """
    path = resolve_script(name, settings.scripts_dir)
    try:
        stdin = msgspec.json.encode(payload)
    except (TypeError, msgspec.EncodeError) as exc:
        raise StepError(f"script {name!r}: the input cannot be encoded as JSON: {exc}") from None
    limit = time_limit if time_limit is not None else settings.script_timeout
    try:
        outcome = await run_process(
            [settings.python, str(path)],
            stdin=stdin,
            env=script_environment(settings),
            cwd=path.parent,
            time_limit=limit,
            max_output_bytes=settings.max_output_bytes,
            child_setup=child_setup(settings),
        )
    except ProcessFailure as exc:
        message = f"script {name!r} {exc}"
        if isinstance(exc, OutputTooLarge):  # e.g. a fork bomb whose every failed fork prints a traceback
            hit = limit_exceeded(settings.script_limits, returncode=1, stderr=exc.stderr,
                                 tail_bytes=len(exc.stderr))
            message = f"{message}; it {hit}" if hit else message
        raise StepError(_with_stderr(message, exc.stderr)) from None
    except OSError as exc:
        why = start_failure(settings.script_limits, exc)
        if why:
            raise StepError(f"script {name!r} {why}") from None
        hint = ""
        if settings.script_user is not None and isinstance(exc, PermissionError):
            hint = (f" (engine.script_user {settings.script_user.name!r} must be able to execute the interpreter and "
                    "read the scripts folder)")
        raise StepError(f"script {name!r} could not be started with {settings.python!r}: {exc}{hint}") from None
    if outcome.returncode != 0:
        hit = limit_exceeded(settings.script_limits, returncode=outcome.returncode, stderr=outcome.stderr)
        if hit:
            raise StepError(_with_stderr(f"script {name!r} {hit}", outcome.stderr))
        how = f"was killed by signal {-outcome.returncode}" if outcome.returncode < 0 else "exited with status"
        status = "" if outcome.returncode < 0 else f" {outcome.returncode}"
        raise StepError(_with_stderr(f"script {name!r} {how}{status}", outcome.stderr))
    try:
        result = msgspec.json.decode(outcome.stdout)
    except msgspec.DecodeError:
        quoted = _head(outcome.stdout)
        raise StepError(
            _with_stderr(f"script {name!r} did not print a JSON object; stdout starts with {quoted!r}", outcome.stderr)
        ) from None
    if not isinstance(result, dict):
        quoted = _head(outcome.stdout)
        raise StepError(f"script {name!r} printed JSON that is not an object: {quoted!r}")
    return result
