"""Child processes for tests: generic pid helpers and `SecautoProcess`, a real `secauto serve` node.

Every child is started in its own session (so a Ctrl-C in the terminal reaches pytest, which then
tears the children down in order) and, on Linux, with PR_SET_PDEATHSIG=SIGKILL, so a pytest that
dies hard (SIGKILL, pytest-timeout's os._exit) leaves no servers behind. An atexit hook kills any
child that is still registered when the interpreter exits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Self

REPO_ROOT = Path(__file__).resolve().parents[2]

# Variables that would make a child node talk to something the test did not choose (for example a
# developer's REDIS_URL pointing at the Redis on 6379). They are removed from the inherited environment.
SCRUBBED_ENV_PREFIXES = ("SECAUTO_",)
SCRUBBED_ENV_NAMES = frozenset({"REDIS_URL"})

# ---------------------------------------------------------------------------------------------------
# generic helpers
# ---------------------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:  # resolved in the parent: the child must not dlopen() between fork and exec
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def child_preexec() -> Callable[[], None] | None:
    """A preexec_fn that kills the child when its parent dies (Linux, main thread only).

    PDEATHSIG fires when the *thread* that forked the child exits, so it is only armed for children
    started from the main thread; children started from worker threads rely on the atexit hook.
    """
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    prctl = _prctl
    parent = os.getpid()

    def _preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl() took effect
            os._exit(1)

    return _preexec


_live: dict[int, subprocess.Popen[bytes]] = {}
_live_lock = threading.Lock()


def register_child(proc: subprocess.Popen[bytes]) -> None:
    with _live_lock:
        _live[proc.pid] = proc


def unregister_child(proc: subprocess.Popen[bytes]) -> None:
    with _live_lock:
        _live.pop(proc.pid, None)


@atexit.register
def _kill_registered_children() -> None:
    with _live_lock:
        procs = list(_live.values())
        _live.clear()
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def pid_exists(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    # the state follows the parenthesised command name, which may itself contain ") "
    return stat.rpartition(")")[2].split()[0] != "Z"


def signal_child(proc: subprocess.Popen[bytes], sig: int) -> bool:
    """Send `sig` to the child by pid unless it was already reaped. Returns False if it is gone."""
    if proc.poll() is not None:
        return False
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_child(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0, kill_timeout: float = 5.0
) -> int | None:
    """Send `sig`, wait up to `timeout`, then SIGKILL and wait up to `kill_timeout`.

    A stopped (SIGSTOP) process also gets SIGCONT so it can act on the signal. Returns the exit code
    (negative signal number when killed by a signal), or None if the process could not be reaped.
    """
    if proc.poll() is None:
        signal_child(proc, sig)
        if sig not in (signal.SIGKILL, signal.SIGCONT):
            signal_child(proc, signal.SIGCONT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            signal_child(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=kill_timeout)
    if proc.returncode is not None:
        unregister_child(proc)
    return proc.returncode


def child_env(extra: Mapping[str, str] | None = None, *, inherit: bool = True) -> dict[str, str]:
    """The environment for a child: os.environ without SECAUTO_*/REDIS_URL, plus `extra`."""
    env: dict[str, str] = {}
    if inherit:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in SCRUBBED_ENV_NAMES and not k.startswith(SCRUBBED_ENV_PREFIXES)
        }
    env["PYTHONUNBUFFERED"] = "1"
    pythonpath = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + pythonpath if pythonpath else "")
    if extra:
        env.update(extra)
    return env


def write_config(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write `data` as YAML to `path` (parents created) and return the path."""
    import yaml

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return target


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------------
# secauto node process
# ---------------------------------------------------------------------------------------------------


