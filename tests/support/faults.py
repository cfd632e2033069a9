"""Helpers for the fault-tolerance e2e tests (tests/e2e/test_faults*.py) and scripts/chaos.

- :func:`write_scripts` puts small ``run_script`` scripts in a folder: ``mark`` (optionally sleeps or
  waits on a gate file, then appends ``<marker> <node pid> <script pid>`` to a side-effect file and
  returns the same as its result) and ``suicide`` (SIGKILLs its parent, the node: a poison job).
- :func:`node_config` writes a node's config with the short timings of these tests.
- :class:`Api` is a small aiohttp client for the node API, :class:`EventRecorder` a plain redis-py
  subscriber on the cluster's event channel that timestamps every event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Self

import aiohttp
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.support.procs import REPO_ROOT, SecautoProcess, write_config

API_KEY = "faults-admin-key-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}

# The short timings of the brief: recovery in seconds, not minutes.
FAST_CLUSTER: dict[str, Any] = {
    "heartbeat_interval": 0.5,
    "lease_timeout": 2,
    "election_timeout": 3,
    "retry_backoff": 0.1,
    "retry_backoff_max": 1,
    "retry_avoid": 1,
    "poll_interval": 1,
    "max_concurrent_jobs": 4,
}
SHUTDOWN_GRACE = 5.0

# Shared by the test scripts below (pasted into their source).
NODE_PID_FUNCTION = '''\
def node_pid():
    """The node running this script: the parent, or with the warm runner (engine.runner: warm) the
    parent's parent (the runner is the node's child and forks the scripts)."""
    pid = os.getppid()
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            if b"warm_runner.py" not in handle.read():
                return pid
        with open("/proc/%d/stat" % pid) as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return pid
'''

MARK_SCRIPT = '''\
"""Test script: optional sleep / gate, then one side-effect line, then the same as its result."""
import json
import os
import sys
import time


NODE_PID_FUNCTION


data = json.load(sys.stdin)
seconds = float(data.get("seconds") or 0)
if seconds:
    time.sleep(seconds)
gate = data.get("gate")
if gate:
    deadline = time.time() + float(data.get("gate_max") or 60)
    while os.path.exists(gate) and time.time() < deadline:
        time.sleep(0.05)
record = {"marker": data["marker"], "node_pid": node_pid(), "pid": os.getpid()}
out = data.get("out")
if out:
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("%s %d %d\\n" % (record["marker"], record["node_pid"], record["pid"])).encode())
    finally:
        os.close(fd)
print(json.dumps({"ran": record}))
'''.replace("NODE_PID_FUNCTION\n", NODE_PID_FUNCTION)

SUICIDE_SCRIPT = '''\
"""Test script: a poison job. It SIGKILLs the node running it (its parent, or its grandparent when
the node's warm runner forked it)."""
import json
import os
import signal
import sys
import time


NODE_PID_FUNCTION


data = json.load(sys.stdin)
out = data.get("out")
if out:
    with open(out, "a") as f:
        f.write("%s %d %d\\n" % (data.get("marker", "?"), node_pid(), os.getpid()))
os.kill(node_pid(), signal.SIGKILL)
time.sleep(2)
print(json.dumps({"survived": True}))
'''.replace("NODE_PID_FUNCTION\n", NODE_PID_FUNCTION)


def write_scripts(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mark.py").write_text(MARK_SCRIPT)
    (folder / "suicide.py").write_text(SUICIDE_SCRIPT)
    return folder


def node_config(path: Path, *, node_id: str, port: int, redis_url: str, cluster_name: str, scripts_dir: Path,
                cluster: Mapping[str, Any] | None = None, server: Mapping[str, Any] | None = None,
                log_level: str = "info", extra: Mapping[str, Any] | None = None) -> Path:
    """Write a node config (JSON logs on stdout, the test API key, FAST_CLUSTER timings + overrides;
    ``extra`` adds top-level sections such as ``schedules``)."""
    return write_config(path, {**(extra or {}),
        "server": {"host": "127.0.0.1", "port": port, "shutdown_grace": SHUTDOWN_GRACE, **(server or {})},
        "cluster": {"enabled": True, "redis_url": redis_url, "node_id": node_id, "cluster_name": cluster_name,
                    **FAST_CLUSTER, **(cluster or {})},
        "security": {"api_keys": [API_KEY]},
        "engine": {"scripts_dir": str(scripts_dir), "playbooks_dir": str(REPO_ROOT / "playbooks"),
                   "script_timeout": 120},
        "logging": {"level": log_level, "destination": "stdout", "format": "json"},
    })


def mark_step(**parameters: Any) -> dict[str, Any]:
    return {"action": "run_script", "script": "mark", "parameters": parameters}


def log_lines(proc: SecautoProcess) -> list[dict[str, Any]]:
    """The node's JSON log lines so far (other lines, such as restart markers, are skipped)."""
    lines = []
    for line in proc.read_stdout().splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
    return lines


def crash_lines(proc: SecautoProcess) -> list[str]:
    """Log lines saying an actor or one of its tasks crashed, or supervision gave up (crash loops)."""
    return [f"{line['timestamp']} {line['message']}: {line.get('exception')}" for line in log_lines(proc)
            if line.get("level") in ("error", "critical")
            and any(word in line.get("message", "") for word in ("crashed", "restart", "giving up"))]


def side_effects(path: Path) -> list[tuple[str, int, int]]:
    """(marker, node pid, script pid) per line of a side-effect file."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[0], int(parts[1]), int(parts[2])))
    return rows


def outcomes(job: Mapping[str, Any]) -> list[str]:
    return [attempt["outcome"] for attempt in job.get("attempts", [])]


class Api:
    """The node HTTP API with the test key. ``post``/``get`` return (status, json body, headers)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, timeout: float = 15.0) -> Any:
        async with aiohttp.ClientSession(headers=HEADERS, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            yield cls(session)

    async def request(self, method: str, url: str, body: Any = None) -> tuple[int, Any, Mapping[str, str]]:
        async with self.session.request(method, url, json=body) as response:
            try:
                data = await response.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError):
                data = None
            return response.status, data, dict(response.headers)

    async def submit(self, base: str, playbook: list[Any], context: Mapping[str, Any] | None = None,
                     **fields: Any) -> str:
        status, body, _ = await self.request("POST", f"{base}/cluster/jobs",
                                             {"playbook": playbook, "context": dict(context or {}), **fields})
        assert status == 200, (status, body)
        return str(body["job_id"])

    async def submit_batch(self, base: str, jobs: list[dict[str, Any]]) -> list[str]:
        status, body, _ = await self.request("POST", f"{base}/cluster/jobs/batch", {"jobs": jobs})
        assert status == 200, (status, body)
        return [str(job_id) for job_id in body["job_ids"]]

    async def cluster(self, base: str) -> dict[str, Any]:
        status, body, _ = await self.request("GET", f"{base}/cluster")
        assert status == 200, (status, body)
        return dict(body["cluster"])


async def get_job(client: redis.asyncio.Redis, job_id: str) -> dict[str, Any] | None:
    raw = await client.get(f"secauto:job:{job_id}")
    return None if raw is None else dict(json.loads(raw))


async def wait_jobs(client: redis.asyncio.Redis, job_ids: Iterable[str], *, statuses: Iterable[str] = ("completed",),
                    timeout: float = 60.0, interval: float = 0.1) -> dict[str, dict[str, Any]]:
    """Poll the job records until every job has one of ``statuses``; return the records.

    Raises AssertionError naming the unfinished jobs on timeout.
    """
    wanted = set(statuses)
    ids = list(job_ids)
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while True:
        missing = [job_id for job_id in ids if job_id not in done]
        if missing:
            records = await client.mget([f"secauto:job:{job_id}" for job_id in missing])
            for job_id, raw in zip(missing, records, strict=True):
                if raw is not None:
                    job = json.loads(raw)
                    if job["status"] in wanted:
                        done[job_id] = job
        if len(done) == len(ids):
            return done
        if time.monotonic() >= deadline:
            left = [job_id for job_id in ids if job_id not in done]
            sample = [await get_job(client, job_id) for job_id in left[:3]]
            raise AssertionError(f"{len(left)} job(s) not {sorted(wanted)} after {timeout}s: {left[:10]}; "
                                 f"first records: {sample}")
        await asyncio.sleep(interval)


async def leader_id(client: redis.asyncio.Redis, cluster: str) -> str | None:
    raw = await client.get(f"secauto:leader:{cluster}")
    if raw is None:
        return None
    return (raw.decode() if isinstance(raw, bytes) else str(raw)).rpartition(":")[0]


async def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05,
                     what: str = "condition") -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


class EventRecorder:
    """A plain redis-py subscriber to ``secauto:events:<cluster>``, started before the test acts.

    ``events`` holds (monotonic time, event dict). It stops recording (``disconnected`` set) if Redis goes
    away: events published while disconnected are lost, as pub/sub promises nothing more.
    """

    def __init__(self, client: redis.asyncio.Redis, cluster: str) -> None:
        self.client = client
        self.channel = f"secauto:events:{cluster}"
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.disconnected: str | None = None
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Self:
        self._pubsub = self.client.pubsub()
        await self._pubsub.subscribe(self.channel)
        # The subscription is confirmed once its reply arrived: nothing published after this is missed.
        async with asyncio.timeout(5):
            while True:
                message = await self._pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "subscribe":
                    break
        self._task = asyncio.create_task(self._run(), name="event-recorder")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()

    async def _run(self) -> None:
        try:
            while True:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message["type"] == "message":
                    self.events.append((time.monotonic(), json.loads(message["data"])))
                    self._changed.set()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.disconnected = f"{type(exc).__name__}: {exc}"

    def of(self, kind: str, job_id: str | None = None) -> list[tuple[float, dict[str, Any]]]:
        return [(at, event) for at, event in self.events
                if event.get("type") == kind and (job_id is None or event.get("job_id") == job_id)]

    def count(self, kind: str) -> dict[str, int]:
        """{job id: number of ``kind`` events}."""
        counts: dict[str, int] = {}
        for _, event in self.of(kind):
            job_id = str(event.get("job_id"))
            counts[job_id] = counts.get(job_id, 0) + 1
        return counts

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float,
                       what: str = "event") -> tuple[float, dict[str, Any]]:
        """The first recorded event (past or future) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for at, event in self.events[seen:]:
                if predicate(event):
                    return at, event
            seen = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout}s (recorded {len(self.events)} events)")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.5))


class NodeHandle:
    """One node process of a fault test: its id, port, URL and SecautoProcess."""

    def __init__(self, name: str, port: int, proc: SecautoProcess, config: Path) -> None:
        self.name = name
        self.port = port
        self.proc = proc
        self.config = config

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __repr__(self) -> str:
        return f"<node {self.name} {self.proc!r}>"


class FaultEnv:
    """Starts the nodes of one fault test: same cluster name, scripts folder and side-effect file."""

    def __init__(self, tmp_path: Path, process_factory: Callable[..., SecautoProcess], redis_url: str,
                 cluster: str) -> None:
        self.tmp_path = tmp_path
        self.factory = process_factory
        self.redis_url = redis_url
        self.cluster = cluster
        self.scripts = write_scripts(tmp_path / "scripts")
        self.out = tmp_path / "side-effects.txt"
        self.nodes: dict[str, NodeHandle] = {}

    def spawn(self, name: str, *, cluster: Mapping[str, Any] | None = None,
              server: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> NodeHandle:
        from tests.support.ports import free_port

        port = free_port()
        config = node_config(self.tmp_path / f"{name}.yaml", node_id=name, port=port, redis_url=self.redis_url,
                             cluster_name=self.cluster, scripts_dir=self.scripts, cluster=cluster, server=server,
                             extra=extra)
        handle = NodeHandle(name, port, self.factory(config, name=name), config)
        self.nodes[name] = handle
        return handle

    async def start(self, *names: str, cluster: Mapping[str, Any] | None = None,
                    server: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None,
                    timeout: float = 30.0) -> list[NodeHandle]:
        """Start nodes in parallel and wait until each answers /health (Redis reachable)."""
        handles = [self.spawn(name, cluster=cluster, server=server, extra=extra) for name in names]
        await asyncio.gather(*(handle.proc.wait_http(timeout=timeout, path="/health") for handle in handles))
        return handles

    async def restart(self, handle: NodeHandle, timeout: float = 30.0) -> None:
        handle.proc.start()
        await handle.proc.wait_http(timeout=timeout, path="/health")

    def context(self, marker: str, **extra: Any) -> dict[str, Any]:
        return {"marker": marker, "out": str(self.out), **extra}


class Submitter:
    """Submits one job after another (round robin over ``urls``) until stopped; keeps what was
    acknowledged (HTTP 200 with a job id) apart from what was refused (503 and the like) or lost in
    transit (connection errors: not acknowledged, so not owed)."""

    def __init__(self, api: Api, urls: list[str], body: Callable[[int], dict[str, Any]]) -> None:
        self.api = api
        self.urls = urls
        self.body = body
        self.acked: list[str] = []
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.retry_after: set[str | None] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, interval: float = 0.02) -> Self:
        self._task = asyncio.create_task(self._run(interval), name="submitter")
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self, interval: float) -> None:
        index = 0
        while not self._stop.is_set():
            url = self.urls[index % len(self.urls)]
            try:
                status, body, headers = await self.api.request("POST", f"{url}/cluster/jobs", self.body(index))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
            else:
                self.statuses[status] = self.statuses.get(status, 0) + 1
                if status == 200:
                    self.acked.append(str(body["job_id"]))
                elif status == 503:
                    self.retry_after.add(headers.get("Retry-After"))
            index += 1
            await asyncio.sleep(interval)
