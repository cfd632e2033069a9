"""Resource limits of scripts (``engine.script_limits``) and the user they run as (``engine.script_user``).

Both script runners apply the same limits with the same function, :func:`apply_in_child`, called in the
freshly forked child that becomes the script, before any script code runs:

* **spawn** passes it as ``preexec_fn`` to the subprocess (see :func:`secauto.engine.process.run_process`);
* **warm** calls it in the child it forks from its runner process for each step.

Each limit is a ``setrlimit`` in the script's process (inherited by what the script starts):

======================  =================  =========================================================
``cpu_seconds``         ``RLIMIT_CPU``     CPU time of each process: SIGXCPU at N s, SIGKILL at N+1 s
``memory_mb``           ``RLIMIT_AS``      address space of each process, in MiB (allocations fail)
``open_files``          ``RLIMIT_NOFILE``  open file descriptors of each process (EMFILE past it)
``processes``           ``RLIMIT_NPROC``   processes and threads of the script's *user* (EAGAIN)
======================  =================  =========================================================

``RLIMIT_NPROC`` does not bind root (nor a process with CAP_SYS_RESOURCE or CAP_SYS_ADMIN), so on a
node that runs as root ``processes`` needs ``engine.script_user``: the child drops to that unprivileged
uid (supplementary groups cleared, then gid, then uid) after setting the limits, and the kernel then
counts and caps that user's processes. The count is per user, so concurrent scripts of one
``script_user`` share the cap (see README "Script limits"). :func:`processes_problem` is the check
that refuses, at config load, a ``processes`` limit that would not bind.

:func:`limit_exceeded` reads a failed script's exit status and the end of its stderr and names the
limit it hit, so both runners word the step error the same way.
"""

from __future__ import annotations

import os
import pwd
import re
import resource
import signal
from typing import Annotated

import msgspec

# Between the soft CPU limit (SIGXCPU, which kills a script that does not handle it) and the hard one
# (SIGKILL, which nothing survives).
CPU_GRACE_SECONDS = 1

CpuSeconds = Annotated[int, msgspec.Meta(ge=1, le=31_536_000)]
MemoryMb = Annotated[int, msgspec.Meta(ge=1, le=16_777_216)]
OpenFiles = Annotated[int, msgspec.Meta(ge=1, le=1_048_576)]
Processes = Annotated[int, msgspec.Meta(ge=1, le=4_194_304)]


