"""The script runner behind ``run_script``: resolve safely, run sandboxed-ish, parse one JSON object.

* **Names**: ``[A-Za-z0-9_-]+`` with an optional ``.py``; the file must resolve (symlinks followed)
  to a regular file inside ``scripts_dir``. Anything else (``../x``, absolute paths, ``a/b``, a symlink
  pointing out of the folder) is refused before anything is spawned.
* **Process**: with ``engine.runner: warm`` (the default) a fork of the node's warm runner
  (:mod:`secauto.engine.warm`) runs the script as ``python <resolved path>`` would; otherwise, and
  whenever a script cannot run warm, ``[settings.python, <resolved path>]`` is spawned. Either way: no
  shell, working directory ``scripts_dir``, ``sys.argv == [<resolved path>]``, its own session and process
  group (see :mod:`secauto.engine.process` for the kill guarantees). A script runs with spawn when
  ``engine.python`` is not the node's interpreter, when the environment differs from the one the runner
  was started with, when the runner is not ready (starting or restarting after a crash), when the
  script's folder has a module named like one the runner holds (``json.py``: spawned, the script would
  import it), or when the script opts out with a comment line ``# secauto: runner=spawn`` before its
  first statement. The
  step result's ``runner`` records which ran. A warm step whose runner dies fails ("the warm script
  runner ... died"); the step's and the job's retry rules apply.
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
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
from loguru import logger

from secauto.engine.errors import StepError, short
from secauto.engine.process import OutputTooLarge, ProcessFailure, ProcessOutcome, run_process, supervise
from secauto.engine.results import StepNotes
from secauto.engine.script_limits import (
    ScriptLimits,
    apply_in_child,
    limit_exceeded,
    limit_in_stderr,
    start_failure,
)
from secauto.engine.settings import EngineSettings
from secauto.engine.warm import RunnerUnavailable, WarmChild
from secauto.engine.warm_runner import START_FAILED, START_FAILED_PREFIX
from secauto.redaction import REDACTOR

if TYPE_CHECKING:
    from loguru import Logger

SCRIPT_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+(\.py)?\Z")
ENV_ALLOWLIST = ("PATH", "LANG", "HOME", "TMPDIR")
STDERR_TAIL = 2000
STDOUT_QUOTE = 200
_PACKAGE_INITS = ("__init__.py", "__init__.pyc")
# A comment line before the first statement that keeps a script out of the warm runner.
SPAWN_MARKER_RE = re.compile(rb"^#\s*secauto:\s*runner\s*=\s*spawn\s*$")
_HEADER_BYTES = 4096
_CACHE_MAX = 1024  # files (or folders) whose spawn marker (or module names) are kept
T = TypeVar("T")


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


class _FileCache(Generic[T]):
    """What ``compute`` made of a file or folder, kept until its (inode, size, mtime) changes; at most
    ``_CACHE_MAX`` entries (all dropped when full). A path that cannot be stat'ed or read gets
    ``default`` (running the script reports the problem)."""

    def __init__(self, compute: Callable[[Path], T], default: T) -> None:
        self._compute = compute
        self._default = default
        self._entries: dict[Path, tuple[tuple[int, int, int], T]] = {}

    def get(self, path: Path) -> T:
        try:
            st = path.stat()
        except OSError:
            return self._default
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._entries.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            value = self._compute(path)
        except OSError:
            return self._default
        if len(self._entries) >= _CACHE_MAX:
            self._entries.clear()
        self._entries[path] = (stamp, value)
        return value


def _has_spawn_marker(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(_HEADER_BYTES)
    for line in head.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(b"#"):
            return False
        if SPAWN_MARKER_RE.match(stripped):
            return True
    return False


def _importable_names(folder: Path) -> frozenset[str]:
    names: set[str] = set()
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if entry.is_dir():
                if any(os.path.exists(os.path.join(entry.path, init)) for init in _PACKAGE_INITS):
                    names.add(name)
            elif name.endswith((".py", ".pyc", *EXTENSION_SUFFIXES)):
                names.add(name.partition(".")[0])
    return frozenset(names)


_spawn_markers = _FileCache(_has_spawn_marker, False)
_folder_names = _FileCache(_importable_names, frozenset[str]())


def wants_spawn(path: Path) -> bool:
    """Whether the script opts out of the warm runner (``# secauto: runner=spawn`` among the comment
    lines it starts with). Cached per (inode, size, mtime); an unreadable file says no (running it
    reports the problem)."""
    return _spawn_markers.get(path)


def importable_names(folder: Path) -> frozenset[str]:
    """The top-level module names that ``import`` would find in ``folder`` when it is ``sys.path[0]``
    (``x.py``, ``x.pyc``, extension modules, packages with an ``__init__``). Cached per (inode, size,
    mtime) of the folder; a folder that cannot be listed has none."""
    return _folder_names.get(folder)


def shadowing_module(folder: Path, loaded: frozenset[str]) -> str | None:
    """A module of ``folder`` named like one the warm runner holds (``json.py`` beside the script), or
    None. Spawned, the script would import the folder's module (its folder is ``sys.path[0]``); a fork
    of the runner already has the other one in ``sys.modules``, so such a script must spawn."""
    clash = importable_names(folder) & loaded
    return min(clash) if clash else None


async def _start_warm(path: Path, stdin: bytes, settings: EngineSettings, env: dict[str, str],
                      log: Logger | None) -> WarmChild | None:
    """The script started in a fork of the warm runner with ``stdin`` written ahead as far as its pipe
    holds it (the rest is ``unsent_stdin``), or None when it must be spawned instead."""
    host = settings.script_host
    if settings.runner != "warm" or host is None or not host.usable_for(settings.python, env):
        return None
    if wants_spawn(path):
        return None
    shadowed = shadowing_module(path.parent, host.loaded_modules)
    if shadowed:
        # `python script.py` would import the folder's module; the runner already holds its own.
        (log or logger).debug("script {} runs with spawn: its folder has a module {!r} that the warm runner "
                              "has preloaded", path.name, shadowed)
        return None
    limits = {key: value for key, value in msgspec.structs.asdict(settings.script_limits).items()
              if value is not None}
    user = settings.script_user
    try:
        return await host.start_step(path, argv=[str(path)], cwd=path.parent, stdin=stdin, limits=limits,
                                     user=(user.uid, user.gid, user.name) if user is not None else None,
                                     log=log)
    except RunnerUnavailable as exc:
        (log or logger).debug("script {} runs with spawn: {}", path.name, exc)
        return None


def _start_error(name: str, settings: EngineSettings, exc: OSError) -> StepError:
    """The step error for a script that could not start (spawn: exec or child_setup failed; warm: the
    forked child's set-up failed), naming the limit that explains it when one does."""
    why = start_failure(settings.script_limits, exc)
    if why:
        return StepError(f"script {name!r} {why}")
    hint = ""
    if settings.script_user is not None and isinstance(exc, PermissionError):
        hint = (f" (engine.script_user {settings.script_user.name!r} must be able to execute the interpreter and "
                "read the scripts folder)")
    return StepError(f"script {name!r} could not be started with {settings.python!r}: {exc}{hint}")


_START_FAILED_RE = re.compile(rb"\(errno (\d+)\): (.*)")


def _warm_start_failure(stderr: bytes) -> OSError:
    """The OSError a warm child reported when its set-up failed (see warm_runner._report_start_failure)."""
    first = stderr[len(START_FAILED_PREFIX):].split(b"\n", 1)[0]
    match = _START_FAILED_RE.search(first)
    if match is None:
        return OSError(first.decode(errors="replace").strip())
    errno, text = int(match.group(1)), match.group(2).decode(errors="replace")
    return OSError(errno, f"setting up the child process failed ({text})") if errno else OSError(text)


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
    notes: StepNotes | None = None,
    log: Logger | None = None,
) -> dict[str, Any]:
    """Run script ``name`` with ``payload`` on stdin and return its JSON object.

    ``time_limit`` defaults to ``settings.script_timeout``. ``notes.runner`` is set to how the script
    runs ("warm" or "spawn") before it starts; ``log`` (the step's logger) receives the warm start's
    audit line. Raises :class:`StepError` on a bad name, a missing script, a non-serialisable payload,
    a start failure, a timeout, output over the cap, a non-zero exit, stdout that is not one JSON object,
    or the death of the warm runner while the script ran. Cancellation kills the process group.
    """
    path = resolve_script(name, settings.scripts_dir)
    try:
        stdin = msgspec.json.encode(payload)
    except (TypeError, msgspec.EncodeError) as exc:
        raise StepError(f"script {name!r}: the input cannot be encoded as JSON: {exc}") from None
    limit = time_limit if time_limit is not None else settings.script_timeout
    env = script_environment(settings)
    child = await _start_warm(path, stdin, settings, env, log)
    if notes is not None:
        notes.runner = "spawn" if child is None else "warm"
    try:
        outcome: ProcessOutcome
        if child is not None:
            try:
                outcome = await supervise(child, stdin=child.unsent_stdin, time_limit=limit,
                                          max_output_bytes=settings.max_output_bytes)
            finally:
                child.close()
        else:
            outcome = await run_process(
                [settings.python, str(path)],
                stdin=stdin,
                env=env,
                cwd=path.parent,
                time_limit=limit,
                max_output_bytes=settings.max_output_bytes,
                child_setup=child_setup(settings),
            )
    except ProcessFailure as exc:
        message = f"script {name!r} {exc}"
        if isinstance(exc, OutputTooLarge):  # e.g. a fork bomb whose every failed fork prints a traceback
            hit = limit_in_stderr(settings.script_limits, exc.stderr)
            message = f"{message}; it {hit}" if hit else message
        raise StepError(_with_stderr(message, exc.stderr)) from None
    except OSError as exc:
        raise _start_error(name, settings, exc) from None
    if child is not None and outcome.returncode == START_FAILED and outcome.stderr.startswith(START_FAILED_PREFIX):
        raise _start_error(name, settings, _warm_start_failure(outcome.stderr))
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
