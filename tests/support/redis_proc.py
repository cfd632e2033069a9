"""A private redis-server process for tests (never the Redis on 6379 that may run on this machine)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Self

import redis
import redis.asyncio

from tests.support.ports import RESERVED_PORTS, free_port
from tests.support.procs import child_preexec, register_child, signal_child, stop_child, unregister_child


class _PortTaken(Exception):
    """redis-server could not bind its port (lost the race for a port from free_port())."""


class RedisProcess:
    """One redis-server child process on 127.0.0.1.

    `port=None` picks a free port at the first start() (retrying with a new port when another process
    wins the bind race); the port is kept for restart(), so clients can reconnect to the same URL.
    Data lives in `dir` (a temp dir owned by this object unless given), so with `appendonly=True` a
    restart after `stop(signal.SIGKILL)` recovers what was fsynced, as a real crash would.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        dir: str | os.PathLike[str] | None = None,
        appendonly: bool = False,
        appendfsync: str | None = None,
        password: str | None = None,
        unixsocket: bool = False,
        extra_args: Sequence[str] = (),
        binary: str = "redis-server",
        startup_timeout: float = 10.0,
    ) -> None:
        if port is not None and port in RESERVED_PORTS:
            raise ValueError(f"refusing to run a test redis-server on reserved port {port}")
        self.host = host
        self._port: int | None = port
        self._port_fixed = port is not None
        self._owns_dir = dir is None
        self.dir = Path(tempfile.mkdtemp(prefix="secauto-redis-")) if dir is None else Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.password = password
        self.unixsocket: Path | None = self.dir / "redis.sock" if unixsocket else None
        self.extra_args = list(extra_args)
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.pids: list[int] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0

    # -- properties ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("redis-server was never started: no port yet")
        return self._port

    @property
    def url(self) -> str:
        """redis://HOST:PORT (no password in it; see `password`)."""
        return f"redis://{self.host}:{self.port}"

    @property
    def unix_url(self) -> str:
        if self.unixsocket is None:
            raise RuntimeError("started without unixsocket=True")
        return f"unix://{self.unixsocket}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("redis-server was never started")
        return self._proc.pid

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.dir / "redis-server.log"

    def read_log(self, *, since_last_start: bool = False) -> str:
        """The server's log (all starts appended), or only the part written since the last start."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[self._log_offset if since_last_start else 0 :].decode("utf-8", errors="replace")

    # -- lifecycle -----------------------------------------------------------------------------------

    def command(self, port: int) -> list[str]:
        args = [
            self.binary,
            "--port", str(port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        if self.appendfsync:
            args += ["--appendfsync", self.appendfsync]
        if self.password:
            args += ["--requirepass", self.password]
        if self.unixsocket is not None:
            args += ["--unixsocket", str(self.unixsocket), "--unixsocketperm", "700"]
        return args + self.extra_args

    def start(self) -> Self:
        """Start redis-server and wait (bounded) until it answers PING as *this* process."""
        if self.is_running:
            raise RuntimeError(f"redis-server already running (pid {self.pid})")
        if shutil.which(self.binary) is None:
            raise RuntimeError(f"{self.binary!r} not found on PATH; install redis-server (scripts/test does it)")
        attempts = 5
        errors: list[str] = []
        for _ in range(attempts):
            port = self._port if self._port is not None else free_port(self.host)
            self._spawn(port)
            try:
                self._wait_ready(port)
            except _PortTaken as exc:
                errors.append(str(exc))
                stop_child(self._require_proc(), signal.SIGKILL)
                self._close_log()
                if self._port is not None:
                    time.sleep(0.3)  # same port required (restart): give the other holder a moment
                continue
            except BaseException:
                stop_child(self._require_proc(), signal.SIGKILL)
                self._close_log()
                raise
            self._port = port
            return self
        raise RuntimeError(f"could not start redis-server after {attempts} attempts: {errors}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Send `sig` (SIGTERM: clean shutdown; SIGKILL: crash), wait, then SIGKILL if needed.

        Returns the exit code (None if it was not running).
        """
        if sig in (signal.SIGSTOP, signal.SIGTSTP, signal.SIGCONT):
            raise ValueError("use pause()/resume() to freeze and thaw redis-server")
        if self._proc is None:
            return None
        code = stop_child(self._proc, sig, timeout=timeout)
        if code is None:
            raise RuntimeError(f"redis-server pid {self._proc.pid} could not be killed")
        self._close_log()
        return code

    def kill(self) -> int | None:
        """SIGKILL: simulate a crash."""
        return self.stop(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: the server stops answering but keeps its connections (a hung Redis)."""
        if not (self._proc is not None and signal_child(self._proc, signal.SIGSTOP)):
            raise RuntimeError("redis-server is not running")

    def resume(self) -> None:
        if self._proc is not None:
            signal_child(self._proc, signal.SIGCONT)

    def restart(self, sig: int = signal.SIGTERM) -> Self:
        """Stop with `sig` and start again on the same port, dir and arguments."""
        self.stop(sig)
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its data dir if this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- clients -------------------------------------------------------------------------------------

    def client(self, **kwargs: Any) -> redis.asyncio.Redis:
        """A redis.asyncio client to this server (caller closes it with `await c.aclose()`)."""
        kwargs.setdefault("password", self.password)
        return redis.asyncio.Redis(host=self.host, port=self.port, **kwargs)

    def sync_client(self, **kwargs: Any) -> redis.Redis:
        kwargs.setdefault("password", self.password)
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    # -- internals -----------------------------------------------------------------------------------

    def _spawn(self, port: int) -> None:
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log_offset = self._log.tell()
        self._proc = subprocess.Popen(
            self.command(port),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,
            preexec_fn=child_preexec(),
        )
        register_child(self._proc)
        self.pids.append(self._proc.pid)

    def _wait_ready(self, port: int) -> None:
        proc = self._require_proc()
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while True:
            if proc.poll() is not None:
                log = self.read_log(since_last_start=True)
                if "Address already in use" in log:
                    raise _PortTaken(f"port {port} already in use")
                raise RuntimeError(f"redis-server exited with code {proc.returncode} on port {port}:\n{log[-3000:]}")
            client = redis.Redis(
                host=self.host,
                port=port,
                password=self.password,
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
            )
            try:
                client.ping()
                server_pid = int(client.info("server")["process_id"])
            except redis.exceptions.AuthenticationError:
                server_pid = -1  # a password-protected server that is not ours
            except (
                redis.exceptions.ConnectionError,
                redis.exceptions.TimeoutError,
                redis.exceptions.BusyLoadingError,
                OSError,
            ) as exc:
                last = f"{type(exc).__name__}: {exc}"
                server_pid = 0
            finally:
                client.close()
            if server_pid == proc.pid:
                return
            if server_pid not in (0, proc.pid):
                # someone else answers on this port: our server lost the bind race
                raise _PortTaken(f"port {port} is served by another process (pid {server_pid})")
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"redis-server pid {proc.pid} not ready on port {port} after "
                    f"{self.startup_timeout}s ({last}):\n{self.read_log()[-3000:]}"
                )
            time.sleep(0.05)

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("redis-server was never started")
        return self._proc

    def _close_log(self) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
        if self._proc is not None and self._proc.poll() is not None:
            unregister_child(self._proc)

    def __repr__(self) -> str:
        state = "never started" if self._proc is None else f"pid={self._proc.pid} running={self.is_running}"
        return f"<RedisProcess port={self._port} {state}>"
