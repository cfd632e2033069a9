"""`--compare`: the peers (arq, SAQ, streaQ, taskiq + taskiq-redis), each in a virtualenv of its own.

Their pins conflict with SecAuto's and with each other's (arq wants redis-py < 6, taskiq-redis 1.2
wants redis-py >= 6), so each library gets ``.bench-peers-venv/<name>/``, created with pip on first use
(from the versions pinned below; a stamp file skips pip afterwards). A library that cannot be
installed or does not run is reported as skipped with the reason; it never fails the bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.cluster import REPO, BenchRedis
from tests.support.procs import child_preexec

PEERS_VENV = REPO / ".bench-peers-venv"
RUNNERS = Path(__file__).resolve().parent / "peer_runners"


@dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]
    runner: str


PEERS: tuple[Peer, ...] = (
    Peer("arq", ("arq==0.28.0",), "run_arq.py"),
    # saq 0.26.4 imports typing_extensions without declaring it
    Peer("saq", ("saq[redis]==0.26.4", "typing_extensions"), "run_saq.py"),
    Peer("streaq", ("streaq==7.2.0",), "run_streaq.py"),
    Peer("taskiq", ("taskiq==0.13.0", "taskiq-redis==1.2.4"), "run_taskiq.py"),
)


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


async def _run(cmd: list[str], timeout: float, cwd: Path | None = None) -> tuple[int, str, str]:  # noqa: ASYNC109
    """Run a child in its own session, bounded by ``timeout``; on timeout or cancel, kill its group."""
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                start_new_session=True, preexec_fn=child_preexec())
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(proc.wait(), 5)
        raise
    return int(proc.returncode or 0), out.decode(errors="replace"), err.decode(errors="replace")


async def ensure_venv(peer: Peer) -> tuple[Path | None, str | None]:
    """The peer's interpreter, creating/updating its venv when the pins changed; or (None, reason)."""
    venv = PEERS_VENV / peer.name
    python = venv / "bin" / "python"
    stamp = venv / ".bench-stamp"
    want = hashlib.sha256("\n".join(peer.requirements).encode()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return python, None
    try:
        if not python.exists():
            _log(f"creating {venv.relative_to(REPO)} (first use of --compare)")
            code, _, err = await _run([sys.executable, "-m", "venv", str(venv)], 120)
            if code:
                return None, f"python -m venv failed: {err.strip()[-300:]}"
        _log(f"pip install {' '.join(peer.requirements)} into {venv.relative_to(REPO)}")
        code, _, err = await _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                   *peer.requirements], 600)
        if code:
            lines = [line for line in err.splitlines() if line.strip() and "is ignored" not in line]
            return None, f"pip install {' '.join(peer.requirements)} failed: {' | '.join(lines[-3:])[:400]}"
    except TimeoutError:
        return None, "creating its venv timed out"
    stamp.write_text(want)
    return python, None


async def run_peer(peer: Peer, redis: BenchRedis, *, jobs: int, task: str, concurrency: int,
                   timeout: float, script_args: list[str] | None = None) -> dict[str, Any]:  # noqa: ASYNC109
    """One runner on a flushed Redis. Returns its JSON, or ``{"skipped": reason}``. ``script_args``:
    ``--script``, ``--script-python``, ``--script-input`` for the ``script`` task."""
    python, reason = await ensure_venv(peer)
    if python is None:
        return {"library": peer.name, "task": task, "skipped": reason}
    await redis.flush()
    cmd = [str(python), str(RUNNERS / peer.runner), "--redis-url", redis.url + "/0", "--jobs", str(jobs),
           "--task", task, "--concurrency", str(concurrency), "--timeout", str(timeout), *(script_args or [])]
    started = time.monotonic()
    try:
        code, out, err = await _run(cmd, timeout + 60, cwd=RUNNERS)
    except TimeoutError:
        return {"library": peer.name, "task": task, "skipped": f"runner did not finish within {timeout + 60:g}s"}
    finally:
        await redis.flush()
    line = next((line for line in reversed(out.splitlines()) if line.startswith("{")), None)
    if code or line is None:
        tail = " | ".join(err.strip().splitlines()[-3:])[:400]
        return {"library": peer.name, "task": task, "skipped": f"runner exited with {code}: {tail}"}
    result: dict[str, Any] = json.loads(line)
    result["wall_s"] = round(time.monotonic() - started, 2)
    if result.get("error"):
        result["skipped"] = result["error"]
    return result
