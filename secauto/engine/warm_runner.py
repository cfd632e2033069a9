"""The warm script runner process: a long-lived interpreter that forks one child per ``run_script`` step.

The node (:mod:`secauto.engine.warm`) starts it with exec, never as a fork of itself, as
``python -P <this file> --fd N --preload json,re,...`` with the scripts' scrubbed environment only, so it
holds none of the node's API keys, Redis connection, secrets or configuration. ``-P`` keeps this
file's folder off ``sys.path`` (it would shadow stdlib names such as ``secrets``). The file imports the
standard library and msgspec only; the node imports it just for the message types.

Start: import the ``--preload`` modules (a failure is reported, never fatal), collect and
``gc.freeze()`` the heap (forked children then do not copy the pages of those objects when the
collector runs), and send :class:`Ready` on the control socket (fd N, an ``AF_UNIX`` ``SOCK_SEQPACKET``
socket: one message per record).

Per step the node sends one :class:`RunStep` with three file descriptors attached (the child's stdin,
stdout and stderr pipes). The runner compiles the script once per (path, inode, size, mtime, ctime)
and keeps the code object (and the file's sha256) in a small cache, forks, answers :class:`Started`
(pid, sha256, fork time) and later :class:`Exited` (the raw wait status), or :class:`Refused` when it
cannot read the script or fork. When a child ends, the runner kills what is left of its process group
while the child is not reaped yet (so the group id cannot have been reused), then reaps it.

Exit reports. Tearing down a child's copy of the runner's memory takes the kernel about 1 ms with the
default preload, and a child is a zombie (its status known to the runner) only after that. So a child
whose script ended normally closes its stdio and sends its exit status first, in one datagram to the
runner's report socket (an abstract ``AF_UNIX`` name with ``SO_PASSCRED``: the kernel stamps each
datagram with its sender's pid), lowers its priority (nice 19) and exits. The runner takes a report
only from the pid of a step's child that has not ended: it kills that process group then, sends
:class:`Exited` (``reported``) and later reaps the child without a second one. A report cannot do more
than the script could do by exiting: another unprivileged process cannot claim a child's pid, and a
script may report only its own end. Children that die of a signal or call ``os._exit`` are reaped.

To keep fork() off a step's critical path, the runner keeps one *spare*: a child forked ahead, already
in its own session with PR_SET_PDEATHSIG set and every fd but its socket closed, that rehearses the
step's set-up and a script's usual I/O on placeholder pipes (:func:`_rehearse`: the pages that touches
are then copied before the step arrives) and waits for a step. The spare is forked when a step ended
(and at start), not when one started: on a small machine its fork and rehearsal competed with the
running script. A step goes to the spare when no script was compiled since the spare was forked (its
copy of the code cache has the script); otherwise the spare is discarded and the step's child is
forked on demand. Either way the process is a fresh fork of the clean runner, used for one step only.

The child becomes the script as ``python <path>`` would run it: its own session and process group,
``PR_SET_PDEATHSIG`` (it dies with the runner), the three pipes on fds 0-2 and every other fd closed,
the limits (:func:`_apply_child_limits`), the runner's environment (the node sends a step here only
when the script's environment is the one the runner was exec'd with, so ``os.environ`` is what
``python`` would have, ``LC_CTYPE`` coercion included), the working
directory, ``sys.argv``, the script's folder first on ``sys.path``, fresh ``sys.std*`` objects, and the
cached code executed in a new ``__main__`` module. Exit as in the interpreter: ``SystemExit`` codes,
traceback and status 1 for an uncaught exception, non-daemon threads joined, ``atexit`` handlers run,
stdout flushed (status 120 if that fails); then ``os._exit``: the child never returns to the runner's
loop.

End: EOF on the control socket (the node closed it, or died) makes the runner kill its children's
process groups, reap them and exit 0. A protocol error (a message it cannot decode) is a bug: the
runner writes it to stderr and exits 2; the node treats that as a runner death.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import importlib
import io
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any

import msgspec

# Modules a script commonly imports, preloaded by default (engine.preload replaces this list). With
# pkgutil and typing: runpy-style helpers and annotations would otherwise import them in every child.
DEFAULT_PRELOAD: tuple[str, ...] = (
    "argparse", "base64", "collections", "csv", "dataclasses", "datetime", "enum", "functools", "hashlib",
    "hmac", "http.client", "ipaddress", "itertools", "json", "logging", "pathlib", "pkgutil", "random", "re",
    "shlex", "socket", "ssl", "string", "subprocess", "tempfile", "textwrap", "threading", "traceback",
    "typing", "urllib.error", "urllib.parse", "urllib.request", "uuid",
)  # fmt: skip

CODE_CACHE_SIZE = 256  # compiled scripts kept (least recently used dropped first)
FDS_PER_STEP = 3
MAX_MESSAGE = 1 << 20
PR_SET_PDEATHSIG = 1
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid (SCM_CREDENTIALS)


class RunStep(msgspec.Struct, tag="run", array_like=True):
    """Node -> runner, with the step's stdin, stdout and stderr pipe ends attached (SCM_RIGHTS)."""

    id: int
    path: str  # the resolved script file (the node confined it to scripts_dir)
    argv: list[str]  # sys.argv of the script
    cwd: str
    # engine.script_limits that are set (cpu_seconds, memory_mb, open_files, processes) and
    # engine.script_user as (uid, gid, name); see _apply_child_limits.
    limits: dict[str, int] = {}
    user: tuple[int, int, str] | None = None


