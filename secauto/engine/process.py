"""Running a child process safely: own process group, capped output, timeout, no orphans.

:func:`run_process` starts ``argv`` directly (no shell) in a new session, so the child and everything
it spawns share one process group. It feeds ``stdin``, reads stdout and stderr concurrently into
buffers capped at ``max_output_bytes`` each, and waits for the exit under ``timeout``.

Whatever happens, the whole process group is sent SIGKILL when the run ends: when the child exits
(stragglers it left behind are killed too), when its output overflows the cap, on timeout, and when the
calling task is cancelled (the group is killed at once, reaped, and ``CancelledError`` propagates).
Errors: :class:`ProcessTimeout` and :class:`OutputTooLarge` (both carry the output read so far); a
failure to start the program raises ``OSError`` from ``asyncio.create_subprocess_exec``, and so does an
exception in ``child_setup`` (re-raised as ``OSError`` naming it; nothing was run).

``child_setup``, when given, is called in the forked child before ``exec`` (``preexec_fn``): the script
runner applies ``engine.script_limits`` and ``engine.script_user`` there
(:func:`secauto.engine.script_limits.apply_in_child`). It must make only system calls: the node has
threads (asyncio's child watcher, the resolver's executor), and Python code after ``fork`` must not
need a lock another thread might hold. ``preexec_fn`` also makes the subprocess module use ``fork``
instead of ``vfork``, so it is passed only when there is something to set up.

The feeding, capture, timeout and kill logic is :func:`supervise`, which works on any :class:`Child`
(a spawned process here, a fork of the warm script runner in :mod:`secauto.engine.warm`), so both ways
of running a script keep exactly the same guarantees.

Limits: a descendant that moves itself into another session (``setsid``) leaves the group and cannot be
killed this way; if such a process keeps our pipes open, reading stops after a short grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import msgspec

CHUNK = 65536
# After the child exited and its group was killed, how long to wait for the pipes to reach EOF.
PIPE_GRACE = 2.0


class ProcessOutcome(msgspec.Struct, kw_only=True):
    returncode: int
    stdout: bytes
    stderr: bytes


class ProcessFailure(Exception):
    """The process could not complete; ``stdout``/``stderr`` hold what was read before it was killed."""

    def __init__(self, message: str, *, stdout: bytes = b"", stderr: bytes = b"") -> None:
        super().__init__(message)
        self.stdout = stdout
        self.stderr = stderr


class ProcessTimeout(ProcessFailure):
    pass


class OutputTooLarge(ProcessFailure):
    pass


def kill_group(pgid: int) -> None:
    """SIGKILL every process in group ``pgid``; a group that no longer exists is fine."""
    with contextlib.suppress(ProcessLookupError):  # the group is already gone: nothing to kill
        os.killpg(pgid, signal.SIGKILL)


class _Capture:
    """A capped buffer fed from one pipe; on overflow it calls ``on_overflow`` and stops reading."""

    def __init__(self, limit: int, on_overflow: Callable[[], None]) -> None:
        self.data = bytearray()
        self.limit = limit
        self.overflowed = False
        self._on_overflow = on_overflow

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(CHUNK):
            room = self.limit - len(self.data)
            if len(chunk) > room:
                self.data.extend(chunk[:room])
                self.overflowed = True
                self._on_overflow()
                return
            self.data.extend(chunk)


async def _feed(writer: asyncio.StreamWriter | None, data: bytes) -> None:
    """Write ``data`` to the child's stdin and close it; a child that exits without reading is fine."""
    if writer is None:
        return
    try:
        writer.write(data)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        # The child closed its stdin or died; its exit status and output tell the story.
        return


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """The protocol of ``asyncio.create_subprocess_exec``, plus an event set the moment the child is
    reaped. (``Process.wait()`` also waits for the child's pipes to close, which a descendant that
    inherited them can delay forever; polling ``returncode`` instead added up to 50 ms per script.)"""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


async def _spawn(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None,
                 child_setup: Callable[[], None] | None = None,
                 ) -> tuple[asyncio.subprocess.Process, asyncio.Event, asyncio.SubprocessTransport]:
    """``asyncio.create_subprocess_exec`` with pipes on all three streams, in a new session, returning
    the process, an event set when it exits, and its transport. Raises OSError when the program cannot
    start or ``child_setup`` failed in the child."""
    loop = asyncio.get_running_loop()
    protocol = _ExitAwareProtocol(limit=CHUNK, loop=loop)
    try:
        transport, _ = await loop.subprocess_exec(
            lambda: protocol, *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=dict(env), cwd=cwd, start_new_session=True,
            preexec_fn=child_setup)
    except subprocess.SubprocessError as exc:
        # The subprocess module's report of an exception raised by preexec_fn in the child (the child
        # exited before exec); the caller handles start failures as OSError.
        raise OSError(f"setting up the child process failed ({exc})") from None
    return asyncio.subprocess.Process(transport, protocol, loop), protocol.exited, transport



