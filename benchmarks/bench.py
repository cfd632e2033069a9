"""scripts/bench: SecAuto's throughput, latency, Redis cost and memory, optionally against arq, SAQ,
streaQ and taskiq on the same machine and the same (private) Redis.

For every (scenario, node count) it:

1. measures Redis memory per queued job: J jobs queued with no node running (through the same
   submit script the API uses, ``secauto.store`` ``JobQueue.submit``), ``used_memory`` delta / J;
2. starts N ``secauto serve`` processes (own configs, free ports, logging at warning) and waits until
   the cluster view lists all of them; RSS at rest;
3. (first scenario per node count) probes an idle cluster: submit-to-start latency of single jobs sent
   with gaps;
4. measures an idle window of Redis traffic (heartbeats, timers) to subtract from the load windows;
5. live: submits J jobs with ``SecautoClient.submit_batch`` (batches round-robin over the nodes, one
   request in flight per node) while the nodes drain, until all are finished; submit rate, drain rate
   (first submit to last completion), queue-wait / submit-to-finish percentiles, Redis commands and
   round-trips per job, node RSS;
6. backlog: SIGSTOPs the nodes, queues J jobs, SIGCONTs them and times the drain of the backlog
   (first start to last completion), the like-for-like figure for the peers, which are measured the
   same way (enqueue, then one worker drains);
7. stops the nodes (SIGTERM, SIGKILL after 10 s).

Then the single-submit probe (``POST /cluster/jobs`` one job per request on one node at an explicit
log level, side by side with a bare aiohttp handler, see :func:`submit_probe`), the run_script cost
(single jobs one after another vs the bare interpreter on the same script) and, with ``--compare``,
the peers. JSON on stdout, a table on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.cluster import (
    API_KEY,
    CLUSTER_NAME,
    REPO,
    BareServer,
    BenchRedis,
    NodeSet,
    cpu_count,
    cpu_model,
    cpu_seconds,
    proc_status,
    remove_tree,
)
from benchmarks.peers import PEERS, PEERS_VENV, run_peer
from benchmarks.stats import CommandDelta, RedisSnapshot, epoch, rate, summary_ms
from secauto.client import FINISHED_STATUSES, MAX_BATCH, SecautoClient

SLEEP_STEP = {"action": "sleep", "seconds": 0.05}
SCRIPT_STEP = {"action": "run_script", "script": "baseit.py", "parameters": {"target": "10.0.0.1"}}
SET_STEP = {"action": "set", "variables": {"x": 1}}
SCENARIO_NAMES = ("noop", "sleep", "script")


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def noop_playbook() -> list[dict[str, Any]]:
    """``[]`` when the engine accepts an empty playbook, else one ``set`` step."""
    try:
        from secauto.engine import validate_playbook

        validate_playbook([])
    except Exception:  # any refusal means: use the one-step form
        return [SET_STEP]
    return []


def playbook_for(scenario: str) -> list[dict[str, Any]]:
    return {"noop": noop_playbook, "sleep": lambda: [SLEEP_STEP], "script": lambda: [SCRIPT_STEP]}[scenario]()


# ---------------------------------------------------------------------------------------------------
# Redis-side helpers
# ---------------------------------------------------------------------------------------------------


class Keys:
    """The few key names the bench reads (from secauto.store.keys when it has them)."""

    def __init__(self, cluster_name: str = CLUSTER_NAME) -> None:
        try:
            from secauto.store.keys import Keys as StoreKeys

            keys = StoreKeys(cluster_name)
            self.queue, self.running = keys.queue, keys.running
            self.delayed: str | None = getattr(keys, "delayed", None)
            self.job_prefix, self.channel = keys.job_prefix, keys.channel
        except Exception:  # fall back to the documented names
            self.queue, self.running = f"secauto:jobs:{cluster_name}", f"secauto:running:{cluster_name}"
            self.delayed, self.job_prefix = f"secauto:delayed:{cluster_name}", "secauto:job:"
            self.channel = f"secauto:events:{cluster_name}"

    @property
    def watched(self) -> list[str]:
        return [key for key in (self.queue, self.running, self.delayed) if key]


KEYS = Keys()
# The submit probe's node with a rate limit and a quota (--submit-limits): its own cluster, limits that
# never refuse (the probe measures what checking them costs, not refusals).
LIMITED_CLUSTER = "bench-limits"
LIMITED_KEYS = Keys(LIMITED_CLUSTER)
LIMITED_SECURITY: dict[str, Any] = {
    "api_keys": [{"name": "bench", "key": API_KEY, "role": "admin", "max_pending": 10_000_000}],
    "rate_limit": {"per_second": 1_000_000, "burst": 1_000_000},
}


class OwnTraffic:
    """Counts the commands and requests the bench sends to Redis inside a measured window."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.reads = 0

    def add(self, command: str, count: int = 1, reads: int = 1) -> None:
        self.calls[command] += count
        self.reads += reads


async def queue_jobs_directly(redis: BenchRedis, playbook: list[Any], count: int) -> float:
    """Queue ``count`` jobs through ``JobQueue.submit`` (the script the API's submit uses), as the
    API would build them, without any node. Returns the seconds it took."""
    import msgspec

    from secauto.models import Job, make_event, new_job_id, utc_now
    from secauto.store.jobs import JobQueue
    from secauto.store.keys import Keys as StoreKeys

    queue = JobQueue(redis.r, StoreKeys(CLUSTER_NAME))
    started = time.perf_counter()
    for offset in range(0, count, MAX_BATCH):
        jobs = [msgspec.convert({"id": new_job_id(), "max_retries": 3, "priority": 0, "submitted_at": utc_now(),
                                 "submitted_to": "bench", "playbook": playbook, "context": {"seq": offset + i}},
                                Job)
                for i in range(min(MAX_BATCH, count - offset))]
        events = [make_event("job.submitted", job_id=job.id, node_id="bench", status="pending", priority=0)
                  for job in jobs]
        await queue.submit(jobs, events)
    return time.perf_counter() - started


async def memory_probe(redis: BenchRedis, playbook: list[Any], count: int) -> dict[str, Any]:
    """Redis ``used_memory`` per queued job, with no node running; the jobs are dropped afterwards."""
    try:
        await redis.flush()
        await queue_jobs_directly(redis, playbook, 1)  # load the script, create the counters
        await redis.r.flushall()
        before = (await redis.r.info("memory"))["used_memory"]
        seconds = await queue_jobs_directly(redis, playbook, count)
        after = (await redis.r.info("memory"))["used_memory"]
        queued = await redis.r.zcard(KEYS.queue)
        return {"jobs": count, "queued": queued, "bytes_per_job": round((after - before) / count, 1),
                "store_enqueue_rate": rate(count, seconds),
                "method": "JobQueue.submit with no node running (the API's submit script)"}
    except Exception as exc:  # reported, the rest of the run goes on
        return {"skipped": f"{type(exc).__name__}: {exc}"}
    finally:
        with contextlib.suppress(Exception):
            await redis.flush()


