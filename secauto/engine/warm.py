"""The node's side of the warm script runner (``engine.runner: warm``): start, supervise, run steps.

:class:`WarmRunner` execs ``python -P secauto/engine/warm_runner.py`` (never a fork of the node) in its
own session with the scripts' scrubbed environment as its whole environment, and talks to it over an
``AF_UNIX`` ``SOCK_SEQPACKET`` socketpair. Per step (:meth:`WarmRunner.start_step`) the node makes the
three stdio pipes, sends their child ends plus one small :class:`~secauto.engine.warm_runner.RunStep`
message with ``socket.send_fds``, and returns a :class:`WarmChild`: the same
:class:`~secauto.engine.process.Child` that :func:`~secauto.engine.process.supervise` drives for a
spawned process, so feeding, output caps, timeout and process-group kill are shared code.

Supervision. A runner that dies (crash, SIGKILL, OOM killer) is noticed by EOF on its socket: every
step in flight on it ends with ``lost`` set ("the warm script runner ... died"), which fails the step
with a StepError, so the step's ``retry`` and the job's retries apply as for any failure; the process
groups of those steps are killed (their pids are known from ``Started``; a child whose ``Started``
never arrived dies of PR_SET_PDEATHSIG). The supervisor then starts a new runner after a backoff
(0.1 s doubling to 10 s; reset once a runner lived 60 s). While no runner is ready (starting,
restarting, or failing to start) :meth:`start_step` raises :class:`RunnerUnavailable` and the step runs
with spawn instead, so the node never stalls on its runner; nothing here ever raises into the node.

Recycling. After ``recycle_after`` forks (default :data:`RECYCLE_AFTER`) a replacement runner is
started; once it is ready new steps go to it and the old one exits when its last step ended. Forked
children share their parent's address-space layout and ``hash()`` seed, so without this every script
run for the node's lifetime would share one layout (what ASLR is meant to vary) and one seed (which a
script could learn and use for hash flooding later ones). 2000 bounds that sharing to a few seconds at
full load and to hours at typical loads, while the re-exec (about 0.15 s of one core, in parallel with
the old runner still serving) costs under 0.1 ms per step amortised, i.e. under 3 % of the fork.

Audit. No execve happens per script, so process audit tools see the runner, not the script: every warm
start is logged (info) with the script's path, the sha256 of the bytes the runner compiled, and the pid.

Stop (:meth:`WarmRunner.stop`): the supervision task is cancelled, each runner's socket is closed (the
runner kills its children's process groups and exits), with a hard deadline after which it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec
from loguru import logger

from secauto.engine import warm_runner
from secauto.engine.process import CHUNK, kill_group
from secauto.engine.warm_runner import Exited, FromRunner, Ready, Refused, RunStep, Started

if TYPE_CHECKING:
    from loguru import Logger

RUNNER_FILE = Path(warm_runner.__file__).resolve()
RECYCLE_AFTER = 2000  # forks per runner before it is replaced (see the module docstring for why)
START_TIMEOUT = 30.0  # exec + preload until Ready
STOP_TIMEOUT = 5.0  # after closing its socket, how long a runner may take to exit before SIGKILL
BACKOFF_MIN, BACKOFF_MAX = 0.1, 10.0
STABLE_AFTER = 60.0  # a runner that lived this long resets the restart backoff
SAMPLES = 10_000  # fork / start latencies kept for the statistics

RunnerState = Literal["stopped", "starting", "ready", "restarting"]
_ENCODER = msgspec.msgpack.Encoder()
_DECODER: msgspec.msgpack.Decoder[FromRunner] = msgspec.msgpack.Decoder(FromRunner)


class RunnerUnavailable(Exception):
    """No warm runner can take this step now (starting, restarting, stopped): run it with spawn."""


class RunnerStartFailed(Exception):
    """A runner process could not be started or did not become ready."""


class WarmStats(msgspec.Struct, kw_only=True):
    """What the supervisor knows (``GET /metrics`` exports it; scripts/bench reads it)."""

    state: RunnerState
    pid: int | None  # the current runner's pid
    generation: int  # runners started so far (restarts and recycles included)
    restarts: int  # runners that died and were replaced
    recycles: int  # runners replaced after recycle_after forks
    forks: int  # steps started warm since the supervisor started
    fork_ms_p50: float | None  # the runner's os.fork() call, over the latest SAMPLES steps
    fork_ms_p99: float | None
    start_ms_p50: float | None  # node side: from sending the step to the runner's Started
    start_ms_p99: float | None


def _percentiles(samples: Sequence[float], *qs: float) -> list[float | None]:
    """The ``qs`` percentiles of ``samples`` (nearest rank), sorting them once; Nones when there are none."""
    if not samples:
        return [None for _ in qs]
    ordered = sorted(samples)
    return [round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4) for q in qs]


def _describe(returncode: int | None) -> str:
    if returncode is None:
        return "exit status unknown"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _prefill(fd: int, data: bytes) -> bytes:
    """Write what the empty pipe ``fd`` takes of ``data`` without blocking; returns the rest."""
    if not data:
        return b""
    os.set_blocking(fd, False)  # this end only: the script's end of the pipe stays blocking
    try:
        return data[os.write(fd, data):]
    except BlockingIOError:
        return data


def _reader_protocol(reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop) -> asyncio.StreamReaderProtocol:
    return asyncio.StreamReaderProtocol(reader, loop=loop)


class WarmChild:
    """One step's child in a warm runner: a :class:`~secauto.engine.process.Child`.

    ``kill()`` before the pid is known is remembered and done when ``Started`` arrives; after the exit
    it does nothing (the runner killed the rest of the group while that was safe, before reaping).
    """

    def __init__(self, path: Path, log: Logger, sent_at: float) -> None:
        self.path = path
        self.log = log
        self.sent_at = sent_at
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self.exited = asyncio.Event()
        self.pid: int | None = None
        self._returncode: int | None = None
        self._lost: str | None = None
        self._kill_requested = False
        self._transports: list[asyncio.BaseTransport] = []
        self.unsent_stdin = b""  # what start_step could not write ahead (see there)
        self.reported = False  # the exit status came from the child itself (warm_runner.Exited.reported)

    @property
    def returncode(self) -> int | None:
        return self._returncode

    @property
    def lost(self) -> str | None:
        return self._lost

    def kill(self) -> None:
        if self.exited.is_set():
            return
        if self.pid is None:
            self._kill_requested = True
        else:
            kill_group(self.pid)

    def on_started(self, message: Started) -> None:
        self.pid = message.pid
        self.log.info("script {} started in the warm runner (pid {}, sha256 {})", self.path, message.pid,
                      message.sha256)
        if self._kill_requested:
            kill_group(message.pid)

    def on_exited(self, status: int, reported: bool) -> None:
        self._returncode = os.waitstatus_to_exitcode(status)
        self.reported = reported
        self.exited.set()

    def on_lost(self, reason: str) -> None:
        if self.exited.is_set():
            return
        if self.pid is not None:
            kill_group(self.pid)  # grandchildren too; the script itself also dies of PR_SET_PDEATHSIG
        self._lost = reason
        self.exited.set()

    async def attach(self, stdin_fd: int, stdout_fd: int, stderr_fd: int) -> None:
        """Wrap this node's ends of the three pipes in asyncio streams (the fds are owned from here on);
        ``stdin_fd`` -1: stdin was written and closed already (``stdin`` stays None)."""
        loop = asyncio.get_running_loop()
        # Pipe ends, never blocking (the transports make them non-blocking); closed by their transports.
        files = [os.fdopen(fd, "rb", buffering=0) for fd in (stdout_fd, stderr_fd)]
        if stdin_fd >= 0:
            files.append(os.fdopen(stdin_fd, "wb", buffering=0))
        try:
            readers = []
            for file in files[:2]:
                reader = asyncio.StreamReader(limit=CHUNK, loop=loop)
                transport, _ = await loop.connect_read_pipe(functools.partial(_reader_protocol, reader, loop), file)
                self._transports.append(transport)
                readers.append(reader)
            if stdin_fd >= 0:
                protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop)
                write_transport, _ = await loop.connect_write_pipe(lambda: protocol, files[2])
                self._transports.append(write_transport)
                self.stdin = asyncio.StreamWriter(write_transport, protocol, None, loop)
        except BaseException:
            self.close()
            for file in files:
                file.close()
            raise
        self.stdout, self.stderr = readers

    def close(self) -> None:
        """Close this node's pipe ends (idempotent)."""
        for transport in self._transports:
            transport.close()
        self._transports.clear()