class Ready(msgspec.Struct, tag="ready", array_like=True):
    """Runner -> node once the preload is done and the heap frozen."""

    pid: int
    preload_failed: list[str]  # "module: error" for each module that could not be imported
    start_ms: float  # from the runner's first line to Ready
    # Top-level names of every module the runner holds (preloaded, or imported by those): a script
    # whose folder has a module of one of these names must spawn (see scripts.shadowing_module).
    modules: list[str] = []


class Started(msgspec.Struct, tag="started", array_like=True):
    """Runner -> node: the child of step ``id`` is ``pid`` (which is also its process group id)."""

    id: int
    pid: int
    sha256: str  # of the script bytes that were compiled
    fork_ms: float  # the os.fork() call that made this step's process (ahead of time when it was the spare)


class Exited(msgspec.Struct, tag="exited", array_like=True):
    """Runner -> node: the child of step ``id`` ended; ``status`` is the raw wait status.

    ``reported``: the child told its exit status itself on its way out (after the script and the
    interpreter's exit steps, with its stdio already closed) and the runner killed its process group
    then; False: the runner learned the status by reaping it (a signal, ``os._exit`` in the script, a
    child that could not report)."""

    id: int
    status: int
    reported: bool = False


class Refused(msgspec.Struct, tag="refused", array_like=True):
    """Runner -> node: step ``id`` was not started (the script could not be read, fork failed)."""

    id: int
    message: str


FromRunner = Ready | Started | Exited | Refused


class _Entry(msgspec.Struct):
    key: tuple[int, int, int, int, int]
    sha256: str
    code: Any  # a code object, or None when the source does not compile (the child reports the error)
    source: bytes


def _preload(names: Sequence[str]) -> list[str]:
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # reported to the node in Ready; scripts importing it will fail on their own
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    return failed