class SecautoProcess:
    """A real `python -m secauto serve --config FILE` subprocess with its output captured to files.

    The same object can be started again after it exited (crash/restart tests); the logs are appended
    and every pid it ever had is kept in `pids` so cleanup can check all of them are gone.
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        *,
        log_dir: str | os.PathLike[str],
        name: str = "secauto",
        url: str | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        cwd: str | os.PathLike[str] | None = None,
        inherit_env: bool = True,
        command: Sequence[str] | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.name = name
        self.url = url
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = self.log_dir / f"{name}.stdout.log"
        self.stderr_path = self.log_dir / f"{name}.stderr.log"
        self.cwd = Path(cwd) if cwd is not None else self.log_dir
        self.env = child_env(env, inherit=inherit_env)
        self.command: list[str] = (
            list(command)
            if command is not None
            else [sys.executable, "-m", "secauto", "serve", "--config", str(self.config_path), *args]
        )
        self.pids: list[int] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> Self:
        if self.is_running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self._close_files()
        out = self.stdout_path.open("ab")
        err = self.stderr_path.open("ab")
        self._files = [out, err]
        if self.pids:  # a restart: mark it in the logs
            marker = f"\n----- restart of {self.name} (previous pid {self.pids[-1]}) -----\n".encode()
            out.write(marker)
            err.write(marker)
            out.flush()
            err.flush()
        self._proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,
            preexec_fn=child_preexec(),
        )
        register_child(self._proc)
        self.pids.append(self._proc.pid)
        return self

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def send_signal(self, sig: int) -> bool:
        """Send `sig` by pid; False if the process already exited."""
        return self._proc is not None and signal_child(self._proc, sig)

    def stop_signal(self, sig: int = signal.SIGSTOP) -> None:
        """Send `sig` (default SIGSTOP: freeze the node, e.g. to simulate a hung node) without waiting."""
        if not self.send_signal(sig):
            raise RuntimeError(f"{self.name} is not running (exit code {self.returncode})")

    def cont(self) -> None:
        """Resume a process frozen with SIGSTOP."""
        self.send_signal(signal.SIGCONT)

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit on its own; raises TimeoutError (with the log tail) if it doesn't."""
        proc = self._require_proc()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"{self.name} (pid {proc.pid}) still running after {timeout}s\n{self.log_tail()}"
            ) from None
        self._reaped()
        return code

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful shutdown) and wait up to `timeout`.

        If the node does not exit in time it is SIGKILLed and TimeoutError is raised, so tests of
        graceful shutdown fail loudly instead of passing on a kill.
        """
        proc = self._require_proc()
        if proc.poll() is None:
            signal_child(proc, signal.SIGTERM)
            signal_child(proc, signal.SIGCONT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise TimeoutError(
                    f"{self.name} (pid {proc.pid}) ignored SIGTERM for {timeout}s and was killed\n{self.log_tail()}"
                ) from None
        self._reaped()
        return int(proc.returncode)

    def kill(self, timeout: float = 10.0) -> int:
        """SIGKILL (a crash) and reap."""
        proc = self._require_proc()
        signal_child(proc, signal.SIGKILL)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.name} (pid {proc.pid}) survived SIGKILL for {timeout}s") from None
        self._reaped()
        return int(proc.returncode)

    def cleanup(self, timeout: float = 5.0) -> None:
        """Stop whatever is left: SIGTERM (+SIGCONT), then SIGKILL; also SIGKILL leftovers of its group."""
        if self._proc is not None:
            stop_child(self._proc, signal.SIGTERM, timeout=timeout)
            # started with start_new_session: pgid == pid; kill children that stayed in the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._close_files()

    def alive_pids(self) -> list[int]:
        """Pids this object ever had that still exist (should be empty after cleanup)."""
        return [pid for pid in self.pids if pid_exists(pid)]

    # -- readiness -------------------------------------------------------------------------------------

    def _health_url(self, url: str | None, path: str) -> str:
        base = url or self.url
        if not base:
            raise ValueError(f"{self.name}: no url given and none known")
        if base.rstrip("/").endswith(path.rstrip("/")):
            return base
        return base.rstrip("/") + path

    async def wait_http(
        self,
        url: str | None = None,
        timeout: float = 30.0,
        path: str = "/health/live",
    ) -> None:
        """Poll GET `url`+`path` until it answers 200; fail fast if the process exits."""
        import aiohttp

        target = self._health_url(url, path)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: str = "no answer yet"
        client_timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            while True:
                self._raise_if_exited(f"waiting for {target}")
                try:
                    async with session.get(target) as resp:
                        if resp.status == 200:
                            return
                        last = f"HTTP {resp.status}"
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if loop.time() >= deadline:
                    raise TimeoutError(f"{self.name}: {target} not ready after {timeout}s ({last})\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    def wait_http_sync(self, url: str | None = None, timeout: float = 30.0, path: str = "/health/live") -> None:
        """Blocking variant of `wait_http` (urllib), for sync tests and fixtures."""
        target = self._health_url(url, path)
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            self._raise_if_exited(f"waiting for {target}")
            try:
                with urllib.request.urlopen(target, timeout=2.0) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name}: {target} not ready after {timeout}s ({last})\n{self.log_tail()}")
            time.sleep(0.1)

    # -- logs ----------------------------------------------------------------------------------------

    def read_stdout(self) -> str:
        return self._read(self.stdout_path)

    def read_stderr(self) -> str:
        return self._read(self.stderr_path)

    def read_logs(self) -> str:
        """Everything captured so far: stdout, then stderr."""
        return self.read_stdout() + self.read_stderr()

    def log_tail(self, lines: int = 60) -> str:
        return (
            f"--- {self.name} stdout (tail) ---\n{_tail(self.read_stdout(), lines)}\n"
            f"--- {self.name} stderr (tail) ---\n{_tail(self.read_stderr(), lines)}"
        )

    # -- internals -----------------------------------------------------------------------------------

    def _read(self, path: Path) -> str:
        for f in self._files:
            with contextlib.suppress(ValueError, OSError):
                f.flush()
        try:
            return path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._proc

    def _raise_if_exited(self, doing: str) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            code = self._proc.returncode
            self._reaped()
            raise RuntimeError(f"{self.name} exited with code {code} while {doing}\n{self.log_tail()}")
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")

    def _reaped(self) -> None:
        if self._proc is not None:
            unregister_child(self._proc)
        self._close_files()

    def _close_files(self) -> None:
        for f in self._files:
            with contextlib.suppress(OSError):
                f.close()
        self._files = []

    def __repr__(self) -> str:
        state = "never started" if self._proc is None else f"pid={self._proc.pid} rc={self.returncode}"
        return f"<SecautoProcess {self.name} {state} url={self.url}>"