class _Runner:
    """One runner process, its control socket and the tasks reading its socket and its stderr."""

    def __init__(self, proc: asyncio.subprocess.Process, sock: socket.socket, generation: int,
                 on_dead: asyncio.Event, log: Logger, fork_samples: deque[float],
                 start_samples: deque[float]) -> None:
        self.proc = proc
        self.sock = sock
        self.generation = generation
        self.log = log
        self.ready: asyncio.Future[Ready] = asyncio.get_running_loop().create_future()
        self.dead = asyncio.Event()
        self.inflight: dict[int, WarmChild] = {}
        self.forks = 0
        self.modules: frozenset[str] = frozenset()  # from its Ready
        self.retiring = False
        self._send_lock = asyncio.Lock()
        self._on_dead = on_dead
        self._fork_samples = fork_samples
        self._start_samples = start_samples
        self._reader = asyncio.create_task(self._read(), name=f"warm-runner-{proc.pid}-read")
        self._stderr = asyncio.create_task(self._log_stderr(), name=f"warm-runner-{proc.pid}-stderr")

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def send(self, message: bytes, fds: list[int]) -> None:
        """Send one step; raises OSError (e.g. BrokenPipeError) when the runner is gone. When the socket
        is full (the kernel queues few records per unix socket), senders wait their turn: one at a time
        waits for writability, since the event loop keeps a single writer callback per socket (a lock
        nobody holds is taken without suspending, so the usual case costs no extra loop iteration)."""
        loop = asyncio.get_running_loop()
        async with self._send_lock:
            while True:
                try:
                    socket.send_fds(self.sock, [message], fds)
                    return
                except BlockingIOError:
                    writable = loop.create_future()
                    loop.add_writer(self.sock, writable.set_result, None)
                    try:
                        await writable
                    finally:
                        loop.remove_writer(self.sock)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        how = "closed its control socket"
        try:
            while True:
                data = await loop.sock_recv(self.sock, 65536)
                if not data:
                    break
                self._dispatch(_DECODER.decode(data))
        except OSError as exc:
            how = f"control socket error: {exc}"
        except Exception as exc:  # a message we cannot handle: a bug; this runner cannot be trusted further
            self.log.opt(exception=exc).error("warm script runner {} sent what the node cannot handle", self.pid)
            how = f"protocol error: {type(exc).__name__}: {exc}"
        finally:
            self.sock.close()
        with contextlib.suppress(ProcessLookupError):  # make sure it is gone before we say so
            if self.proc.returncode is None and not self.retiring:
                await self._wait_exit(STOP_TIMEOUT)
        self._mark_dead(how)

    async def _wait_exit(self, within: float) -> None:
        try:
            await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def _mark_dead(self, how: str) -> None:
        status = _describe(self.proc.returncode)
        reason = f"failed: the warm script runner (pid {self.pid}) died ({status}; {how}) while the script ran"
        if self.inflight:
            self.log.error("warm script runner {} is gone ({}; {}): {} step(s) in flight fail", self.pid, status,
                           how, len(self.inflight))
        for child in self.inflight.values():
            child.on_lost(reason)
        self.inflight.clear()
        if not self.ready.done():
            self.ready.set_exception(RunnerStartFailed(f"the runner ended before it was ready ({status}; {how})"))
            self.ready.exception()  # retrieved: _launch reports it when it still waits, else nobody needs it
        self.dead.set()
        self._on_dead.set()

    def _dispatch(self, message: FromRunner) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(message, Started):
            child = self.inflight.get(message.id)
            self._fork_samples.append(message.fork_ms)
            if child is not None:
                self._start_samples.append((loop.time() - child.sent_at) * 1000)
                child.on_started(message)
        elif isinstance(message, Exited):
            child = self.inflight.pop(message.id, None)
            if child is not None:
                child.on_exited(message.status, message.reported)
            self.retire_if_idle()
        elif isinstance(message, Refused):
            child = self.inflight.pop(message.id, None)
            if child is not None:
                child.on_lost(f"could not be started by the warm script runner: {message.message}")
            self.retire_if_idle()
        elif not self.ready.done():
            self.ready.set_result(message)

    async def _log_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        while line := await stream.readline():
            self.log.warning("warm script runner {}: {}", self.pid, line.decode(errors="replace").rstrip())

    def retire_if_idle(self) -> None:
        """A retiring runner with no step left: close its socket so that it exits."""
        if self.retiring and not self.inflight and not self.dead.is_set():
            with contextlib.suppress(OSError):  # already shut down
                self.sock.shutdown(socket.SHUT_RDWR)

    async def close(self, within: float = STOP_TIMEOUT) -> None:
        """Stop this runner: close its socket (it kills its children and exits), SIGKILL it after
        ``within`` seconds, then end the reader tasks. Steps still in flight end as lost."""
        self.retiring = True
        with contextlib.suppress(OSError):  # already shut down or closed
            self.sock.shutdown(socket.SHUT_RDWR)
        if self.proc.returncode is None:
            await self._wait_exit(within)
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), within)
        except TimeoutError:
            self._reader.cancel()
        for task in (self._reader, self._stderr):
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # the tasks we just cancelled, not ours
                await task
        if not self.dead.is_set():
            self._mark_dead("stopped")