async def fetch_jobs(redis: BenchRedis, ids: Sequence[str], own: OwnTraffic | None = None) -> list[dict[str, Any]]:
    """The stored records of ``ids`` (MGET in chunks); missing ones come back as ``{"id", "status": None}``."""
    import msgspec

    out: list[dict[str, Any]] = []
    for offset in range(0, len(ids), 500):
        chunk = list(ids[offset:offset + 500])
        raws = await redis.r.mget([KEYS.job_prefix + job_id for job_id in chunk])
        if own is not None:
            own.add("mget")
        for job_id, raw in zip(chunk, raws, strict=True):
            out.append(msgspec.json.decode(raw) if raw else {"id": job_id, "status": None})
    return out


async def wait_finished(redis: BenchRedis, ids: Sequence[str], nodes: NodeSet, timeout: float,  # noqa: ASYNC109
                        own: OwnTraffic) -> tuple[RedisSnapshot, float]:
    """Poll (cheaply: ZCARD of the queue, running and delayed sets) until every job in ``ids`` is
    finished; then take the closing Redis snapshot. Bounded by ``timeout``; fails fast if a node exits."""
    deadline = time.monotonic() + timeout
    pending = list(ids)
    while True:
        if nodes.exited():
            raise RuntimeError("; ".join(nodes.exited()) + "\n" + nodes.log_tails())
        async with redis.r.pipeline(transaction=False) as pipe:
            for key in KEYS.watched:
                pipe.zcard(key)
            sizes = await pipe.execute()
        own.add("zcard", len(KEYS.watched))
        if not any(sizes):
            records = await fetch_jobs(redis, pending, own)
            pending = [job["id"] for job in records if job.get("status") not in FINISHED_STATUSES]
            if not pending:
                return await RedisSnapshot.take(redis.r), time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} of {len(ids)} jobs not finished after {timeout:g}s "
                               f"(queue/running/delayed sizes {sizes})")
        await asyncio.sleep(0.05)


