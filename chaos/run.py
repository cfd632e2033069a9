"""Chaos run: N `secauto serve` nodes and a private redis-server (appendonly), thousands of jobs, and
random SIGKILL / SIGSTOP+SIGCONT / SIGTERM+restart of nodes plus one Redis restart while they run.

Each job runs the ``mark`` script of tests/support/faults.py: it sleeps a little, then appends
``<marker> <node pid> <script pid>`` to a side-effect file and returns the same as its result, so every
execution is visible (at-least-once: a job may run more than once) and every recorded result names the
process that produced it.

At the end the run waits (bounded) for the queue to drain and prints one JSON object:

- ``submitted``: acknowledged submissions (HTTP 200); ``completed``, ``failed``, ``dead_lettered``;
- ``lost``: acknowledged jobs whose record is missing or never reached a final state (must be 0);
- ``duplicates``: jobs with more than one completed attempt, and ``inconsistent``: final records that
  contradict themselves (last attempt vs status/assigned_to/attempt, result produced by another process
  than the recorded node, completed without any execution) (both must be 0);
- ``executions``: how many times each job's script ran, from the side-effect file;
- ``recovery``: recovery times from the leader logs (``recovery_s`` of "recovered N orphaned job(s)")
  and from the job attempts (chaos event -> attempt marked node_lost -> next attempt started).

Exit status: 0 when lost, duplicates and inconsistent are all 0, 1 otherwise, 2 when the run itself
failed. Every process the run starts is stopped at the end by pid (also on errors and Ctrl-C), and so
are script processes orphaned by a SIGKILLed node (found by their script path under the run's folder).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio

from tests.support.faults import HEADERS, SHUTDOWN_GRACE, log_lines, node_config, side_effects, write_scripts
from tests.support.ports import free_port
from tests.support.procs import SecautoProcess, pid_exists
from tests.support.redis_proc import RedisProcess

CLUSTER = "chaos"
TERMINAL = ("completed", "failed", "cancelled")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs to submit (default 2000)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of chaos (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument("--nodes", type=int, default=3, help="node processes (default 3)")
    parser.add_argument("--slots", type=int, default=8, help="max_concurrent_jobs per node (default 8)")
    parser.add_argument("--job-seconds", type=float, default=0.3,
                        help="each job sleeps a random 0..N seconds in its script (default 0.3)")
    parser.add_argument("--long-fraction", type=float, default=0.05,
                        help="share of long jobs, running longer than the lease (default 0.05)")
    parser.add_argument("--long-seconds", type=float, nargs=2, default=(2.5, 8.0), metavar=("MIN", "MAX"),
                        help="how long a long job sleeps (default 2.5 8)")
    parser.add_argument("--max-retries", type=int, default=5, help="cluster.max_retries (default 5)")
    parser.add_argument("--poison-limit", type=int, default=3,
                        help="cluster.poison_limit (default 3: random kills hit the same job twice now and then)")
    parser.add_argument("--fsync", choices=["always", "everysec"], default="always",
                        help="Redis appendfsync (default always)")
    parser.add_argument("--redis-stop", choices=["kill", "term"], default="kill",
                        help="how the Redis restart stops the server: SIGKILL (crash) or SIGTERM (default kill)")
    parser.add_argument("--interval", type=float, nargs=2, default=(1.0, 3.0), metavar=("MIN", "MAX"),
                        help="seconds between chaos actions (default 1 3)")
    parser.add_argument("--drain-timeout", type=float, default=240.0,
                        help="seconds to wait for every job to finish after the chaos (default 240)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for configs, logs and data "
                        "(default: a new /tmp/secauto-chaos-* folder, kept)")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 2**31)
    if args.nodes < 2:
        parser.error("--nodes must be at least 2 (chaos keeps one node undisturbed at any time)")
    return args


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))], 3)

    return {"n": len(ordered), "min": round(ordered[0], 3), "p50": round(statistics.median(ordered), 3),
            "p95": pct(0.95), "max": round(ordered[-1], 3)}


def epoch(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


class Node:
    def __init__(self, name: str, port: int, proc: SecautoProcess) -> None:
        self.name = name
        self.port = port
        self.proc = proc
        self.state = "up"  # up | killed | stopped | terminating | starting
        self.sigterm_exits: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ChaosRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir: Path = args.workdir or Path(tempfile.mkdtemp(prefix="secauto-chaos-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.scripts = write_scripts(self.workdir / "scripts")
        self.out = self.workdir / "side-effects.txt"
        self.redis = RedisProcess(dir=self.workdir / "redis", appendonly=True, appendfsync=args.fsync)
        self.client: redis.asyncio.Redis | None = None
        self.nodes: list[Node] = []
        self.events: list[dict[str, Any]] = []
        self.t0 = time.time()
        self.acked: dict[str, str] = {}  # job id -> marker
        self.unacked_markers: set[str] = set()
        self.batches: Counter[str] = Counter()
        self.problems: list[str] = []
        self._marker = 0
        self._actions: set[asyncio.Task[None]] = set()
        self.redis_restarts: list[dict[str, float]] = []
        self.unexpected_exits: list[dict[str, Any]] = []

    # -- logging -------------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        print(f"[chaos {time.time() - self.t0:7.2f}s] {message}", file=sys.stderr, flush=True)

    def event(self, action: str, target: str, **extra: Any) -> None:
        now = time.time()
        self.events.append({"t": round(now - self.t0, 3), "at": now, "action": action, "target": target, **extra})
        self.say(f"{action} {target} {extra or ''}".rstrip())

    # -- processes -----------------------------------------------------------------------------------

    def start_redis(self) -> None:
        self.redis.start()
        self.client = redis.asyncio.Redis(host=self.redis.host, port=self.redis.port, socket_timeout=10)

    def spawn_nodes(self) -> None:
        cluster = {"max_concurrent_jobs": self.args.slots, "max_retries": self.args.max_retries,
                   "poison_limit": self.args.poison_limit, "dlq_max": max(10_000, self.args.jobs)}
        for index in range(1, self.args.nodes + 1):
            name = f"chaos-{index}"
            port = free_port()
            config = node_config(self.workdir / f"{name}.yaml", node_id=name, port=port, redis_url=self.redis.url,
                                 cluster_name=CLUSTER, scripts_dir=self.scripts, cluster=cluster)
            proc = SecautoProcess(config, log_dir=self.workdir / "logs", name=name, url=f"http://127.0.0.1:{port}",
                                  cwd=self.workdir)
            self.nodes.append(Node(name, port, proc.start()))

    async def wait_up(self, node: Node, within: float = 60.0) -> None:
        await node.proc.wait_http(timeout=within, path="/health/live")

    def cleanup(self) -> None:
        """Stop everything this run started, by pid; then orphaned script processes of killed nodes."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.proc.cleanup(timeout=5)
        with contextlib.suppress(Exception):
            self.redis.resume()
            self.redis.stop(signal.SIGTERM, timeout=10)
        marker = str(self.scripts).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)
        alive = [pid for node in self.nodes for pid in node.proc.alive_pids()]
        alive += [pid for pid in self.redis.pids if pid_exists(pid)]
        if alive:
            self.problems.append(f"pids still alive after cleanup: {alive}")

    # -- submissions ---------------------------------------------------------------------------------

    def _job(self) -> tuple[str, dict[str, Any]]:
        self._marker += 1
        marker = f"c{self._marker:06d}"
        if self.rng.random() < self.args.long_fraction:
            seconds = round(self.rng.uniform(*self.args.long_seconds), 3)
        else:
            seconds = round(self.rng.uniform(0, self.args.job_seconds), 3)
        step = {"action": "run_script", "script": "mark", "parameters": {"seconds": seconds}}
        return marker, {"playbook": [step], "context": {"marker": marker, "out": str(self.out)}}

    async def submit_all(self, session: aiohttp.ClientSession, window: float) -> None:
        total = self.args.jobs
        period = 0.25
        batch_size = max(1, min(1000, math.ceil(total / max(1.0, window / period))))
        while len(self.acked) < total:
            up = [node for node in self.nodes if node.state == "up"]
            if not up:
                await asyncio.sleep(0.1)
                continue
            node = self.rng.choice(up)
            batch = [self._job() for _ in range(min(batch_size, total - len(self.acked)))]
            try:
                async with session.post(f"{node.url}/cluster/jobs/batch",
                                        json={"jobs": [body for _, body in batch]}) as response:
                    body = await response.json(content_type=None)
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                self.batches[f"error:{type(exc).__name__}"] += 1
                self.unacked_markers.update(marker for marker, _ in batch)
                await asyncio.sleep(0.1)
                continue
            self.batches[str(status)] += 1
            if status == 200:
                for (marker, _), job_id in zip(batch, body["job_ids"], strict=True):
                    self.acked[job_id] = marker
            else:
                self.unacked_markers.update(marker for marker, _ in batch)
                await asyncio.sleep(0.2)
                continue
            await asyncio.sleep(period)

    # -- chaos ---------------------------------------------------------------------------------------

    def _spawn_action(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)

    async def chaos(self, duration: float) -> None:
        redis_at = self.rng.uniform(0.3, 0.6) * duration
        redis_done = False
        end = time.monotonic() + duration
        start = time.monotonic()
        while time.monotonic() < end:
            await asyncio.sleep(self.rng.uniform(*self.args.interval))
            if not redis_done and time.monotonic() - start >= redis_at:
                redis_done = True
                self._spawn_action(self.restart_redis())
                continue
            up = [node for node in self.nodes if node.state == "up"]
            if len(up) <= 1:  # always keep one node undisturbed
                continue
            node = self.rng.choice(up)
            action = self.rng.choices(["kill", "stop", "term"], weights=[0.4, 0.4, 0.2])[0]
            node.state = {"kill": "killed", "stop": "stopped", "term": "terminating"}[action]
            self._spawn_action(getattr(self, f"_{action}")(node))
        if not redis_done:
            self._spawn_action(self.restart_redis())
        while self._actions:
            await asyncio.gather(*list(self._actions), return_exceptions=True)

    async def watchdog(self) -> None:
        """A node that exits on its own (not by a chaos action) is a problem; restart it, as a supervisor
        (systemd, Kubernetes) would, so the run goes on."""
        while True:
            await asyncio.sleep(0.5)
            for node in self.nodes:
                if node.state == "up" and not node.proc.is_running:
                    code = node.proc.returncode
                    self.unexpected_exits.append({"node": node.name, "pid": node.proc.pid, "code": code,
                                                  "t": round(time.time() - self.t0, 3)})
                    self.problems.append(f"{node.name} (pid {node.proc.pid}) exited on its own with code {code}")
                    self.event("exited-unexpectedly", node.name, pid=node.proc.pid, code=code)
                    node.state = "starting"
                    self._spawn_action(self._restart(node))

    async def _restart(self, node: Node) -> None:
        node.state = "starting"
        node.proc.start()
        await self.wait_up(node)
        node.state = "up"
        self.event("started", node.name, pid=node.proc.pid)

    async def _kill(self, node: Node) -> None:
        pid = node.proc.pid
        node.proc.kill()
        self.event("SIGKILL", node.name, pid=pid)
        await asyncio.sleep(self.rng.uniform(0.2, 3.0))
        await self._restart(node)

    async def _stop(self, node: Node) -> None:
        node.proc.stop_signal(signal.SIGSTOP)
        pause = round(self.rng.uniform(0.5, 5.0), 2)
        self.event("SIGSTOP", node.name, pid=node.proc.pid, seconds=pause)
        await asyncio.sleep(pause)
        node.proc.cont()
        node.state = "up"
        self.event("SIGCONT", node.name, pid=node.proc.pid)

    async def _term(self, node: Node) -> None:
        pid = node.proc.pid
        self.event("SIGTERM", node.name, pid=pid)
        started = time.monotonic()
        try:
            code = await asyncio.to_thread(node.proc.terminate, SHUTDOWN_GRACE + 15)
        except TimeoutError:
            code = -9
            self.problems.append(f"{node.name} (pid {pid}) ignored SIGTERM and was killed")
        node.sigterm_exits.append(code)
        if code != 0:
            self.problems.append(f"{node.name} (pid {pid}) exited with code {code} after SIGTERM")
        self.event("exited", node.name, pid=pid, code=code, seconds=round(time.monotonic() - started, 2))
        await asyncio.sleep(self.rng.uniform(0.2, 1.5))
        await self._restart(node)

    async def restart_redis(self) -> None:
        sig = signal.SIGKILL if self.args.redis_stop == "kill" else signal.SIGTERM
        down = time.monotonic()
        self.redis.stop(sig)
        self.event("redis-stop", "redis", signal=sig.name)
        await asyncio.sleep(self.rng.uniform(1.0, 3.0))
        self.redis.start()
        self.redis_restarts.append({"t": round(time.time() - self.t0, 3), "down_s": round(time.monotonic() - down, 3)})
        self.event("redis-start", "redis", pid=self.redis.pid)

    # -- drain and analysis --------------------------------------------------------------------------

    async def records(self, job_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        assert self.client is not None
        found: dict[str, dict[str, Any] | None] = {}
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start:start + 500]
            raws = await self.client.mget([f"secauto:job:{job_id}" for job_id in chunk])
            for job_id, raw in zip(chunk, raws, strict=True):
                found[job_id] = None if raw is None else json.loads(raw)
        return found

    async def drain(self, within: float) -> float:
        started = time.monotonic()
        ids = list(self.acked)
        last_report = 0.0
        while True:
            try:
                records = await self.records(ids)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                records = {}
            open_ids = [job_id for job_id in ids if (records.get(job_id) or {}).get("status") not in TERMINAL]
            elapsed = time.monotonic() - started
            if not open_ids:
                return elapsed
            if elapsed - last_report >= 5:
                last_report = elapsed
                self.say(f"draining: {len(open_ids)} job(s) not finished yet")
            if elapsed >= within:
                self.problems.append(f"{len(open_ids)} job(s) still not finished after the {within:g}s drain")
                return elapsed
            await asyncio.sleep(1.0)

    async def analyse(self, drain_s: float, elapsed_s: float) -> dict[str, Any]:
        assert self.client is not None
        records = await self.records(list(self.acked))
        pids_of = {node.name: set(node.proc.pids) for node in self.nodes}
        executions = Counter(marker for marker, _, _ in side_effects(self.out))
        statuses: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        lost: list[str] = []
        duplicates: list[str] = []
        inconsistent: list[dict[str, Any]] = []
        lost_by_cause: Counter[str] = Counter()
        detect: list[float] = []
        rerun: list[float] = []
        disruptions = sorted((event["at"], event["target"], event["action"]) for event in self.events
                             if event["action"] in ("SIGKILL", "SIGSTOP", "SIGTERM"))
        members: list[Any] = await self.client.zrange(f"secauto:dlq:{CLUSTER}", 0, -1)
        dlq = {member.decode() if isinstance(member, bytes) else str(member) for member in members}
        for job_id, marker in self.acked.items():
            job = records[job_id]
            if job is None or job["status"] not in TERMINAL:
                lost.append(job_id)
                statuses["missing" if job is None else job["status"]] += 1
                continue
            statuses[job["status"]] += 1
            attempts = job.get("attempts", [])
            for attempt in attempts:
                outcomes[attempt["outcome"]] += 1
            completed = [attempt for attempt in attempts if attempt["outcome"] == "completed"]
            if len(completed) > 1:
                duplicates.append(job_id)
            why = self._inconsistency(job, marker, completed, pids_of, executions[marker], dlq)
            if why:
                inconsistent.append({"job_id": job_id, "problem": why})
            if job["status"] == "failed":
                reasons[job.get("reason") or "?"] += 1
            for index, attempt in enumerate(attempts):
                if attempt["outcome"] != "node_lost":
                    continue
                ended = epoch(attempt.get("ended_at"))
                began = epoch(attempt.get("started_at"))
                if ended is None or began is None:
                    continue
                causes = [(at, action) for at, target, action in disruptions
                          if target == attempt["node"] and began <= at <= ended]
                why = (attempt.get("error") or "?").split(" (node ")[0]
                if not causes:
                    # Not caused by a chaos action on that node: a Redis restart, or the node itself (an
                    # executor restart after a crash recovers its own jobs as "node restarted").
                    lost_by_cause[f"no chaos action on the node: {why}"] += 1
                    continue
                cause, action = causes[-1]
                lost_by_cause[f"{action}: {why}"] += 1
                detect.append(ended - cause)
                if index + 1 < len(attempts):
                    nxt = epoch(attempts[index + 1].get("started_at"))
                    if nxt is not None:
                        rerun.append(nxt - cause)
        leader_recovery = [float(line["recovery_s"]) for node in self.nodes for line in log_lines(node.proc)
                           if "orphaned job(s)" in line.get("message", "") and "recovery_s" in line]
        refused = sum(1 for node in self.nodes for line in log_lines(node.proc)
                      if "result refused" in line.get("message", "") or "lease lost" in line.get("message", ""))
        crashes = [f"{node.name}: {line.get('message')} ({line.get('exception')})" for node in self.nodes
                   for line in log_lines(node.proc)
                   if line.get("level") in ("error", "critical")
                   and ("crash" in line.get("message", "") or "giving up" in line.get("message", ""))]
        acked_markers = set(self.acked.values())
        histogram = Counter(min(executions[marker], 4) for marker in acked_markers)
        completed_jobs = [job_id for job_id in self.acked if (records[job_id] or {}).get("status") == "completed"]
        stray = {marker for marker in executions if marker not in acked_markers}
        leftovers = {}
        for name in ("jobs", "running", "delayed"):
            leftovers[name] = int(await self.client.zcard(f"secauto:{name}:{CLUSTER}"))
        return {
            "ok": not lost and not duplicates and not inconsistent,
            # Beyond the contract: no node exited on its own, no actor crashed, nothing else went wrong.
            "healthy_run": not self.problems and not self.unexpected_exits and not crashes,
            "seed": self.args.seed,
            "config": {"jobs": self.args.jobs, "duration_s": self.args.duration, "nodes": self.args.nodes,
                       "slots": self.args.slots, "job_seconds_max": self.args.job_seconds,
                       "long_fraction": self.args.long_fraction, "long_seconds": list(self.args.long_seconds),
                       "max_retries": self.args.max_retries, "poison_limit": self.args.poison_limit,
                       "appendfsync": self.args.fsync, "redis_stop": self.args.redis_stop,
                       "heartbeat_interval": 0.5, "lease_timeout": 2, "election_timeout": 3,
                       "shutdown_grace": SHUTDOWN_GRACE},
            "submitted": len(self.acked),
            "completed": statuses["completed"],
            "failed": statuses["failed"],
            "dead_lettered": sum(1 for job_id in self.acked if job_id in dlq),
            "dead_letter_reasons": dict(reasons),
            "cancelled": statuses["cancelled"],
            "lost": len(lost),
            "lost_jobs": [{"job_id": job_id, "status": (records[job_id] or {}).get("status", "missing")}
                          for job_id in lost[:20]],
            "duplicates": len(duplicates),
            "duplicate_jobs": duplicates[:20],
            "inconsistent": len(inconsistent),
            "inconsistent_jobs": inconsistent[:20],
            "executions": {
                "runs_total": sum(executions[marker] for marker in acked_markers),
                "jobs_run_once": histogram[1],
                "jobs_run_more_than_once": sum(count for runs, count in histogram.items() if runs > 1),
                "jobs_never_run": histogram[0],
                "histogram": {("4+" if runs == 4 else str(runs)): count for runs, count in sorted(histogram.items())},
                "max_runs": max((executions[marker] for marker in acked_markers), default=0),
                "completed_jobs_run_more_than_once": sum(1 for job_id in completed_jobs
                                                         if executions[self.acked[job_id]] > 1),
                "runs_of_unacknowledged_submissions": sum(executions[marker] for marker in stray),
            },
            "attempt_outcomes": dict(outcomes),
            # A graceful stop (SIGTERM) must hand its jobs back, never lose them: node_lost here is a bug.
            "node_lost_attempts_by_cause": dict(lost_by_cause),
            "stale_writes_refused_or_stopped": refused,
            "recovery": {
                "leader_log_recovery_s": summary(leader_recovery),
                "event_to_node_lost_s": summary(detect),
                "event_to_rerun_started_s": summary(rerun),
            },
            "submission": {"batches": dict(self.batches), "unacknowledged_jobs": len(self.unacked_markers)},
            "chaos": {"actions": dict(Counter(event["action"] for event in self.events)),
                      "redis_restarts": self.redis_restarts,
                      "sigterm_exit_codes": {node.name: node.sigterm_exits for node in self.nodes},
                      "timeline": [{key: value for key, value in event.items() if key != "at"}
                                   for event in self.events]},
            "unexpected_node_exits": self.unexpected_exits,
            "leftover_zsets": leftovers,
            "actor_crashes": dict(Counter(crashes).most_common(20)),
            "problems": self.problems,
            "drain_s": round(drain_s, 2),
            "elapsed_s": round(elapsed_s, 2),
            "workdir": str(self.workdir),
        }

    @staticmethod
    def _inconsistency(job: dict[str, Any], marker: str, completed: list[dict[str, Any]],
                       pids_of: dict[str, set[int]], runs: int, dlq: set[str]) -> str | None:
        attempts = job.get("attempts", [])
        numbers = [attempt["attempt"] for attempt in attempts]
        if numbers != sorted(set(numbers)):
            return f"attempt numbers not increasing: {numbers}"
        if attempts and job["attempt"] != attempts[-1]["attempt"]:
            return f"attempt {job['attempt']} but last attempt entry is {attempts[-1]['attempt']}"
        if job["status"] == "completed":
            if not completed or attempts[-1]["outcome"] != "completed":
                return f"completed but attempts end with {[a['outcome'] for a in attempts]}"
            if attempts[-1]["node"] != job["assigned_to"]:
                return f"completed by {attempts[-1]['node']} but assigned_to {job['assigned_to']}"
            ran = (job.get("context") or {}).get("ran") or {}
            if ran.get("marker") != marker:
                return f"result of another job: {ran}"
            if ran.get("node_pid") not in pids_of.get(job["assigned_to"], set()):
                return f"result produced by pid {ran.get('node_pid')}, not a process of {job['assigned_to']}"
            if runs < 1:
                return "completed without any recorded execution"
        elif completed:
            return f"status {job['status']} with a completed attempt"
        if job["status"] == "failed" and job["id"] not in dlq:
            return "failed but not in the dead-letter queue"
        return None

    # -- main ----------------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        self.say(f"workdir {self.workdir}, seed {self.args.seed}")
        self.start_redis()
        self.spawn_nodes()
        await asyncio.gather(*(node.proc.wait_http(timeout=60, path="/health") for node in self.nodes))
        self.event("cluster-up", "all", pids=[node.proc.pid for node in self.nodes], redis_pid=self.redis.pid)
        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(headers=HEADERS, timeout=timeout) as session:
            submitter = asyncio.create_task(self.submit_all(session, window=0.8 * self.args.duration))
            watchdog = asyncio.create_task(self.watchdog())
            try:
                await self.chaos(self.args.duration)
                self.event("chaos-over", "all", submitted=len(self.acked))
                try:
                    await asyncio.wait_for(submitter, timeout=max(60.0, self.args.duration))
                except TimeoutError:
                    self.problems.append(f"only {len(self.acked)} of {self.args.jobs} submissions acknowledged")
                drain_s = await self.drain(self.args.drain_timeout)
            finally:
                watchdog.cancel()
                submitter.cancel()
                await asyncio.gather(watchdog, submitter, *self._actions, return_exceptions=True)
        self.say(f"drained in {drain_s:.1f}s")
        await asyncio.sleep(1.0)  # late (stale) writes would land now
        return await self.analyse(drain_s, time.monotonic() - started)


async def _amain(run: ChaosRun) -> dict[str, Any]:
    try:
        return await run.run()
    finally:
        if run.client is not None:
            with contextlib.suppress(Exception):
                await run.client.aclose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    run = ChaosRun(args)
    result: dict[str, Any] | None = None
    code = 2
    try:
        result = asyncio.run(_amain(run))
    except KeyboardInterrupt:
        print("chaos: interrupted; stopping every process it started", file=sys.stderr)
        code = 130
    except Exception:
        traceback.print_exc()
    finally:
        run.cleanup()  # whatever happened: every process this run started, by pid
    if result is not None:
        result["problems"] = run.problems
        text = json.dumps(result, indent=2)
        print(text)
        if args.output is not None:
            args.output.write_text(text + "\n")
        code = 0 if result["ok"] else 1
    return code