class ScriptLimits(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``engine.script_limits``: each limit is a positive int, or None (the default) for no limit."""

    cpu_seconds: CpuSeconds | None = None
    memory_mb: MemoryMb | None = None
    open_files: OpenFiles | None = None
    processes: Processes | None = None


class ScriptUser(msgspec.Struct, kw_only=True, frozen=True):
    """``engine.script_user`` resolved at config load: the uid and gid the script runs as."""

    uid: int
    gid: int
    name: str  # for messages: the user name, or the uid when it has no passwd entry


def resolve_script_user(value: str | int) -> ScriptUser:
    """The :class:`ScriptUser` for a user name or a numeric uid.

    A uid without a passwd entry runs with the gid of the same number. Raises ``ValueError`` (worded
    for ``engine.script_user``) for an unknown name, a negative uid, or root.
    """
    if isinstance(value, int) or value.isdigit():
        uid = int(value)
        if uid < 0:
            raise ValueError(f"{value!r} is not a uid")
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            user = ScriptUser(uid=uid, gid=uid, name=str(uid))
        else:
            user = ScriptUser(uid=uid, gid=entry.pw_gid, name=entry.pw_name)
    else:
        try:
            entry = pwd.getpwnam(value)
        except KeyError:
            raise ValueError(f"no user named {value!r} on this machine") from None
        user = ScriptUser(uid=entry.pw_uid, gid=entry.pw_gid, name=entry.pw_name)
    if user.uid == 0 or user.gid == 0:
        raise ValueError(f"{user.name!r} is root (uid or gid 0); name an unprivileged user")
    return user


def script_user_problem(user: ScriptUser | None, *, euid: int) -> str | None:
    """Why a node running as ``euid`` cannot run scripts as ``user``, or None: switching users needs
    root, so a node that is not root may only name itself."""
    if user is None or euid == 0 or user.uid == euid:
        return None
    return (f"switching scripts to user {user.name!r} needs root; this node runs as uid {euid} "
            "(leave engine.script_user out, or run the node as root)")


def processes_problem(limits: ScriptLimits, user: ScriptUser | None, *, euid: int) -> str | None:
    """Why ``limits.processes`` would not bind on a node running as ``euid``, or None.

    ``RLIMIT_NPROC`` is not enforced for root, so a root node needs an unprivileged ``script_user``.
    """
    if limits.processes is None or euid != 0 or user is not None:
        return None
    return ("the node runs as root, and the kernel does not apply RLIMIT_NPROC to root: set "
            "engine.script_user to an unprivileged user (e.g. nobody) so that scripts run as that user "
            "and the limit binds")


def _lower(which: int, soft: int, hard: int) -> None:
    """Set the limit ``which`` to at most (soft, hard); never raises a hard limit already lower."""
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY and current_hard < hard:
        hard = current_hard
    resource.setrlimit(which, (min(soft, hard), hard))


def apply_in_child(limits: ScriptLimits, user: ScriptUser | None) -> None:
    """Apply ``limits`` to the calling process, then switch it to ``user`` (None: stay as is).

    Call it in the freshly forked child that is about to become (exec or run) the script, never in the
    node: it lowers this process' limits for good and, with a ``user``, drops root irrevocably
    (supplementary groups cleared, gid, then uid; real, effective and saved ids all change). It makes
    only ``resource``/``os`` system calls, takes no locks, does no logging and touches no event loop,
    so it is safe between ``fork`` and ``exec`` (``preexec_fn``) and in a fork of a runner process.

    Both arguments are required on purpose: ``settings.script_limits`` and ``settings.script_user``
    together are what makes ``processes`` bind on a root node. Raises ``OSError`` (or ``ValueError``)
    when the kernel refuses a call, e.g. a user switch by a process that is not root; the caller must
    then not run the script.

    In a fork of a long-lived runner (warm mode), the child starts with the runner's address space, so
    ``memory_mb`` counts the modules the runner preloaded too; CPU time starts at zero in the child, and
    descriptors it inherited stay open (only new ones are refused past ``open_files``). Word a failure
    as ``f"script {name!r} {limit_exceeded(...)}"`` (and :func:`start_failure` for a child that could not
    start), as the spawn runner does.
    """
    if limits.cpu_seconds is not None:
        _lower(resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + CPU_GRACE_SECONDS)
    if limits.memory_mb is not None:
        size = limits.memory_mb * 1024 * 1024
        _lower(resource.RLIMIT_AS, size, size)
    if limits.open_files is not None:
        _lower(resource.RLIMIT_NOFILE, limits.open_files, limits.open_files)
    if limits.processes is not None:
        _lower(resource.RLIMIT_NPROC, limits.processes, limits.processes)
    if user is not None and (os.getuid(), os.geteuid()) != (user.uid, user.uid):
        os.setgroups([])
        os.setgid(user.gid)
        os.setuid(user.uid)


# What a process prints when it hits a limit (the last of them in the stderr tail wins):
# memory: Python's MemoryError, ENOMEM from mmap/fork/thread stacks, C++'s bad_alloc, the dynamic
# loader failing to map a library (a limit too small for the interpreter to start);
# processes: EAGAIN from fork/clone ("Resource temporarily unavailable"), a thread that cannot start;
# open files: EMFILE.
_MEMORY_RE = re.compile(r"\bMemoryError\b|Cannot allocate memory|std::bad_alloc|out of memory|failed to map segment",
                        re.IGNORECASE)
_PROCESSES_RE = re.compile(r"Resource temporarily unavailable|can't start new thread|fork: retry")
_OPEN_FILES_RE = re.compile(r"Too many open files")
LIMIT_TAIL_BYTES = 4096


def _last_match(pattern: re.Pattern[str], text: str) -> int:
    position = -1
    for match in pattern.finditer(text):
        position = match.start()
    return position


def limit_exceeded(limits: ScriptLimits, *, returncode: int, stderr: bytes) -> str | None:
    """The limit a failed script most likely hit, worded to follow ``script 'name'``, or None.

    ``returncode`` is the exit status (negative: killed by that signal). CPU is read from the signal:
    SIGXCPU is the soft limit; SIGKILL with a CPU limit set is reported as the hard limit (a script that
    handled SIGXCPU), saying that the OOM killer also sends it. Memory, processes and open files are
    read from the stderr tail (:func:`limit_in_stderr`).
    """
    if returncode == 0:
        return None
    cpu = limits.cpu_seconds
    if cpu is not None and returncode == -signal.SIGXCPU:
        return f"exceeded engine.script_limits.cpu_seconds ({cpu}s of CPU time) and was killed"
    if cpu is not None and returncode == -signal.SIGKILL:
        return (f"was killed by SIGKILL: the kernel sends it when a script passes engine.script_limits.cpu_seconds "
                f"by {CPU_GRACE_SECONDS}s ({cpu + CPU_GRACE_SECONDS}s of CPU time, after ignoring SIGXCPU at "
                f"{cpu}s), and the out-of-memory killer sends it too")
    return limit_in_stderr(limits, stderr[-LIMIT_TAIL_BYTES:])


def limit_in_stderr(limits: ScriptLimits, stderr: bytes) -> str | None:
    """The memory, processes or open-files limit that ``stderr`` shows was hit (the last of their
    tell-tale messages wins), worded to follow ``script 'name'``, or None. Only limits that are set
    count; a script that prints those words itself is misreported, which changes only the wording of
    its step's error. Pass the tail of a finished script's stderr, or all of an output cut at the cap
    (where the end is arbitrary)."""
    tail = stderr.decode(errors="replace")
    found: list[tuple[int, str]] = []
    if limits.memory_mb is not None:
        found.append((_last_match(_MEMORY_RE, tail),
                      f"exceeded engine.script_limits.memory_mb ({limits.memory_mb} MiB of address space): "
                      "an allocation failed"))
    if limits.processes is not None:
        found.append((_last_match(_PROCESSES_RE, tail),
                      f"hit engine.script_limits.processes ({limits.processes} processes and threads of its "
                      "user): a fork or thread start failed"))
    if limits.open_files is not None:
        found.append((_last_match(_OPEN_FILES_RE, tail),
                      f"hit engine.script_limits.open_files ({limits.open_files} open files): opening one "
                      "more failed"))
    position, message = max(found, default=(-1, ""))
    return message if position >= 0 else None


def start_failure(limits: ScriptLimits, error: OSError) -> str | None:
    """Why the script could not even start, when a limit explains it, or None.

    The kernel refuses ``execve`` with EAGAIN when the user switched to (``engine.script_user``) already
    has ``processes`` processes: other scripts of that user hold them all.
    """
    import errno

    if limits.processes is not None and error.errno == errno.EAGAIN:
        return (f"could not start: its user already has engine.script_limits.processes ({limits.processes}) "
                "processes and threads (other scripts of the same engine.script_user hold them)")
    return None
