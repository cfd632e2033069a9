"""Running test scripts as an unprivileged user (engine.script_user) from a root test run.

pytest's tmp_path lives under a 0700 folder of root, and the venv's interpreter may live under /root, so
a test that switches scripts to another user needs a scripts folder and an interpreter that user can use.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from secauto.engine.script_limits import ScriptLimits, ScriptUser, apply_in_child, resolve_script_user

# A uid of this test session alone (no passwd entry needed: it runs with the gid of the same number):
# RLIMIT_NPROC counts per user, so sessions that run at the same time on one machine (or anything
# running as nobody) must not share it, or their process counts would mix.
SESSION_UID = 3_000_000 + os.getpid() % 1_000_000


def test_user() -> ScriptUser | None:
    """A user of this session's own when the tests run as root (so ``processes`` can bind), else None
    (the scripts run as the current user)."""
    return resolve_script_user(SESSION_UID) if os.geteuid() == 0 else None


@functools.cache
def python_for(uid: int | None) -> str | None:
    """An interpreter that the user ``uid`` (None: the current one) can start, or None."""
    if uid is None:
        return sys.executable
    user = resolve_script_user(uid)
    seen: set[str] = set()
    for candidate in (sys.executable, getattr(sys, "_base_executable", ""), shutil.which("python3") or "",
                      "/usr/bin/python3"):
        if not candidate or candidate in seen:
            continue
        seen.add(candidate)
        try:
            done = subprocess.run([candidate, "-c", "import json"], cwd="/", capture_output=True, timeout=30,
                                  preexec_fn=functools.partial(apply_in_child, ScriptLimits(), user))
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return candidate
    return None


@contextmanager
def shared_dir() -> Iterator[Path]:
    """A fresh folder under the system temp dir that every user can read (removed afterwards)."""
    folder = Path(tempfile.mkdtemp(prefix="secauto-scripts-"))
    try:
        folder.chmod(0o755)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def processes_of(uid: int) -> list[int]:
    """The processes whose real uid is ``uid``, zombies included: the kernel counts a process against
    its user's RLIMIT_NPROC until it is reaped."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            found.append(int(entry.name))
    return found


def wait_no_processes(uid: int, within: float = 5.0) -> list[int]:
    """The processes of ``uid`` still alive after up to ``within`` seconds (empty: all gone)."""
    deadline = time.monotonic() + within
    while (left := processes_of(uid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