async def record_size(redis: BenchRedis, ids: Sequence[str], sample: int = 50) -> dict[str, Any]:
    """``MEMORY USAGE`` and JSON length of a sample of finished job records (they live for job_retention)."""
    step = max(1, len(ids) // sample)
    picked = list(ids[::step])[:sample]
    usage = [await redis.r.memory_usage(KEYS.job_prefix + job_id) or 0 for job_id in picked]
    lengths = [await redis.r.strlen(KEYS.job_prefix + job_id) for job_id in picked]
    ttls = [await redis.r.ttl(KEYS.job_prefix + job_id) for job_id in picked[:5]]
    return {"sampled": len(picked), "memory_usage_bytes_mean": round(sum(usage) / max(1, len(usage)), 1),
            "json_bytes_mean": round(sum(lengths) / max(1, len(lengths)), 1), "ttl_s_sample": ttls}


class RssSampler:
    """Samples the nodes' VmRSS every 0.2 s while running; ``peak_kb`` per node."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.peak_kb = [0] * len(self.pids)
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            for index, pid in enumerate(self.pids):
                self.peak_kb[index] = max(self.peak_kb[index], proc_status(pid).get("VmRSS", 0))
            await asyncio.sleep(0.2)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def job_metrics(records: Sequence[dict[str, Any]], t_first_submit: float) -> dict[str, Any]:
    """Status counts, drain rates and latency percentiles from finished job records."""
    statuses = Counter(str(job.get("status")) for job in records)
    submitted, started, completed = [], [], []
    queue_wait, to_finish, execution = [], [], []
    spans: list[tuple[float, float]] = []
    for job in records:
        s, b, c = epoch(job.get("submitted_at")), epoch(job.get("started_at")), epoch(job.get("completed_at"))
        if s is not None:
            submitted.append(s)
        if b is not None:
            started.append(b)
        if c is not None:
            completed.append(c)
        if s is not None and b is not None:
            queue_wait.append((b - s) * 1000)
        if s is not None and c is not None:
            to_finish.append((c - s) * 1000)
        if b is not None and c is not None:
            execution.append((c - b) * 1000)
            spans.append((b, c))
    count = len(records)
    retried = [job for job in records if int(job.get("attempt") or 1) > 1]
    # the most jobs whose [started_at, completed_at] overlap: are the nodes' slots really used?
    edges = sorted([(b, 1) for b, c in spans] + [(c, -1) for b, c in spans])
    in_flight = peak = 0
    for _, step in edges:
        in_flight += step
        peak = max(peak, in_flight)
    first = min([t_first_submit, *submitted]) if submitted else t_first_submit
    last = max(completed) if completed else math.nan
    out: dict[str, Any] = {
        "statuses": dict(statuses),
        "retried": len(retried),
        # a few re-run jobs as stored (their attempts history says why), for whoever debugs the node
        "retried_samples": [{key: job.get(key) for key in ("id", "attempt", "retry_count", "assigned_to", "error",
                                                            "reason", "started_at", "completed_at", "attempts")}
                            for job in retried[:3]],
        "by_node": dict(Counter(str(job.get("assigned_to")) for job in records)),
        "drain_s": round(last - first, 3),
        "drain_rate": rate(count, last - first),
        "queue_wait_ms": summary_ms(queue_wait),
        "submit_to_finish_ms": summary_ms(to_finish),
        "execution_ms": summary_ms(execution),
        "max_jobs_running_at_once": peak,
    }
    if started and completed:
        out["first_start_to_last_finish_rate"] = rate(count, max(completed) - min(started))
    return out


# ---------------------------------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------------------------------


class Run:
    """One (scenario, node count): owns its nodes and clients."""

    def __init__(self, opts: argparse.Namespace, redis: BenchRedis, workdir: Path, scenario: str, nodes: int,
                 jobs: int, probes: bool) -> None:
        self.opts = opts
        self.redis = redis
        self.scenario = scenario
        self.n = nodes
        self.jobs = jobs
        self.probes = probes
        self.playbook = playbook_for(scenario)
        self.nodes = NodeSet(workdir / f"{scenario}-{nodes}n", redis.url, nodes, concurrency=opts.concurrency)
        self.clients: list[SecautoClient] = []
        self.background: CommandDelta | None = None
        self.subscribers = 0

    def timeout_for(self, jobs: int) -> float:
        floor = 10.0 if self.scenario == "script" else 100.0  # jobs/s below which something is wrong
        return min(self.opts.timeout, 60 + jobs / floor)

    async def execute(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scenario": self.scenario, "nodes": self.n, "jobs": self.jobs,
                               "concurrency_per_node": self.opts.concurrency, "playbook": self.playbook}
        out["redis_memory_per_queued_job"] = await memory_probe(self.redis, self.playbook, self.jobs)
        log(f"{self.scenario} x{self.n}: starting {self.n} node(s)")
        try:
            await self.nodes.start()
            self.clients = [SecautoClient(url, API_KEY, max_connections=32) for url in self.nodes.urls]
            for client in self.clients:
                await client.open()
            await asyncio.sleep(1.0)
            numsub = await self.redis.r.pubsub_numsub(KEYS.channel)
            self.subscribers = int(numsub[0][1]) if numsub else 0
            out["event_channel_subscribers"] = self.subscribers
            rest = self.nodes.rss()
            out["rss_mb"] = {"rest": [round(r.get("VmRSS", 0) / 1024, 1) for r in rest]}
            if self.probes:
                log(f"{self.scenario} x{self.n}: idle-cluster probes")
                out["idle_submit_to_start"] = await self.idle_latency()
            self.background = await self.idle_window(2.0)
            out["redis_background"] = self.background.per_second()
            with RssSampler(self.nodes.pids) as sampler:
                log(f"{self.scenario} x{self.n}: live batch submit of {self.jobs} jobs")
                out["live"] = await self.live()
                log(f"{self.scenario} x{self.n}: backlog drain of {self.jobs} jobs")
                out["backlog"] = await self.backlog()
            await asyncio.sleep(1.0)
            after = self.nodes.rss()
            out["rss_mb"]["peak_sampled"] = [round(kb / 1024, 1) for kb in sampler.peak_kb]
            out["rss_mb"]["peak_hwm"] = [round(r.get("VmHWM", 0) / 1024, 1) for r in after]
            out["rss_mb"]["after"] = [round(r.get("VmRSS", 0) / 1024, 1) for r in after]
        finally:
            for client in self.clients:
                await client.close()
            problems = await self.nodes.stop()
            if problems:
                out["node_problems"] = problems
            if self.nodes.procs:
                out["node_logs"] = self.nodes.log_summary()
        return out

    def fan_out(self, per_job: dict[str, Any]) -> float:
        """Event messages Redis writes to subscribers per job: PUBLISHes x subscribers of the channel
        (every node decodes every job's events)."""
        return round(float(per_job["by_command_per_job"].get("publish", 0.0)) * self.subscribers, 2)

    async def idle_window(self, seconds: float) -> CommandDelta:
        before = await RedisSnapshot.take(self.redis.r)
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        after = await RedisSnapshot.take(self.redis.r)
        return CommandDelta.between(before, after, time.monotonic() - t0, own_reads=3)

    async def idle_latency(self) -> dict[str, Any]:
        """Single no-op jobs, one at a time with a gap: started_at - submitted_at on an idle cluster."""
        playbook = noop_playbook()
        ids, http_ms = [], []
        for index in range(self.opts.idle_probes):
            client = self.clients[index % len(self.clients)]
            t0 = time.perf_counter()
            ids.append(await client.submit(playbook))
            http_ms.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(self.opts.idle_gap)
        own = OwnTraffic()
        await wait_finished(self.redis, ids, self.nodes, 30, own)
        records = await fetch_jobs(self.redis, ids)
        waits = [(epoch(job["started_at"]) - epoch(job["submitted_at"])) * 1000  # type: ignore[operator]
                 for job in records if job.get("started_at") and job.get("submitted_at")]
        return {"jobs": len(ids), "gap_s": self.opts.idle_gap, "submit_to_start_ms": summary_ms(waits),
                "submit_http_ms": summary_ms(http_ms), "note": "timestamps have 1 ms resolution"}

    async def _submit_batches(self, bodies: list[dict[str, Any]]) -> list[str]:
        """Batches of ``--batch-size`` round-robin over the nodes, one request in flight per node."""
        size = self.opts.batch_size
        batches = [bodies[offset:offset + size] for offset in range(0, len(bodies), size)]
        ids: list[list[str]] = [[] for _ in batches]
        next_batch = iter(range(len(batches)))

        async def worker(client: SecautoClient) -> None:
            for index in next_batch:
                ids[index] = await client.submit_batch(batches[index])

        await asyncio.gather(*(worker(client) for client in self.clients))
        return [job_id for chunk in ids for job_id in chunk]

    async def live(self) -> dict[str, Any]:
        bodies = [SecautoClient.job_body(self.playbook, {"seq": i}) for i in range(self.jobs)]
        own = OwnTraffic()
        before = await RedisSnapshot.take(self.redis.r)
        t0 = time.time()
        ids = await self._submit_batches(bodies)
        t_submitted = time.time()
        after, t_done = await wait_finished(self.redis, ids, self.nodes, self.timeout_for(self.jobs), own)
        records = await fetch_jobs(self.redis, ids)
        out: dict[str, Any] = {"submit_s": round(t_submitted - t0, 3), "submit_rate": rate(self.jobs, t_submitted - t0),
                               "batch_size": self.opts.batch_size, **job_metrics(records, t0)}
        delta = CommandDelta.between(before, after, t_done - t0, own_calls=own.calls, own_reads=own.reads + 3)
        out["redis"] = delta.minus_background(self.background).per_job(self.jobs)
        out["redis"]["pubsub_deliveries_per_job"] = self.fan_out(out["redis"])
        out["redis"]["used_memory_delta_per_finished_job_bytes"] = round(
            (after.used_memory - before.used_memory) / self.jobs, 1)
        out["redis"]["finished_record"] = await record_size(self.redis, ids)
        return out

    async def backlog(self) -> dict[str, Any]:
        """Nodes frozen (SIGSTOP), J jobs queued, nodes resumed: how fast the backlog drains."""
        try:
            self.nodes.pause()
            try:
                enqueue_s = await queue_jobs_directly(self.redis, self.playbook, self.jobs)
                queued = await self.redis.r.zrange(KEYS.queue, 0, -1)
                before = await RedisSnapshot.take(self.redis.r)
            finally:
                t_resume = time.time()
                self.nodes.resume()
        except Exception as exc:  # e.g. the store API changed: report, go on
            return {"skipped": f"{type(exc).__name__}: {exc}"}
        ids = [raw.decode() for raw in queued]
        own = OwnTraffic()
        after, t_done = await wait_finished(self.redis, ids, self.nodes, self.timeout_for(self.jobs), own)
        records = await fetch_jobs(self.redis, ids)
        metrics = job_metrics(records, t_resume)
        out: dict[str, Any] = {
            "jobs": len(ids), "store_enqueue_rate": rate(self.jobs, enqueue_s),
            "drain_rate": metrics.pop("first_start_to_last_finish_rate", None),
            "drain_rate_from_resume": metrics.pop("drain_rate"),
            **{k: v for k, v in metrics.items() if k not in ("queue_wait_ms", "submit_to_finish_ms")},
            "note": "queued with nodes SIGSTOPped; drain_rate = jobs / (last completed_at - first started_at)",
        }
        delta = CommandDelta.between(before, after, t_done - t_resume, own_calls=own.calls, own_reads=own.reads + 3)
        out["redis"] = delta.minus_background(self.background).per_job(len(ids))
        out["redis"]["pubsub_deliveries_per_job"] = self.fan_out(out["redis"])
        return out


async def script_cost(opts: argparse.Namespace, redis: BenchRedis, workdir: Path) -> dict[str, Any]:
    """A one-step run_script job vs spawning the same interpreter on the same script with the same
    stdin, interleaved, ``--script-cost-runs`` times each, on an idle 1-node cluster."""
    runs = opts.script_cost_runs
    script = REPO / "automations" / str(SCRIPT_STEP["script"])
    stdin = json.dumps({"seq": 0, **SCRIPT_STEP["parameters"]}).encode()  # type: ignore[dict-item]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    await redis.flush()
    nodes = NodeSet(workdir / "script-cost", redis.url, 1, concurrency=opts.concurrency)
    bare, client_ms, exec_ms, step_ms = [], [], [], []
    try:
        await nodes.start()
        async with SecautoClient(nodes.urls[0], API_KEY) as client:
            await asyncio.sleep(0.5)
            for index in range(runs + 1):  # the first of each is a warm-up
                t0 = time.perf_counter()
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, str(script), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE, env=env, cwd=script.parent, start_new_session=True)
                out, _ = await asyncio.wait_for(proc.communicate(stdin), 30)
                elapsed = (time.perf_counter() - t0) * 1000
                if proc.returncode != 0 or not out.strip().startswith(b"{"):
                    raise RuntimeError(f"bare {script.name} failed with {proc.returncode}: {out[:200]!r}")
                t1 = time.perf_counter()
                job = await client.wait(await client.submit([SCRIPT_STEP], {"seq": index}), timeout=30, poll=0.005)
                round_trip = (time.perf_counter() - t1) * 1000
                if job.get("status") != "completed":
                    raise RuntimeError(f"script job {job.get('id')} ended {job.get('status')}: {job.get('error')}")
                if index == 0:
                    continue
                bare.append(elapsed)
                client_ms.append(round_trip)
                exec_ms.append((epoch(job["completed_at"]) - epoch(job["started_at"])) * 1000)  # type: ignore[operator]
                results = job.get("results") or []
                if results and isinstance(results[0], dict) and "duration_ms" in results[0]:
                    step_ms.append(float(results[0]["duration_ms"]))
    finally:
        await nodes.stop()
        await redis.flush()
    bare_p50 = summary_ms(bare)["p50"]
    out: dict[str, Any] = {
        "runs": runs, "interpreter": sys.executable, "script": script.name,
        "bare_spawn_ms": summary_ms(bare), "job_execution_ms": summary_ms(exec_ms),
        "step_duration_ms": summary_ms(step_ms),
        "client_round_trip_ms": summary_ms(client_ms),
        "ratio_job_execution_vs_bare": round(summary_ms(exec_ms)["p50"] / bare_p50, 2),
        "ratio_client_round_trip_vs_bare": round(summary_ms(client_ms)["p50"] / bare_p50, 2),
        "note": "ratios of medians; job execution = completed_at - started_at (1 ms resolution); client round "
                "trip = submit + polling GET every 5 ms until completed",
    }
    if step_ms:
        out["ratio_step_vs_bare"] = round(summary_ms(step_ms)["p50"] / bare_p50, 2)
    return out


# The script's own work, timed in a warm interpreter: its compiled code exec'd N times with stdin/stdout in
# memory (the first run, which imports its modules, is left out). argv: script, runs, stdin JSON.
OWN_TIME_HARNESS = """
import io, json, sys, time
path, runs, data = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
code = compile(open(path, "rb").read(), path, "exec", dont_inherit=True)
times = []
real_stdin, real_stdout = sys.stdin, sys.stdout
for index in range(runs + 1):
    sys.stdin, sys.stdout = io.TextIOWrapper(io.BytesIO(data)), io.StringIO()
    t0 = time.perf_counter()
    try:
        exec(code, {"__name__": "__main__", "__file__": path})
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
    elapsed = (time.perf_counter() - t0) * 1000
    json.loads(sys.stdout.getvalue())
    if index:
        times.append(elapsed)
sys.stdin, sys.stdout = real_stdin, real_stdout
print(json.dumps(sorted(times)))
"""
SPAWN_MARKER = "# secauto: runner=spawn\n"


def _cpu_parts(pid: int | None) -> tuple[float, float]:
    """(own, reaped children's) user + system CPU seconds of a process; zeros if it is gone."""
    if pid is None:
        return 0.0, 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def _runner_pid(node_pid: int) -> int | None:
    """The node's warm script runner: its child process running warm_runner.py."""
    try:
        children = Path(f"/proc/{node_pid}/task/{node_pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        try:
            if b"warm_runner.py" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
        except OSError:
            continue
    return None


async def _runner_metrics(url: str) -> dict[str, float]:
    """The node's secauto_script_runner_* gauges (fork/start percentiles converted to ms)."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(
            f"{url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}) as response:
        text = await response.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("secauto_script_runner_"):
            name, _, value = line.partition(" ")
            number = float(value)
            if '{percentile="' in name:  # secauto_script_runner_fork_seconds{percentile="50"} -> fork_p50_ms
                base, _, label = name.partition('{percentile="')
                percentile = label.rstrip('"}')
                name, number = f"{base.removesuffix('_seconds')}_p{percentile}_ms", round(number * 1000, 3)
            out[name.removeprefix("secauto_script_runner_")] = number
    return out


async def script_runners(opts: argparse.Namespace, redis: BenchRedis, workdir: Path) -> dict[str, Any]:
    """Warm vs spawn side by side on ONE node in one run: the same script twice in the node's scripts
    folder, ``baseit.py`` (warm) and ``baseit_spawn.py`` (the same file opting out with
    ``# secauto: runner=spawn``, so it is spawned). Alternating rounds of a backlog of ``--script-jobs``
    one-step jobs per mode drained by the node's ``--concurrency`` slots (drain rate = jobs / (last
    completed_at - first started_at)); then single jobs one at a time, interleaved, for the per-step
    overhead (step duration_ms minus the script's own time, timed in a warm interpreter). Node and runner
    RSS at rest and after; the runner's fork latency from /metrics."""
    folder = workdir / "runner-scripts"
    folder.mkdir(parents=True, exist_ok=True)
    source = (REPO / "automations" / "baseit.py").read_text()
    (folder / "baseit.py").write_text(source)
    (folder / "baseit_spawn.py").write_text(SPAWN_MARKER + source)
    params = SCRIPT_STEP["parameters"]
    steps = {mode: [{"action": "run_script", "script": name, "parameters": params}]
             for mode, name in (("warm", "baseit.py"), ("spawn", "baseit_spawn.py"))}
    jobs, rounds = opts.script_jobs, opts.script_rounds
    await redis.flush()
    engine: dict[str, Any] = {"scripts_dir": str(folder)}
    if opts.script_preload is not None:
        engine["preload"] = [name for name in opts.script_preload.split(",") if name]
    nodes = NodeSet(workdir / "script-runners", redis.url, 1, concurrency=opts.concurrency, engine=engine)
    out: dict[str, Any] = {"jobs_per_round": jobs, "rounds": rounds, "slots": opts.concurrency,
                           "script": "automations/baseit.py", "preload": engine.get("preload", "default"),
                           "rounds_detail": []}
    try:
        await nodes.start()
        await asyncio.sleep(1.0)
        node_pid = nodes.pids[0]
        runner = _runner_pid(node_pid)
        if runner is None:
            raise RuntimeError("the node has no warm runner process (is engine.runner warm?)")
        node_rss, runner_rss = proc_status(node_pid).get("VmRSS", 0), proc_status(runner).get("VmRSS", 0)
        out["rss_at_rest_mb"] = {"node": round(node_rss / 1024, 1), "runner": round(runner_rss / 1024, 1),
                                 "together": round((node_rss + runner_rss) / 1024, 1)}
        best: dict[str, float] = {}
        step_ms: dict[str, list[float]] = {"warm": [], "spawn": []}
        for index in range(rounds):
            for mode in ("warm", "spawn"):
                log(f"script runners: round {index + 1}/{rounds}, {mode}, backlog of {jobs} jobs")
                runner_pid = _runner_pid(node_pid)
                cpu_before = (*_cpu_parts(node_pid), *_cpu_parts(runner_pid), cpu_seconds(redis.pid))
                nodes.pause()
                try:
                    await queue_jobs_directly(redis, steps[mode], jobs)
                    ids = [raw.decode() for raw in await redis.r.zrange(KEYS.queue, 0, -1)]
                finally:
                    t_resume = time.time()
                    nodes.resume()
                await wait_finished(redis, ids, nodes, min(opts.timeout, 60 + jobs / 5), OwnTraffic())
                cpu_after = (*_cpu_parts(node_pid), *_cpu_parts(runner_pid), cpu_seconds(redis.pid))
                spent = [round((after - before) / jobs * 1000, 2) for before, after in zip(cpu_before, cpu_after,
                                                                                          strict=True)]
                records = await fetch_jobs(redis, ids)
                metrics = job_metrics(records, t_resume)
                runners = Counter(str((job.get("results") or [{}])[0].get("runner")) for job in records)
                durations = [float(job["results"][0]["duration_ms"]) for job in records if job.get("results")]
                step_ms[mode].extend(durations)
                drain = metrics.get("first_start_to_last_finish_rate")
                out["rounds_detail"].append({"round": index + 1, "mode": mode, "drain_rate": drain,
                                             "statuses": metrics["statuses"], "runner_recorded": dict(runners),
                                             "max_jobs_running_at_once": metrics["max_jobs_running_at_once"],
                                             # CPU ms per job (tick resolution): the node, the scripts it
                                             # spawned, the runner, the scripts the runner forked, Redis
                                             "cpu_ms_per_job": dict(zip(("node", "spawned_scripts", "runner",
                                                                         "forked_scripts", "redis"), spent,
                                                                        strict=True)),
                                             "step_duration_ms": summary_ms(durations)})
                if runners != Counter({mode: len(records)}):
                    raise RuntimeError(f"{mode} round ran {dict(runners)}")
                if drain:
                    best[mode] = max(best.get(mode, 0.0), drain)
                await redis.r.delete(*[KEYS.job_prefix + job_id for job_id in ids])
        out["drain_rate"] = {mode: round(rate_, 1) for mode, rate_ in best.items()}
        out["ratio_warm_vs_spawn"] = round(best["warm"] / best["spawn"], 2) if best.get("spawn") else None
        out["loaded_step_duration_ms"] = {mode: summary_ms(values) for mode, values in step_ms.items()}
        # Per-step overhead on the idle node: single jobs one at a time, warm and spawn interleaved.
        idle: dict[str, list[float]] = {"warm": [], "spawn": []}
        async with SecautoClient(nodes.urls[0], API_KEY) as client:
            for index in range(opts.script_cost_runs + 1):
                for mode in ("warm", "spawn"):
                    job = await client.wait(await client.submit(steps[mode], {"seq": index}), timeout=30,
                                            poll=0.005)
                    result = (job.get("results") or [{}])[0]
                    if job.get("status") != "completed" or result.get("runner") != mode:
                        raise RuntimeError(f"idle {mode} job ended {job.get('status')} ({result.get('runner')}): "
                                           f"{job.get('error')}")
                    if index:  # the first of each is a warm-up
                        idle[mode].append(float(result["duration_ms"]))
        harness = await asyncio.create_subprocess_exec(
            sys.executable, "-c", OWN_TIME_HARNESS, str(folder / "baseit.py"), "200",
            json.dumps({"seq": 0, **params}), stdout=asyncio.subprocess.PIPE)  # type: ignore[dict-item]
        own_out, _ = await asyncio.wait_for(harness.communicate(), 60)
        own = summary_ms(json.loads(own_out))
        out["script_own_time_ms"] = {**own, "method": "compiled code exec'd 200 times in a warm interpreter, "
                                                      "stdin/stdout in memory"}
        out["idle_step_duration_ms"] = {mode: summary_ms(values) for mode, values in idle.items()}
        out["overhead_p50_ms"] = {mode: round(summary_ms(values)["p50"] - own["p50"], 2)
                                  for mode, values in idle.items()}
        out["runner"] = await _runner_metrics(nodes.urls[0])
        runner_after = _runner_pid(node_pid)
        out["rss_after_mb"] = {"node": round(proc_status(node_pid).get("VmRSS", 0) / 1024, 1),
                               "runner": round(proc_status(runner_after).get("VmRSS", 0) / 1024, 1)
                               if runner_after else None}
    finally:
        await nodes.stop()
        await redis.flush()
    return out


SUBMIT_PARALLEL = (1, 16)


async def submit_round(client: SecautoClient, playbook: list[Any], count: int, parallel: int,
                       ids: list[str], **options: Any) -> tuple[float, list[float]]:
    """``count`` single-job ``POST /cluster/jobs`` with ``parallel`` requests in flight: (rate, latencies ms).
    The job ids answered are appended to ``ids``."""
    latencies: list[float] = []
    indexes = iter(range(count))

    async def worker() -> None:
        for _ in indexes:  # shared: each worker takes the next request
            t0 = time.perf_counter()
            ids.append(await client.submit(playbook, **options))
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(parallel)))
    return rate(count, time.perf_counter() - t0), latencies


