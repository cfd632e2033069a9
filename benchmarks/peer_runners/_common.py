"""Shared by the peer runners (run with the peers' venv interpreter, not SecAuto's).

Each runner enqueues J jobs of one task (``noop``: return at once; ``sleep``: ``await
asyncio.sleep(0.05)``; ``script``: run ``--script`` with ``--script-python`` as its own subprocess, the
JSON input on stdin, the same allowlisted environment SecAuto gives scripts, and parse its JSON
stdout, as a user of that library would call a script), then runs ONE worker with the given
concurrency in this process until every task body has returned, and prints one JSON object on
stdout. Timing is taken inside the task bodies (first start, last end), so both sides of the
comparison measure the same thing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

EXCLUDED = {"info", "config|resetstat", "config|get", "flushall", "script|flush", "function|flush", "hello",
            "client|setinfo", "command|docs"}


def parse_args(library: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=f"{library} runner for scripts/bench --compare")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--task", choices=("noop", "sleep", "script"), default="noop")
    parser.add_argument("--script", help="task script: the script file to run")
    parser.add_argument("--script-python", default=sys.executable, help="task script: the interpreter")
    parser.add_argument("--script-input", default="{}", help="task script: the JSON object on its stdin")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on the drain, seconds")
    args = parser.parse_args()
    if args.task == "script":
        if not args.script:
            parser.error("--task script needs --script")
        TRACKER.script = (args.script_python, args.script, args.script_input.encode())
    return args


class Tracker:
    """Counts finished task bodies; ``done`` is set when all J have returned."""

    def __init__(self) -> None:
        self.total = 0
        self.finished = 0
        self.first_start: float | None = None
        self.last_end: float | None = None
        self.done: asyncio.Event | None = None
        self.running = 0
        self.max_running = 0  # shows whether the worker really ran `concurrency` tasks at once
        self.script: tuple[str, str, bytes] | None = None  # (python, script, stdin) for the script task
        self.failures = 0
        self.last_failure: str | None = None

    async def body(self, kind: str) -> None:
        if self.first_start is None:
            self.first_start = time.time()
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if kind == "sleep":
                await asyncio.sleep(0.05)
            elif kind == "script":
                await self.run_script()
        except Exception as exc:  # counted and reported: a failed script is a finished task too
            self.failures += 1
            self.last_failure = f"{type(exc).__name__}: {exc}"
        self.running -= 1
        self.finished += 1
        self.last_end = time.time()
        if self.finished >= self.total and self.done is not None:
            self.done.set()


    async def run_script(self) -> None:
        """The script as its own process (no shell, own session), its JSON answer parsed; raises on failure."""
        assert self.script is not None
        python, script, stdin = self.script
        env = {key: os.environ[key] for key in ("PATH", "LANG", "HOME", "TMPDIR") if key in os.environ}
        proc = await asyncio.create_subprocess_exec(
            python, script, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd=os.path.dirname(script), start_new_session=True)
        out, err = await proc.communicate(stdin)
        if proc.returncode != 0:
            raise RuntimeError(f"{script} exited with {proc.returncode}: {err[-300:]!r}")
        if not isinstance(json.loads(out), dict):
            raise RuntimeError(f"{script} did not print a JSON object")


TRACKER = Tracker()


def rss_kb() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


class InfoClient:
    """Just enough RESP to run INFO: not every peer ships redis-py (streaQ uses coredis)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=10)
        self.file = self.sock.makefile("rb")

    def info(self, section: str) -> dict[str, str]:
        self.sock.sendall(f"INFO {section}\r\n".encode())
        header = self.file.readline()
        if not header.startswith(b"$"):
            raise RuntimeError(f"unexpected INFO reply {header[:100]!r}")
        body = self.file.read(int(header[1:]) + 2).decode()
        out = {}
        for line in body.splitlines():
            name, sep, value = line.partition(":")
            if sep and not line.startswith("#"):
                out[name] = value
        return out

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def snapshot(client: InfoClient) -> dict[str, Any]:
    calls = {}
    for name, value in client.info("commandstats").items():
        if name.startswith("cmdstat_"):
            fields = dict(item.split("=", 1) for item in value.split(","))
            calls[name.removeprefix("cmdstat_")] = int(fields["calls"])
    return {"calls": calls, "reads": int(client.info("stats").get("total_reads_processed", 0)),
            "used_memory": int(client.info("memory").get("used_memory", 0))}