class Child(Protocol):
    """A started child whose stdio pipes this process holds: what :func:`supervise` needs of it.

    Two kinds exist: a process this node spawned (:func:`run_process`) and a fork of the warm script
    runner (:mod:`secauto.engine.warm`). ``exited`` is set once the child has been reaped, or once it
    can no longer be watched (then ``lost`` says why and ``returncode`` stays None).
    """

    stdin: asyncio.StreamWriter | None
    stdout: asyncio.StreamReader | None
    stderr: asyncio.StreamReader | None
    exited: asyncio.Event

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal), None while running or when lost."""
        ...

    @property
    def lost(self) -> str | None:
        """Why the child could not be watched to its end (e.g. the warm runner died), or None."""
        ...

    def kill(self) -> None:
        """SIGKILL the child's whole process group (at once, or as soon as its pid is known)."""
        ...


class _SpawnedChild:
    """:class:`Child` over an ``asyncio.subprocess.Process`` started in a new session."""

    def __init__(self, proc: asyncio.subprocess.Process, exited: asyncio.Event) -> None:
        self.proc = proc
        self.stdin, self.stdout, self.stderr = proc.stdin, proc.stdout, proc.stderr
        self.exited = exited

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def lost(self) -> str | None:
        return None

    def kill(self) -> None:
        kill_group(self.proc.pid)  # start_new_session: the child leads its own session and process group


class ProcessLost(ProcessFailure):
    """The child could no longer be watched (its warm runner died); its group was killed."""


async def run_process(
    argv: Sequence[str],
    *,
    stdin: bytes,
    env: Mapping[str, str],
    cwd: Path | None,
    time_limit: float,
    max_output_bytes: int,
    child_setup: Callable[[], None] | None = None,
) -> ProcessOutcome:
    """Run ``argv`` to completion; see the module docstring for the kill/cancel guarantees and for
    ``child_setup`` (called in the child before exec)."""
    proc, exited, transport = await _spawn(argv, env=env, cwd=cwd, child_setup=child_setup)
    try:
        return await supervise(_SpawnedChild(proc, exited), stdin=stdin, time_limit=time_limit,
                               max_output_bytes=max_output_bytes)
    finally:
        # Done with the pipes: after EOF this is a no-op; after a cancellation (or reading given up on
        # an escaped descendant) it closes them now rather than leaving the transport to wait for an
        # EOF that may come after the event loop closed.
        transport.close()


async def supervise(child: Child, *, stdin: bytes, time_limit: float, max_output_bytes: int) -> ProcessOutcome:
    """Feed ``stdin`` to a started child, capture its capped output and wait for its exit under
    ``time_limit``; the child's process group is killed whenever the run ends (module docstring).

    Raises :class:`OutputTooLarge`, :class:`ProcessTimeout` or :class:`ProcessLost` (each with the
    output read so far). On cancellation the group is killed, the exit awaited, and CancelledError
    propagates.
    """
    out = _Capture(max_output_bytes, child.kill)
    err = _Capture(max_output_bytes, child.kill)
    timed_out = False
    try:
        async with asyncio.TaskGroup() as tg:
            pipes = [tg.create_task(out.drain(child.stdout)), tg.create_task(err.drain(child.stderr))]
            feeder = tg.create_task(_feed(child.stdin, stdin))
            try:
                async with asyncio.timeout(time_limit):
                    await child.exited.wait()
            except TimeoutError:
                timed_out = True
            finally:
                child.kill()  # stragglers after a normal exit; everyone on timeout or cancellation
            _, pending = await asyncio.wait([*pipes, feeder], timeout=PIPE_GRACE)
            for task in pending:  # an escaped descendant holds our pipes: stop reading
                task.cancel()
    finally:
        if not child.exited.is_set():  # cancelled or failed before the exit was seen
            child.kill()
            await child.exited.wait()
    stdout, stderr = bytes(out.data), bytes(err.data)
    if out.overflowed or err.overflowed:
        which = "stdout" if out.overflowed else "stderr"
        raise OutputTooLarge(
            f"{which} exceeded {max_output_bytes} bytes; the process was killed", stdout=stdout, stderr=stderr
        )
    if timed_out:
        message = f"timed out after {time_limit:g}s; the process group was killed"
        raise ProcessTimeout(message, stdout=stdout, stderr=stderr)
    if child.lost is not None:
        raise ProcessLost(child.lost, stdout=stdout, stderr=stderr)
    returncode = child.returncode
    assert returncode is not None  # the exit was seen
    return ProcessOutcome(returncode=returncode, stdout=stdout, stderr=stderr)