class WarmRunner:
    """Supervises this node's warm script runner; see the module docstring.

    ``env`` is the scripts' environment (the runner is exec'd with exactly it), ``preload`` the modules
    it imports. :meth:`start` and :meth:`stop` are each called once; :meth:`start_step` may be called
    any time in between (and raises :class:`RunnerUnavailable` when no runner is ready).
    """

    def __init__(self, *, env: Mapping[str, str], preload: Sequence[str], recycle_after: int = RECYCLE_AFTER,
                 start_timeout: float = START_TIMEOUT) -> None:
        self.env = dict(env)
        self.preload = tuple(preload)
        self.python = sys.executable
        self.recycle_after = recycle_after
        self.start_timeout = start_timeout
        self.log = logger.bind(component="scripts")
        self._current: _Runner | None = None
        self._runners: set[_Runner] = set()  # every runner not yet closed (current and retiring)
        self._attention = asyncio.Event()  # a runner died or one reached recycle_after forks
        self._first = asyncio.Event()  # the first start attempt ended (ready or failed)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._ids = itertools.count(1)
        self._state: RunnerState = "stopped"
        self._fork_samples: deque[float] = deque(maxlen=SAMPLES)
        self._start_samples: deque[float] = deque(maxlen=SAMPLES)
        self._generation = self._restarts = self._recycles = self._forks = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start supervising and wait (at most ``start_timeout``) for the first runner to be ready or to
        fail; a runner that is not ready yet is no error (steps use spawn until it is)."""
        if self._task is not None:
            raise RuntimeError("WarmRunner.start() called twice")
        self._state = "starting"
        self._task = asyncio.create_task(self._supervise(), name="warm-runner-supervisor")
        try:
            await asyncio.wait_for(self._first.wait(), self.start_timeout)
        except TimeoutError:
            self.log.warning("the warm script runner is not ready after {:g}s; steps run with spawn until it is",
                             self.start_timeout)

    async def stop(self, within: float = STOP_TIMEOUT) -> None:
        """Stop supervising, then stop every runner (each within ``within`` seconds, then SIGKILL). Steps still
        running fail as lost. Safe to call without start() and more than once."""
        self._stopping = True
        self._state = "stopped"
        self._current = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        for runner in list(self._runners):
            await runner.close(within)
            self._runners.discard(runner)

    # ------------------------------------------------------------------ steps

    @property
    def loaded_modules(self) -> frozenset[str]:
        """Top-level names of the modules the current runner holds (empty while none is ready)."""
        runner = self._current
        return runner.modules if runner is not None else frozenset()

    def usable_for(self, python: str, env: Mapping[str, str]) -> bool:
        """Whether a step with this interpreter and environment may run warm at all (same interpreter as
        the runner, and the environment the runner was exec'd with, which /proc/self/environ shows)."""
        return python == self.python and env == self.env

    async def start_step(self, path: Path, *, argv: Sequence[str], cwd: Path,
                         stdin: bytes = b"", limits: Mapping[str, int] | None = None,
                         user: tuple[int, int, str] | None = None, log: Logger | None = None) -> WarmChild:
        """Start script ``path`` in a fork of the current runner (the caller checked :meth:`usable_for`: the
        script gets the runner's environment); returns its :class:`WarmChild` with the
        pipes attached. ``stdin`` is written to the script's stdin before the step is sent, as far as
        the pipe holds it (64 KiB on Linux), so that the script does not wait for its input; the rest,
        if any, is ``child.unsent_stdin`` for the caller to feed (stdin is closed at once otherwise).
        ``limits`` (the engine.script_limits that are set) and ``user`` (engine.script_user
        as uid, gid, name) are applied in the child before the script runs. Raises
        :class:`RunnerUnavailable` when no runner is ready or the runner could not take the step (nothing
        was started then). On cancellation nothing is left running."""
        runner = self._current
        if runner is None or self._stopping or runner.dead.is_set():
            raise RunnerUnavailable(f"the warm script runner is {self._state}")
        step_id = next(self._ids)
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        loop = asyncio.get_running_loop()
        child = WarmChild(path, log or self.log, loop.time())
        child.unsent_stdin = _prefill(stdin_w, stdin)
        if not child.unsent_stdin:
            os.close(stdin_w)
            stdin_w = -1
        ours = [fd for fd in (stdin_w, stdout_r, stderr_r) if fd >= 0]
        message = _ENCODER.encode(RunStep(id=step_id, path=str(path), argv=list(argv), cwd=str(cwd),
                                          limits=dict(limits or {}), user=user))
        runner.inflight[step_id] = child
        try:
            await runner.send(message, [stdin_r, stdout_w, stderr_w])
        except BaseException as exc:
            runner.inflight.pop(step_id, None)
            for fd in ours:
                os.close(fd)
            if isinstance(exc, OSError):
                raise RunnerUnavailable(f"the warm script runner cannot take the step: {exc}") from None
            raise
        finally:
            for fd in (stdin_r, stdout_w, stderr_w):
                os.close(fd)
        runner.forks += 1
        self._forks += 1
        if runner.forks == self.recycle_after:
            self._attention.set()
        try:
            await child.attach(stdin_w, stdout_r, stderr_r)
        except BaseException:
            child.kill()
            raise
        return child

    def stats(self) -> WarmStats:
        current = self._current
        fork_p50, fork_p99 = _percentiles(self._fork_samples, 0.5, 0.99)
        start_p50, start_p99 = _percentiles(self._start_samples, 0.5, 0.99)
        return WarmStats(state=self._state, pid=current.pid if current is not None else None,
                         generation=self._generation, restarts=self._restarts, recycles=self._recycles,
                         forks=self._forks, fork_ms_p50=fork_p50, fork_ms_p99=fork_p99, start_ms_p50=start_p50,
                         start_ms_p99=start_p99)

    # ------------------------------------------------------------------ supervision

    async def _launch(self) -> _Runner:
        """Exec a runner and wait for its Ready; raises RunnerStartFailed (nothing left running)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.python, "-P", str(RUNNER_FILE), "--fd", str(theirs.fileno()), "--preload", ",".join(self.preload),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                env=self.env, cwd="/", pass_fds=(theirs.fileno(),), start_new_session=True)
        except OSError as exc:
            ours.close()
            raise RunnerStartFailed(f"cannot exec {self.python}: {exc}") from None
        finally:
            theirs.close()
        ours.setblocking(False)
        self._generation += 1
        runner = _Runner(proc, ours, self._generation, self._attention, self.log, self._fork_samples,
                         self._start_samples)
        self._runners.add(runner)
        try:
            ready = await asyncio.wait_for(asyncio.shield(runner.ready), self.start_timeout)
        except BaseException as exc:
            await runner.close(0.5)
            self._runners.discard(runner)
            if isinstance(exc, TimeoutError):
                raise RunnerStartFailed(f"not ready within {self.start_timeout:g}s") from None
            raise
        runner.modules = frozenset(ready.modules)
        for problem in ready.preload_failed:
            self.log.warning("the warm script runner could not preload {}", problem)
        self.log.info("warm script runner {} ready in {:.0f} ms (generation {})", ready.pid, ready.start_ms,
                      runner.generation)
        return runner

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_MIN
        while True:
            try:
                runner = await self._launch()
            except RunnerStartFailed as exc:
                self._first.set()
                self._state = "restarting"
                self.log.error("cannot start the warm script runner ({}); steps run with spawn, retrying in {:g}s",
                               exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self._current, self._state = runner, "ready"
            self._first.set()
            born = loop.time()
            while True:
                await self._attention.wait()
                self._attention.clear()
                await self._close_retired()
                if runner.dead.is_set():
                    break
                if runner.forks >= self.recycle_after and not runner.retiring:
                    await self._recycle(runner)
                    runner = self._current if self._current is not None else runner
                    born = loop.time()
            self._current, self._state = None, "restarting"
            self._restarts += 1
            if loop.time() - born >= STABLE_AFTER:
                backoff = BACKOFF_MIN
            self.log.error("the warm script runner (pid {}) died ({}); steps run with spawn, restarting in {:g}s",
                           runner.pid, _describe(runner.proc.returncode), backoff)
            await runner.close()
            self._runners.discard(runner)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _recycle(self, old: _Runner) -> None:
        """Replace ``old`` by a fresh runner; ``old`` serves until the new one is ready, then drains."""
        try:
            new = await self._launch()
        except RunnerStartFailed as exc:
            self.log.error("cannot start a replacement warm script runner ({}); runner {} keeps serving", exc,
                           old.pid)
            old.forks = 0  # try again after another recycle_after forks
            return
        if old.dead.is_set():  # it died meanwhile: the new one simply takes over
            self._restarts += 1
        self._recycles += 1
        self._current = new
        old.retiring = True
        old.retire_if_idle()

    async def _close_retired(self) -> None:
        """Finish off retired runners that have exited (ends their tasks) and forget them."""
        for runner in list(self._runners):
            if runner.retiring and runner.dead.is_set() and runner is not self._current:
                await runner.close()
                self._runners.discard(runner)