def delta(before: dict[str, Any], after: dict[str, Any], jobs: int) -> dict[str, Any]:
    calls = {k: v - before["calls"].get(k, 0) for k, v in after["calls"].items() if k not in EXCLUDED}
    calls = {k: v for k, v in calls.items() if v > 0}
    total = sum(calls.values())
    return {
        "commands_per_job": round(total / jobs, 2),
        "roundtrips_per_job_est": round(max(0, after["reads"] - before["reads"] - 3) / jobs, 2),
        "by_command_per_job": {k: round(v / jobs, 3) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])},
    }


def version(*names: str) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "?"
    return out


async def measure(library: str, args: argparse.Namespace, *, versions: dict[str, str], enqueue_method: str,
                  enqueue: Callable[[int], Awaitable[None]], start_worker: Callable[[], Awaitable[Any]],
                  stop_worker: Callable[[Any], Awaitable[None]]) -> dict[str, Any]:
    """Enqueue, then drain with one worker, and return the result object (``error`` set on failure)."""
    jobs = args.jobs
    TRACKER.total = jobs
    TRACKER.done = asyncio.Event()
    client = InfoClient(args.redis_url)
    result: dict[str, Any] = {"library": library, "versions": versions, "task": args.task, "jobs": jobs,
                              "concurrency": args.concurrency, "enqueue_method": enqueue_method,
                              "rss_rest_kb": rss_kb().get("VmRSS")}
    worker = None
    try:
        s0 = snapshot(client)
        t0 = time.time()
        await enqueue(jobs)
        t1 = time.time()
        s1 = snapshot(client)
        result["enqueue_s"] = round(t1 - t0, 3)
        result["enqueue_rate"] = round(jobs / (t1 - t0), 1)
        result["redis_memory_per_queued_job_bytes"] = round((s1["used_memory"] - s0["used_memory"]) / jobs, 1)
        worker_start = time.time()
        worker = await start_worker()
        try:
            await asyncio.wait_for(TRACKER.done.wait(), args.timeout)
        except TimeoutError:
            result["error"] = f"timeout: {TRACKER.finished} of {jobs} tasks finished after {args.timeout:g}s"
        await asyncio.sleep(0.2)  # let the last results/acks land before the closing snapshot
        s2 = snapshot(client)
        if TRACKER.first_start is not None and TRACKER.last_end is not None:
            window = TRACKER.last_end - TRACKER.first_start
            result["drain_s"] = round(window, 3)
            result["drain_rate"] = round(TRACKER.finished / window, 1) if window > 0 else None
            from_start = TRACKER.last_end - worker_start
            result["drain_rate_from_worker_start"] = round(TRACKER.finished / from_start, 1)
            result["worker_start_to_first_task_ms"] = round((TRACKER.first_start - worker_start) * 1000, 1)
        result["finished"] = TRACKER.finished
        if TRACKER.failures:
            result["error"] = f"{TRACKER.failures} task(s) failed, e.g. {TRACKER.last_failure}"
        result["max_tasks_in_flight"] = TRACKER.max_running
        result["redis_enqueue"] = delta(s0, s1, jobs)
        result["redis_drain"] = delta(s1, s2, jobs)
        result["redis_total"] = delta(s0, s2, jobs)
    except Exception as exc:  # reported, never a traceback for the bench to parse
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if worker is not None:
            try:
                await asyncio.wait_for(stop_worker(worker), 15)
            except BaseException as exc:  # shutting down: record and go on
                result.setdefault("stop_warning", f"{type(exc).__name__}: {exc}")
        client.close()
    result["rss_peak_kb"] = rss_kb().get("VmHWM")
    return result


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


async def bounded_gather(count: int, make: Callable[[], Awaitable[Any]], parallel: int = 50) -> None:
    """Run ``make()`` ``count`` times with at most ``parallel`` in flight."""
    sem = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with sem:
            await make()

    await asyncio.gather(*(one() for _ in range(count)))