# Jobs submitted to the node's submit path measurement are held back this long (the bench removes them).
HOLD_S = 3600.0


async def drop_held_jobs(redis: BenchRedis, ids: Sequence[str], keys: Keys = KEYS) -> None:
    """Remove jobs parked in the delayed set, and their records (only the bench's own Redis)."""
    assert keys.delayed is not None, "the store has no delayed set"
    for offset in range(0, len(ids), 500):
        chunk = list(ids[offset:offset + 500])
        await redis.r.zrem(keys.delayed, *chunk)
        await redis.r.delete(*(keys.job_prefix + job_id for job_id in chunk))


async def _measure_into(result: dict[str, Any], key: str, measurement: Awaitable[dict[str, Any]]) -> bool:
    """``result[key]`` = what ``measurement`` returns, or its error and traceback (False) when it failed:
    one failed measurement is reported and the others go on."""
    try:
        result[key] = await measurement
    except Exception as exc:
        result[key] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}
        return False
    return True


async def submit_probe(opts: argparse.Namespace, redis: BenchRedis, workdir: Path) -> dict[str, Any]:
    """The single-job ``POST /cluster/jobs`` rate and latency of one node, side by side with a bare aiohttp
    handler (benchmarks/bare.py: read, decode, answer; no auth, validation, Redis or logging).

    Three measurements, by the same client (one ``SecautoClient`` per server, a pool of 32 connections)
    the same way: ``--single-jobs`` requests one at a time, then with 16 in flight, for
    ``--submit-rounds`` rounds, the three alternating (in reverse order every other round):

    * ``bare``: the bare handler;
    * ``node_submit``: the node's submit path alone. The jobs carry ``delay`` (an hour) so that the node
      does not run them during the measurement; everything else is the real path (auth, validation, the
      dispatcher, the submit script, the wake-up and the claim it triggers, the log line);
    * ``node_submit_and_run``: no-op jobs that the node also claims and runs (and logs) while answering,
      as a node that is both API and worker does. After each measurement the bench waits until they
      finished, so each measurement starts on an idle node.

    With ``--submit-limits``, a fourth, ``node_submit_limited``: ``node_submit`` against a second node (its
    own cluster name, so the two never share work) whose key has a rate limit and a ``max_pending`` quota
    too high to refuse anything, i.e. the cost of checking them on the normal path (issue 12.5).

    The node runs at ``logging.level: --submit-log-level``. Rates are medians of the rounds, latencies
    are pooled over them.
    """
    playbook = noop_playbook()
    count, rounds = opts.single_jobs, opts.submit_rounds
    await redis.flush()
    probe_dir = workdir / "submit-probe"
    nodes = NodeSet(probe_dir, redis.url, 1, concurrency=opts.concurrency, log_level=opts.submit_log_level)
    limited = NodeSet(probe_dir / "limited", redis.url, 1, concurrency=opts.concurrency,
                      log_level=opts.submit_log_level, cluster_name=LIMITED_CLUSTER, security=LIMITED_SECURITY)
    bare = BareServer(probe_dir)
    names: tuple[str, ...] = ("bare", "node_submit", "node_submit_and_run")
    if opts.submit_limits:
        names += ("node_submit_limited",)
    measured: dict[str, dict[int, list[tuple[float, list[float]]]]] = {
        name: {p: [] for p in SUBMIT_PARALLEL} for name in names}
    # CPU seconds used per measurement: (server, redis-server, requests); steadier than rates on a busy machine
    cpu_used: dict[str, list[tuple[float, float, int]]] = {name: [] for name in names}
    submitted = 0
    out: dict[str, Any] = {
        "jobs_per_measurement": count, "rounds": rounds, "node_log_level": opts.submit_log_level,
        "playbook": playbook, "client": "one SecautoClient (aiohttp, 32 connections) per server, in the bench "
                                        "process",
        "bare": {"what": "benchmarks/bare.py: aiohttp, read + decode the JSON body, answer job_id and timestamp"},
        "node_submit": {"what": f"the node's submit path: jobs held back by delay={HOLD_S:g}s, so none runs "
                                "during the measurement (removed afterwards)"},
        "node_submit_and_run": {"what": "no-op jobs the node also claims, runs and logs while answering "
                                        f"(max_concurrent_jobs={opts.concurrency}); the bench waits for them to "
                                        "finish between measurements"},
    }
    if opts.submit_limits:
        out["node_submit_limited"] = {"what": "node_submit on a node whose key has rate_limit and max_pending set "
                                              "too high to refuse: the cost of the checks",
                                      "security": LIMITED_SECURITY}
    try:
        await asyncio.gather(nodes.start(), bare.start(), *([limited.start()] if opts.submit_limits else []))
        async with contextlib.AsyncExitStack() as stack:
            node_client = await stack.enter_async_context(SecautoClient(nodes.urls[0], API_KEY, max_connections=32))
            bare_client = await stack.enter_async_context(SecautoClient(bare.url, API_KEY, max_connections=32))
            targets: dict[str, tuple[SecautoClient, dict[str, Any]]] = {
                "bare": (bare_client, {}), "node_submit": (node_client, {"delay": HOLD_S}),
                "node_submit_and_run": (node_client, {})}
            if opts.submit_limits:
                limited_client = await stack.enter_async_context(
                    SecautoClient(limited.urls[0], API_KEY, max_connections=32))
                targets["node_submit_limited"] = (limited_client, {"delay": HOLD_S})
            servers = {"bare": bare.proc.pid, "node_submit": nodes.pids[0], "node_submit_and_run": nodes.pids[0],
                       **({"node_submit_limited": limited.pids[0]} if opts.submit_limits else {})}

            async def measure(name: str, requests: int, parallel: int) -> tuple[float, list[float]]:
                nonlocal submitted
                client, options = targets[name]
                ids: list[str] = []
                server = servers[name]
                cpu_before = cpu_seconds(server), cpu_seconds(redis.pid)
                result = await submit_round(client, playbook, requests, parallel, ids, **options)
                if name == "node_submit_and_run":
                    await wait_finished(redis, ids, nodes, opts.timeout, OwnTraffic())
                cpu_used[name].append((cpu_seconds(server) - cpu_before[0], cpu_seconds(redis.pid) - cpu_before[1],
                                       requests))
                if name == "node_submit":  # the held-back jobs go: the next measurements start clean
                    await drop_held_jobs(redis, ids)
                elif name == "node_submit_limited":
                    await drop_held_jobs(redis, ids, LIMITED_KEYS)
                if name != "bare":
                    submitted += len(ids)
                return result

            for name in names:  # warm-up: connections, caches, the submit script
                await measure(name, min(200, count), 16)
            for round_no in range(rounds):
                log(f"submit probe: round {round_no + 1}/{rounds}")
                # Odd rounds reverse the order: what runs right after another measurement pays for its
                # leftovers (a limited node measured last in every round looked 5-15 % slower; first, not).
                order = names if round_no % 2 == 0 else names[::-1]
                for parallel in SUBMIT_PARALLEL:
                    for name in order:
                        measured[name][parallel].append(await measure(name, count, parallel))
    finally:
        await bare.stop()
        problems = await nodes.stop()
        if limited.procs:
            problems += await limited.stop()
        if problems:
            out["node_problems"] = problems
        if nodes.procs:
            out["node_logs"] = nodes.log_summary()
            # jobs held back never ran: they logged their submission only
            out["node_log_lines"] = nodes.log_lines()
        await redis.flush()
    for name, used in cpu_used.items():
        requests = sum(count for _, _, count in used[1:])  # the first one is the warm-up
        if requests:
            out[name]["server_cpu_us_per_request"] = round(1e6 * sum(u[0] for u in used[1:]) / requests)
            out[name]["redis_cpu_us_per_request"] = round(1e6 * sum(u[1] for u in used[1:]) / requests)
    for name, by_parallel in measured.items():
        for parallel, results in by_parallel.items():
            rates = sorted(result[0] for result in results)
            latencies = [value for result in results for value in result[1]]
            out[name][f"{parallel}_in_flight"] = {"rate": rates[len(rates) // 2] if rates else None,
                                                  "rates": rates, "latency_ms": summary_ms(latencies)}
    for name in names[1:]:
        for parallel in SUBMIT_PARALLEL:
            node_rate, bare_rate = _rate_of(out, name, parallel), _rate_of(out, "bare", parallel)
            out[name][f"vs_bare_{parallel}_in_flight"] = (round(node_rate / bare_rate, 2)
                                                          if node_rate and bare_rate else None)
    return out


def _rate_of(probe: dict[str, Any], name: str, parallel: int) -> float | None:
    value = probe.get(name, {}).get(f"{parallel}_in_flight", {}).get("rate")
    return float(value) if value else None


async def compare(opts: argparse.Namespace, redis: BenchRedis, runs: list[dict[str, Any]],
                  runners: dict[str, Any] | None = None) -> dict[str, Any]:
    tasks = [task for task in ("noop", "sleep", "script") if task in opts.scenarios] or ["noop"]
    script = REPO / "automations" / str(SCRIPT_STEP["script"])
    script_args = ["--script", str(script), "--script-python", sys.executable, "--script-input",
                   json.dumps({"seq": 0, **SCRIPT_STEP["parameters"]})]  # type: ignore[dict-item]
    results: list[dict[str, Any]] = []
    for task in tasks:
        jobs = opts.script_jobs if task == "script" else opts.jobs
        for peer in PEERS:
            log(f"compare: {peer.name} {task} x{jobs}")
            result = await run_peer(peer, redis, jobs=jobs, task=task, concurrency=opts.concurrency,
                                    timeout=min(opts.timeout, 60 + jobs / (5 if task == "script" else 20)),
                                    script_args=script_args if task == "script" else None)
            if "skipped" in result:
                log(f"compare: {peer.name} {task} skipped: {result['skipped']}")
            results.append(result)
    ratios: dict[str, Any] = {}
    for task in tasks:
        base = min((run for run in runs if run.get("scenario") == task and "error" not in run),
                   key=lambda run: run["nodes"], default=None)
        if base is None:
            continue
        secauto_live = base.get("live", {}).get("drain_rate")
        secauto_backlog = base.get("backlog", {}).get("drain_rate")
        per_peer: dict[str, Any] = {}
        for result in results:
            if result.get("task") != task:
                continue
            peer_rate = result.get("drain_rate")
            if "skipped" in result or not peer_rate:
                per_peer[result["library"]] = {"skipped": result.get("skipped", "no drain rate")}
                continue
            per_peer[result["library"]] = {
                "peer_drain_rate": peer_rate,
                "ratio_backlog": round(secauto_backlog / peer_rate, 2) if secauto_backlog else None,
                "ratio_live": round(secauto_live / peer_rate, 2) if secauto_live else None,
            }
        ratios[task] = {"secauto_nodes": base["nodes"], "secauto_backlog_drain_rate": secauto_backlog,
                        "secauto_live_drain_rate": secauto_live, "peers": per_peer}
    if "script" in tasks and runners and "drain_rate" in runners:
        warm, spawn = runners["drain_rate"].get("warm"), runners["drain_rate"].get("spawn")
        per_peer = {}
        for result in results:
            if result.get("task") != "script":
                continue
            peer_rate = result.get("drain_rate")
            if "skipped" in result or not peer_rate:
                per_peer[result["library"]] = {"skipped": result.get("skipped", "no drain rate")}
                continue
            per_peer[result["library"]] = {"peer_drain_rate": peer_rate,
                                           "ratio_warm": round(warm / peer_rate, 2) if warm else None,
                                           "ratio_spawn": round(spawn / peer_rate, 2) if spawn else None}
        ratios["script"] = {"secauto_nodes": 1, "secauto_warm_drain_rate": warm, "secauto_spawn_drain_rate": spawn,
                            "peers": per_peer, "note": "SecAuto: the script_runners backlog rounds (best of each "
                                                       "mode); peers: their own subprocess call per task"}
    return {"jobs": opts.jobs, "concurrency": opts.concurrency, "peers_venv": str(PEERS_VENV),
            "method": "each peer: enqueue J (its batch API if it has one, else 50 in flight), then ONE worker "
                      "process with the given concurrency drains them; drain_rate = J / (last task end - "
                      "first task start). SecAuto ratio_backlog uses the same definition; ratio_live uses "
                      "SecAuto's live run (HTTP batch submit while draining, first submit to last completion).",
            "results": results, "ratios": ratios}


# ---------------------------------------------------------------------------------------------------
# environment, summary, entry point
# ---------------------------------------------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", "--no-optional-locks", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def _busiest() -> list[str]:
    try:
        ps = subprocess.run(["ps", "-eo", "pcpu,args", "--sort=-pcpu", "--no-headers"], capture_output=True,
                            text=True, check=False, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip()[:120] for line in ps.stdout.splitlines()[:5]]


async def environment(redis: BenchRedis) -> dict[str, Any]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    dirty = await asyncio.to_thread(_git, "status", "--porcelain", "--untracked-files=no")
    return {
        "cpu_count": cpu_count(), "cpu_model": cpu_model(), "memory_gb": round(memory, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "busiest_processes_at_start": await asyncio.to_thread(_busiest),
        "platform": platform.platform(), "python": platform.python_version(), "python_executable": sys.executable,
        "redis_version": await redis.version(),
        "git_commit": await asyncio.to_thread(_git, "rev-parse", "HEAD"), "git_dirty": bool(dirty),
        # identifies the uncommitted tracked changes the figures were measured with
        "git_diff_sha256": hashlib.sha256((await asyncio.to_thread(_git, "diff", "HEAD")).encode()).hexdigest()[:16]
        if dirty else None,
        "packages": {name: _version(name) for name in ("secauto", "aiohttp", "redis", "msgspec", "hiredis")},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="SecAuto benchmark: its own redis-server, N secauto serve nodes, J jobs per scenario. "
                    "JSON on stdout, a table on stderr.")
    parser.add_argument("--jobs", type=int, help="jobs per scenario and node count (default 5000; --quick: 500)")
    parser.add_argument("--script-jobs", type=int,
                        help="jobs for the script scenario, which spawns a process per job (default min(J, 500); "
                             "--quick: 100)")
    parser.add_argument("--nodes", default="1,3", help="node counts to run, comma-separated (default 1,3)")
    parser.add_argument("--scenarios", default="noop,sleep,script",
                        help="comma-separated subset of noop,sleep,script (default all)")
    parser.add_argument("--concurrency", type=int, default=100,
                        help="max_concurrent_jobs per node, and the peers' worker concurrency (default 100)")
    parser.add_argument("--compare", action="store_true", help="also run arq, SAQ, streaQ and taskiq (own venvs)")
    parser.add_argument("--quick", action="store_true", help="small job counts for a smoke run")
    parser.add_argument("--batch-size", type=int, default=MAX_BATCH, help=f"jobs per batch request (max {MAX_BATCH})")
    parser.add_argument("--idle-probes", type=int, help="single jobs for the idle submit-to-start probe (default 50)")
    parser.add_argument("--idle-gap", type=float, default=0.05, help="seconds between idle probes (default 0.05)")
    parser.add_argument("--single-jobs", type=int,
                        help="requests per measurement of the single-submit probe (default 1000; --quick: 200)")
    parser.add_argument("--submit-rounds", type=int,
                        help="rounds of the single-submit probe, bare and node alternating (default 3; --quick: 1)")
    parser.add_argument("--submit-log-level", default="info",
                        choices=["debug", "info", "warning", "error"],
                        help="logging.level of the single-submit probe's node (default info, as in production)")
    parser.add_argument("--submit-limits", action="store_true",
                        help="the submit probe also measures a node whose key has a rate limit and a quota")
    parser.add_argument("--submit-only", action="store_true",
                        help="run only the single-submit probe (no scenarios, script cost or peers)")
    parser.add_argument("--script-cost-runs", type=int,
                        help="runs of the run_script cost probe and of the idle warm/spawn overhead probe "
                             "(default 30)")
    parser.add_argument("--script-preload",
                        help="engine.preload of the script runner comparison's node, comma-separated "
                             "(default: the node's default list)")
    parser.add_argument("--script-rounds", type=int, default=2,
                        help="alternating warm/spawn backlog rounds of the script runner comparison (default 2)")
    parser.add_argument("--timeout", type=float, default=300.0, help="upper bound on any one wait, seconds")
    parser.add_argument("--output", type=Path, help="also write the JSON document to this file")
    parser.add_argument("--keep-workdir", action="store_true", help="keep configs and node logs (kept on errors)")
    opts = parser.parse_args(argv)
    quick = opts.quick
    opts.jobs = opts.jobs or (500 if quick else 5000)
    opts.script_jobs = opts.script_jobs or (min(opts.jobs, 100) if quick else min(opts.jobs, 500))
    opts.idle_probes = opts.idle_probes or (15 if quick else 50)
    opts.single_jobs = opts.single_jobs or (200 if quick else 1000)
    opts.submit_rounds = opts.submit_rounds or (1 if quick else 3)
    opts.script_cost_runs = opts.script_cost_runs or (8 if quick else 30)
    try:
        opts.nodes = sorted({int(item) for item in opts.nodes.split(",") if item.strip()})
    except ValueError:
        parser.error(f"--nodes: expected numbers like 1,3, got {opts.nodes!r}")
    opts.scenarios = [item.strip() for item in opts.scenarios.split(",") if item.strip()]
    unknown = [item for item in opts.scenarios if item not in SCENARIO_NAMES]
    if unknown or not opts.scenarios:
        parser.error(f"--scenarios: choose from {','.join(SCENARIO_NAMES)}, got {unknown or 'nothing'}")
    if not opts.nodes or min(opts.nodes) < 1:
        parser.error("--nodes: at least one count >= 1")
    if not 1 <= opts.batch_size <= MAX_BATCH:
        parser.error(f"--batch-size: 1..{MAX_BATCH}")
    if opts.jobs < 1 or opts.concurrency < 1:
        parser.error("--jobs and --concurrency must be >= 1")
    return opts


async def bench(opts: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="secauto-bench-"))
    redis = BenchRedis(workdir)
    result: dict[str, Any] = {"benchmark": "secauto scripts/bench", "version": 1}
    failed = False
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await redis.start()
        log(f"redis-server {redis.url} (pid {redis.pid}); work dir {workdir}")
        result["environment"] = await environment(redis)
        result["options"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()}
        result["runs"] = runs = []
        probed: set[int] = set()
        for nodes in ([] if opts.submit_only else opts.nodes):
            for scenario in opts.scenarios:
                jobs = opts.script_jobs if scenario == "script" else opts.jobs
                run = Run(opts, redis, workdir, scenario, nodes, jobs, probes=nodes not in probed)
                probed.add(nodes)
                try:
                    runs.append(await run.execute())
                except Exception as exc:  # one failed run is reported, the others go on
                    failed = True
                    log(f"{scenario} x{nodes} failed: {type(exc).__name__}: {exc}")
                    runs.append({"scenario": scenario, "nodes": nodes, "jobs": jobs,
                                 "error": f"{type(exc).__name__}: {exc}",
                                 "traceback": traceback.format_exc(limit=5), "logs": str(run.nodes.workdir)})
                report.print_run(runs[-1])
        log("single-submit probe: one node vs a bare aiohttp handler")
        failed |= not await _measure_into(result, "submit_probe", submit_probe(opts, redis, workdir))
        if "script" in opts.scenarios and not opts.submit_only:
            log("run_script cost vs bare interpreter")
            failed |= not await _measure_into(result, "script_cost", script_cost(opts, redis, workdir))
            log("script runners: warm vs spawn on one node")
            failed |= not await _measure_into(result, "script_runners", script_runners(opts, redis, workdir))
        if opts.compare and not opts.submit_only:
            result["compare"] = await compare(opts, redis, runs, result.get("script_runners"))
    except asyncio.CancelledError:
        result["interrupted"] = True
        log("interrupted: stopping everything the bench started")
    finally:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGTERM)
        await redis.close()
        if failed or opts.keep_workdir:
            log(f"configs and logs kept in {workdir}")
        else:
            remove_tree(workdir)
        result.setdefault("environment", {})["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["summary"] = report.summary(result)
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["ok"] = not failed and not result.get("interrupted")
    return result


def finite(value: Any) -> Any:
    """The document with NaN/inf replaced by None, so stdout is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.monotonic()
    result = asyncio.run(bench(opts))
    result["wall_s"] = round(time.monotonic() - started, 1)
    report.print_tables(result)
    text = json.dumps(finite(result), indent=2, default=str, allow_nan=False)
    if opts.output:
        opts.output.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if result.get("interrupted"):
        return 130
    return 0 if result.get("ok") else 1