def _pdeathsig_setter() -> Any:
    """A callable that sets PR_SET_PDEATHSIG to SIGKILL in the calling process, or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _load_script_limits() -> Any:
    """``secauto/engine/script_limits.py`` loaded by path (it imports only the standard library and
    msgspec; importing the ``secauto`` package would load the node's modules into the runner)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "script_limits.py")
    spec = importlib.util.spec_from_file_location("secauto_runner_script_limits", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT_LIMITS: Any = None  # the script_limits module, loaded at start (before the heap is frozen)
START_FAILED = 126  # a child's exit status when its set-up failed and the script never ran
START_FAILED_PREFIX = b"secauto warm runner: cannot start the script"


def _apply_child_limits(step: RunStep) -> None:
    """THE call site for ``engine.script_limits`` and ``engine.script_user`` in a warm child, before any
    script code runs: :func:`secauto.engine.script_limits.apply_in_child`, as the spawn runner does in
    ``preexec_fn``. Raises (OSError from the kernel) when a limit or the user switch is refused; the
    child then reports a start failure and runs nothing."""
    if not step.limits and step.user is None:
        return
    limits = SCRIPT_LIMITS.ScriptLimits(**step.limits)
    user = SCRIPT_LIMITS.ScriptUser(uid=step.user[0], gid=step.user[1], name=step.user[2]) if step.user else None
    SCRIPT_LIMITS.apply_in_child(limits, user)


def _fresh_stdio() -> None:
    """New ``sys.std*`` objects on fds 0-2, built as the interpreter builds them at start (encoding and
    buffering as the runner's own streams got them from the same environment)."""
    streams: Any = sys  # the __std*__ names are Final to type checkers; the interpreter sets them like this
    sys.stdin, sys.stdout, sys.stderr = streams.__stdin__, streams.__stdout__, streams.__stderr__ = _stdio_on(0, 1, 2)


# A pattern with the constructs IOC and hostname patterns use: classes, groups, alternation, repeats, a
# lookahead and anchors (see _rehearse).
_REHEARSAL_PATTERN = r"^(?=.{1,253}$)(?:[A-Za-z0-9_-]{1,63}\.)*[a-z]{2,}|\b\d{1,3}(?:\.\d{1,3}){3}(?:/\d+)?\b"


def _rehearse() -> None:
    """Go through a step's set-up and a script's usual I/O once, on placeholder pipes, and drop the results.

    A spare does this while it waits. A fresh fork's first pass through any code writes to the runner's
    pages that hold the objects it touches (reference counts), and each such page is copied on its first
    write: building and installing the stdio objects and the ``__main__`` module (freeing the runner's)
    and a JSON round trip (every script reads JSON on stdin and prints JSON) took about 0.6 ms on a
    step's critical path that way, and compiling a first regular expression (what enrichment scripts do
    at import) about 0.3 ms more. The second pass, for the step, finds those pages copied already.
    Nothing the script can see is changed: the stdio objects installed here are on this process's own
    fds 0-2 (replaced again once the step's pipes are there), ``json`` and ``re`` are used only when the
    runner holds them already, and the pattern is compiled below ``re``'s cache (a script finds the cache
    as the runner left it)."""
    _fresh_stdio()
    sys.modules["__main__"] = _main_module(os.devnull)
    sys.argv, sys.orig_argv = list(sys.argv), list(sys.orig_argv)
    sys.path.insert(0, "")
    del sys.path[0]
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    try:
        stdin, stdout, _ = _stdio_on(in_read, out_write, out_write)  # closefd=False: closed below
        json = sys.modules.get("json")
        os.write(in_write, b'{"rehearsal": [1, 2.5, "text", null, true, {"nested": false}]}\n')
        os.close(in_write)
        in_write = -1
        text = stdin.read()
        if json is not None:
            text = json.dumps(json.loads(text))
        print(text, file=stdout)
        stdout.flush()
        os.read(out_read, 4096)
        compiler = getattr(sys.modules.get("re"), "_compiler", None)  # Python >= 3.11
        if compiler is not None:
            compiler.compile(_REHEARSAL_PATTERN, 0).search("host-1.example, 10.0.0.1/24")
    finally:
        for fd in (in_read, in_write, out_read, out_write):
            if fd >= 0:
                os.close(fd)


def _stdio_on(stdin_fd: int, stdout_fd: int, stderr_fd: int) -> tuple[io.TextIOWrapper, ...]:
    """stdin, stdout and stderr objects on these fds (not closing them when collected)."""
    template: Any = sys.__stdout__ or sys.stdout
    encoding = str(getattr(template, "encoding", None) or "utf-8")
    errors = str(getattr(template, "errors", None) or "strict")
    buffered = not getattr(template, "write_through", False)  # -u or PYTHONUNBUFFERED: write-through

    def stream(fd: int, name: str, mode: str, errs: str, line: bool) -> io.TextIOWrapper:
        raw: Any = io.FileIO(fd, mode, closefd=False)
        raw.name = name  # as the interpreter names them
        buffer: Any = raw  # unbuffered stdout: writes go straight to the fd
        if mode == "r":
            buffer = io.BufferedReader(raw)
        elif buffered or fd == 2:
            buffer = io.BufferedWriter(raw)
        return io.TextIOWrapper(buffer, encoding=encoding, errors=errs, line_buffering=line,
                                write_through=not buffered and mode == "w")

    return (stream(stdin_fd, "<stdin>", "r", errors, False), stream(stdout_fd, "<stdout>", "w", errors, False),
            stream(stderr_fd, "<stderr>", "w", "backslashreplace", True))


def _exit_status(exc: SystemExit) -> int:
    """The process status for ``SystemExit`` as the interpreter computes it."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(Exception):  # stderr is gone: the status still says it failed
        print(code, file=sys.stderr)
    return 1


def _main_module(path: str) -> Any:
    """A new ``__main__`` module for the script at ``path``, as ``python path`` makes it."""
    import builtins
    import types
    from importlib.machinery import SourceFileLoader

    main: Any = types.ModuleType("__main__")
    main.__file__ = path
    main.__cached__ = None
    main.__builtins__ = builtins
    main.__loader__ = SourceFileLoader("__main__", path)
    main.__spec__ = None
    return main


def _run_main(step: RunStep, entry: _Entry) -> int:
    """Execute the script as ``__main__`` and finalize as the interpreter does; returns the status."""
    main = _main_module(step.path)
    sys.modules["__main__"] = main
    sys.argv = list(step.argv)
    sys.orig_argv = [sys.executable, *step.argv]
    sys.path.insert(0, os.path.dirname(step.path))
    interrupted = False
    code = entry.code
    if code is None:
        try:
            code = compile(entry.source, step.path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:  # reported as the interpreter does: no traceback header
            sys.excepthook(type(exc), exc.with_traceback(None), None)
            return _finalize(1)
    try:
        exec(code, main.__dict__)
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException as exc:
        # The traceback starts at the script's <module>, as in the interpreter: this frame is left out.
        tb = exc.__traceback__
        if tb is not None and tb.tb_frame.f_code is _run_main.__code__:
            tb = tb.tb_next
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        interrupted = isinstance(exc, KeyboardInterrupt)
        status = 1
    status = _finalize(status)
    if interrupted:  # die of SIGINT, as the interpreter does after an uncaught KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return status


def _finalize(status: int) -> int:
    """What the interpreter does at exit: join non-daemon threads, run atexit handlers, flush stdout
    (a failure makes the status 120) and stderr. Returns the final status."""
    import atexit

    threading = sys.modules.get("threading")
    if threading is not None:
        threading._shutdown()  # join non-daemon threads, as at exit
    atexit._run_exitfuncs()
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except Exception:  # the interpreter's rule: a failed flush of stdout makes the status 120
        status = 120
    with contextlib.suppress(Exception):  # nothing left to report it on
        if sys.stderr is not None:
            sys.stderr.flush()
    return status


class Runner:
    """The runner's state and loop (see the module docstring)."""

    def __init__(self, control: socket.socket, runner_pid: int) -> None:
        self.control = control
        self.pid = runner_pid
        self.encoder = msgspec.msgpack.Encoder()
        self.decoder = msgspec.msgpack.Decoder(RunStep)
        self.cache: dict[str, _Entry] = {}
        self.children: dict[int, int | None] = {}  # pid -> step id (None: the spare, or a discarded one)
        # A child forked ahead of the next step, waiting on its socket: (pid, socket, cache version at
        # its fork, fork ms). Used only while no script was compiled since (its cache copy is current).
        self.spare: tuple[int, socket.socket, int, float] | None = None
        self.cache_version = 0
        self.wake_r, self.wake_w = os.pipe()
        self.pdeathsig = _pdeathsig_setter()
        self.reports = _report_socket()
        self.report_address = self.reports.getsockname() if self.reports is not None else None

    def send(self, message: FromRunner) -> None:
        self.control.send(self.encoder.encode(message))

    def entry(self, path: str) -> tuple[_Entry, bool]:
        """The cached code for ``path``, compiling it when new or changed. Raises OSError when unreadable."""
        st = os.stat(path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        entry = self.cache.pop(path, None)
        compiled = entry is None or entry.key != key
        if entry is None or entry.key != key:  # (spelled out: mypy narrows entry here)
            with open(path, "rb") as handle:
                source = handle.read()
            try:
                code = compile(source, path, "exec", dont_inherit=True)
            except (SyntaxError, ValueError):  # the child compiles again and reports it like the interpreter
                code = None
            entry = _Entry(key=key, sha256=hashlib.sha256(source).hexdigest(), code=code, source=source)
            while len(self.cache) >= CODE_CACHE_SIZE:
                self.cache.pop(next(iter(self.cache)))
        self.cache[path] = entry  # most recently used last
        return entry, compiled

    def serve(self) -> int:
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        poller = select.poll()
        poller.register(self.control.fileno(), select.POLLIN)
        poller.register(self.wake_r, select.POLLIN)
        reports = self.reports.fileno() if self.reports is not None else -1
        if self.reports is not None:
            poller.register(reports, select.POLLIN)
        self.make_spare()
        while True:
            ended = 0
            for fd, _ in poller.poll():
                if fd == self.wake_r:
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass  # drained
                elif fd == reports:
                    ended += self.take_reports()
                elif not self.receive():
                    return self.shutdown()
            ended += self.reap()  # after the reports: a child that reported is reaped without a second Exited
            if ended:
                # The next step's process is forked once a step ended, not as soon as one started: on a
                # small machine the fork and the spare's set-up then competed with that step's script.
                self.make_spare()

    def take_reports(self) -> int:
        """Handle the exit reports waiting (see :meth:`report_exit`). A report counts only from the pid
        of a step's child that has not ended yet, as the kernel stamps it (SO_PASSCRED: a process cannot
        claim another's pid without CAP_SYS_ADMIN): the runner kills that child's process group at once
        (the child is not reaped yet, so the group id is still its own), sends Exited and reaps the
        child later without a second one. Anything else (another sender, a spare, a second report, not a
        status) is ignored. Returns how many steps ended."""
        assert self.reports is not None
        ended = 0
        while True:
            try:
                data, ancdata, _, _ = self.reports.recvmsg(16, socket.CMSG_SPACE(_UCRED.size))
            except BlockingIOError:
                return ended
            pid = _sender_pid(ancdata)
            step_id = self.children.get(pid) if pid is not None else None
            if pid is None or step_id is None or not (data.isdigit() and int(data) <= 255):
                continue
            _kill_group(pid)
            self.children[pid] = None
            self.send(Exited(id=step_id, status=int(data) << 8, reported=True))
            ended += 1

    def receive(self) -> bool:
        """Handle one message; False at EOF (the node closed the socket or died)."""
        data, ancdata, flags, _ = self.control.recvmsg(
            MAX_MESSAGE, socket.CMSG_SPACE(FDS_PER_STEP * 4), socket.MSG_CMSG_CLOEXEC)
        fds = _received_fds(ancdata)
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        try:
            step = self.decoder.decode(data)
            if len(fds) != FDS_PER_STEP or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise ValueError(f"step {step.id} arrived with {len(fds)} file descriptors (flags {flags:#x})")
        except (msgspec.DecodeError, ValueError) as exc:
            for fd in fds:
                os.close(fd)
            print(f"secauto warm runner: protocol error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        try:
            self.start(step, data, fds)
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def start(self, step: RunStep, data: bytes, fds: list[int]) -> None:
        try:
            entry, compiled = self.entry(step.path)
        except OSError as exc:
            self.send(Refused(id=step.id, message=f"cannot read the script: {exc}"))
            return
        if compiled:
            self.cache_version += 1
        pid, fork_ms = self.use_spare(data, fds)
        if pid is None:
            t0 = time.perf_counter()
            try:
                pid = os.fork()
            except OSError as exc:
                self.send(Refused(id=step.id, message=f"cannot fork: {exc}"))
                return
            if pid == 0:
                self.become_script(step, entry, fds)  # never returns
            fork_ms = (time.perf_counter() - t0) * 1000
        self.children[pid] = step.id
        self.send(Started(id=step.id, pid=pid, sha256=entry.sha256, fork_ms=fork_ms))

    def use_spare(self, data: bytes, fds: list[int]) -> tuple[int | None, float]:
        """Hand the step to the spare child when it is current (forked after the last compile, so its
        copy of the code cache has this script); returns its pid and the time its fork took, or None."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None, 0.0
        pid, sock, version, fork_ms = spare
        try:
            if version != self.cache_version:
                raise ValueError("stale")  # its cache lacks what was compiled since
            socket.send_fds(sock, [data], fds)
            return pid, fork_ms
        except (OSError, ValueError):  # a stale or dead spare: discard it (reap() collects it)
            with contextlib.suppress(ProcessLookupError):  # our unreaped child: it exists
                os.kill(pid, signal.SIGKILL)
            return None, 0.0
        finally:
            sock.close()

    def make_spare(self) -> None:
        """Fork the process that will run the next step: set up (session, PDEATHSIG, fds) and waiting."""
        if self.spare is not None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        t0 = time.perf_counter()
        try:
            pid = os.fork()
        except OSError as exc:  # no spare this time: the next step forks on demand (and reports a failure)
            ours.close()
            theirs.close()
            print(f"secauto warm runner: cannot fork a spare: {exc}", file=sys.stderr, flush=True)
            return
        if pid == 0:
            self.wait_as_spare(theirs)  # never returns
        fork_ms = (time.perf_counter() - t0) * 1000
        theirs.close()
        self.children[pid] = None
        self.spare = (pid, ours, self.cache_version, fork_ms)

    def wait_as_spare(self, sock: socket.socket) -> None:
        """In a spare child: prepare, wait for one step (message + three fds), run it; never returns."""
        try:
            self.prepare_child()
            keep = sock.fileno()
            os.closerange(3, keep)
            os.closerange(keep + 1, _max_fd())
            _rehearse()
            data, ancdata, _, _ = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(FDS_PER_STEP * 4))
            fds = _received_fds(ancdata)
            if not data or len(fds) != FDS_PER_STEP:  # retired without a step
                os._exit(0)
            step = self.decoder.decode(data)
            entry = self.cache[step.path]  # the runner hands over only steps whose code this copy has
            self.become(step, entry, fds)
        except BaseException as exc:
            _report_start_failure(exc)
        finally:
            os._exit(1)  # become() never returns: only a failure gets here

    def prepare_child(self) -> None:
        """The first things a fresh fork does: its own session, death with the runner, default signals."""
        os.setsid()
        if self.pdeathsig is not None:
            self.pdeathsig()
            if os.getppid() != self.pid:  # the runner died before the setting took effect
                os._exit(1)
        # Closed by the caller's closerange: the objects must never close a number reused by then.
        self.control.detach()
        if self.reports is not None:
            self.reports.detach()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def become_script(self, step: RunStep, entry: _Entry, fds: list[int]) -> None:
        """In a child forked for this step: set up the process and run the script; ends with os._exit."""
        try:
            self.prepare_child()
            self.become(step, entry, fds)
        except BaseException as exc:
            _report_start_failure(exc)
        finally:
            os._exit(1)

    def become(self, step: RunStep, entry: _Entry, fds: list[int]) -> None:
        """Stdio on fds 0-2, every other fd closed, limits, directory; run; os._exit."""
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, _max_fd())
        _apply_child_limits(step)
        os.chdir(step.cwd)
        _fresh_stdio()
        status = _run_main(step, entry)
        self.report_exit(status)
        # The teardown that follows (about 1 ms of kernel work) no longer delays the step: let the node and
        # the next step go first. nice 19, not SCHED_IDLE: an idle-class task can be starved outright on a
        # busy machine, and measured at idle it also made steps slower (3.4-3.6 ms p50 against 2.6-3.2).
        with contextlib.suppress(OSError):
            os.nice(19)
        os._exit(status)

    def report_exit(self, status: int) -> None:
        """In a step's child whose script ended normally (the interpreter's exit steps done; a child
        dying of a signal never gets here): close fds 0-2, so that the node reads EOF now, and tell the
        runner the exit status in one datagram, so that the step ends now rather than once the kernel
        has torn down this process's copy of the runner's memory (about 1 ms of a 3 ms step with the
        default preload). Best effort: when no report is sent the runner reaps the child as before."""
        os.closerange(0, 3)
        if self.report_address is None:
            return
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)  # a full queue (hundreds waiting) must not hold the exit up
            sock.sendto(b"%d" % status, self.report_address)

    def reap(self) -> int:
        """Reap every exited child after killing the rest of its process group, sending Exited for a
        step's child that did not report. Returns how many steps ended, plus one if the spare died."""
        ended = 0
        while self.children:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return ended
            if info is None:
                return ended
            pid = info.si_pid
            _kill_group(pid)  # the zombie still holds its pid, so this group is still the script's
            _, status = os.waitpid(pid, 0)
            step_id = self.children.pop(pid, None)
            if self.spare is not None and self.spare[0] == pid:  # the spare died (killed from outside)
                self.spare[1].close()
                self.spare = None
                ended += 1  # a new one is due
            if step_id is not None:
                self.send(Exited(id=step_id, status=status))
                ended += 1
        return ended

    def shutdown(self) -> int:
        """Kill every child (the process itself too: one forked a moment ago may not lead its group
        yet) and its group, reap them all, return the exit status 0."""
        if self.spare is not None:
            self.spare[1].close()
            self.spare = None
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):  # unreaped children always exist; be safe anyway
                os.kill(pid, signal.SIGKILL)
            _kill_group(pid)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):  # already reaped
                os.waitpid(pid, 0)
        self.children.clear()
        return 0


def _report_socket() -> socket.socket | None:
    """The runner's datagram socket for exit reports: a random name in Linux's abstract namespace (no
    file to clean up; anyone on the host may send to it, see :meth:`Runner.take_reports` for why that is
    harmless), or None where SO_PASSCRED does not exist or the socket cannot be made (a sandbox refusing
    it; said on stderr, which the node logs): children are then only reaped, as before reports existed."""
    if not hasattr(socket, "SO_PASSCRED"):
        return None
    sock: socket.socket | None = None
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind(b"\0secauto-warm-runner-" + os.urandom(16).hex().encode())
        sock.setblocking(False)
    except OSError as exc:
        if sock is not None:
            sock.close()
        print(f"secauto warm runner: no exit reports ({exc}); steps end when their process is reaped",
              file=sys.stderr, flush=True)
        return None
    return sock


def _sender_pid(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
            pid: int = _UCRED.unpack_from(payload)[0]
            return pid
    return None


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(memoryview(payload)[:usable].cast("i"))
    return fds


def _max_fd() -> int:
    return os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536


def _report_start_failure(exc: BaseException) -> None:
    """In a child whose set-up failed: say so on fd 2, where the node reads the stderr tail (the errno
    first, so that the node can word it as the spawn runner words a failed start), and exit with
    :data:`START_FAILED`."""
    errno = exc.errno if isinstance(exc, OSError) and exc.errno is not None else 0
    with contextlib.suppress(OSError):  # fd 2 is not usable; the exit status still tells
        os.write(2, START_FAILED_PREFIX + f" (errno {errno}): {type(exc).__name__}: {exc}\n".encode())
    os._exit(START_FAILED)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # nothing left in the group
        os.killpg(pgid, signal.SIGKILL)


def main(argv: Sequence[str] | None = None) -> int:
    t0 = time.perf_counter()
    parser = argparse.ArgumentParser(prog="secauto-warm-runner")
    parser.add_argument("--fd", type=int, required=True, help="the control socket (AF_UNIX, SOCK_SEQPACKET)")
    parser.add_argument("--preload", default="", help="comma-separated modules to import before forking")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.fd)
    control.setblocking(True)
    failed = _preload([name for name in args.preload.split(",") if name])
    global SCRIPT_LIMITS
    try:
        SCRIPT_LIMITS = _load_script_limits()
    except Exception as exc:  # reported; a step with limits then fails to start instead of running unlimited
        failed.append(f"script_limits: {type(exc).__name__}: {exc}")
    runner = Runner(control, os.getpid())
    gc.collect()
    gc.freeze()
    runner.send(Ready(pid=os.getpid(), preload_failed=failed,
                      start_ms=(time.perf_counter() - t0) * 1000,
                      modules=sorted({name.partition(".")[0] for name in sys.modules})))
    try:
        return runner.serve()
    except (BrokenPipeError, ConnectionResetError):  # the node is gone: take the children down with us
        return runner.shutdown()


if __name__ == "__main__":
    sys.exit(main())
