"""The processes a bench run owns: one private redis-server and N `secauto serve` nodes.

Both reuse the test suite's process helpers (tests/support): a free port that is never 6379, children
started in their own session with PR_SET_PDEATHSIG (they die with the bench even on SIGKILL), an
atexit hook that kills what is still registered, and cleanup by pid / own process group only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio

from tests.support.ports import free_port
from tests.support.procs import SecautoProcess, write_config
from tests.support.redis_proc import RedisProcess

REPO = Path(__file__).resolve().parents[1]
CLUSTER_NAME = "bench"
API_KEY = "bench-admin-key-0123456789abcdef"


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (kB) of a process from /proc/<pid>/status; empty if it is gone."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0.0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def secauto_command() -> list[str]:
    """`secauto serve` from the venv running the bench (the console script when it exists)."""
    script = Path(sys.executable).with_name("secauto")
    return [str(script), "serve"] if script.exists() else [sys.executable, "-m", "secauto", "serve"]


class BenchRedis:
    """The bench's own redis-server (never port 6379) and an async client to it."""

    def __init__(self, workdir: Path) -> None:
        self.proc = RedisProcess(dir=workdir / "redis")
        self.client: redis.asyncio.Redis | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.proc.start)
        self.client = redis.asyncio.Redis(host=self.proc.host, port=self.proc.port, decode_responses=False)

    @property
    def r(self) -> redis.asyncio.Redis:
        assert self.client is not None, "redis not started"
        return self.client

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def flush(self) -> None:
        """Empty every database, the script cache and the function library: a clean slate per run."""
        await self.r.flushall()
        await self.r.script_flush()
        await self.r.execute_command("FUNCTION", "FLUSH")

    async def version(self) -> str:
        info = await self.r.info("server")
        return str(info.get("redis_version", "?"))

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):  # best effort at teardown
                await asyncio.wait_for(self.client.aclose(), 5)
            self.client = None
        await asyncio.to_thread(self.proc.close)


class BareServer:
    """benchmarks/bare.py in its own process on a free port: the baseline of the single-submit probe."""

    def __init__(self, workdir: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = SecautoProcess(workdir / "bare-unused.yaml", log_dir=workdir / "logs", name="bare", url=self.url,
                                   cwd=workdir, env={"PYTHONPATH": str(REPO)},
                                   command=[sys.executable, "-m", "benchmarks.bare", "--port", str(port)])

    async def start(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        self.proc.start()
        await self.proc.wait_http(timeout=timeout)

    async def stop(self) -> None:
        def _stop() -> None:
            if self.proc.is_running:
                self.proc.terminate(timeout=10)
            self.proc.cleanup(timeout=5)

        await asyncio.to_thread(_stop)


class NodeSet:
    """N `secauto serve` processes of one cluster on free ports, configs and logs under ``workdir``."""

    def __init__(self, workdir: Path, redis_url: str, count: int, *, concurrency: int,
                 log_level: str = "warning", engine: dict[str, Any] | None = None,
                 cluster_name: str = CLUSTER_NAME, security: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.engine = engine or {}  # overrides of the engine section
        self.redis_url = redis_url
        self.count = count
        self.concurrency = concurrency
        self.log_level = log_level  # logging.level of the nodes
        self.cluster_name = cluster_name
        # the nodes' `security:` section (default: the bench's admin key, no rate limit, no quota)
        self.security = security if security is not None else {"api_keys": [API_KEY]}
        self.procs: list[SecautoProcess] = []

    def _config(self, index: int, port: int) -> dict[str, Any]:
        return {
            "server": {"host": "127.0.0.1", "port": port, "shutdown_grace": 5},
            "cluster": {"enabled": True, "redis_url": self.redis_url, "node_id": f"bench-{index}",
                        "cluster_name": self.cluster_name, "max_concurrent_jobs": self.concurrency},
            "security": self.security,
            "engine": {"scripts_dir": str(REPO / "automations"), "playbooks_dir": str(REPO / "playbooks"),
                       **self.engine},
            "logging": {"level": self.log_level, "destination": "stderr"},
        }

    @property
    def urls(self) -> list[str]:
        return [str(proc.url) for proc in self.procs]

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    async def start(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109 - one deadline for all nodes
        """Start all nodes at once, then wait (bounded) until each answers /health/live and the
        cluster view of the first one lists all of them as active."""
        for index in range(1, self.count + 1):
            port = free_port()
            config = write_config(self.workdir / f"node-{index}.yaml", self._config(index, port))
            proc = SecautoProcess(config, log_dir=self.workdir / "logs", name=f"bench-{index}",
                                  url=f"http://127.0.0.1:{port}", cwd=self.workdir,
                                  command=[*secauto_command(), "--config", str(config)])
            self.procs.append(proc)
            proc.start()
        await asyncio.gather(*(proc.wait_http(timeout=timeout) for proc in self.procs))
        await self._wait_cluster(timeout)

    async def _wait_cluster(self, timeout: float) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {API_KEY}"}
        last: Any = None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while time.monotonic() < deadline:
                try:
                    async with session.get(self.urls[0] + "/cluster", headers=headers) as response:
                        body = await response.json()
                    nodes = body.get("cluster", {}).get("nodes", [])
                    active = [node for node in nodes if node.get("status") == "active"]
                    last = [(node.get("id"), node.get("status")) for node in nodes]
                    if len(active) >= self.count:
                        return
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    last = repr(exc)
                await asyncio.sleep(0.1)
        raise TimeoutError(f"cluster did not show {self.count} active nodes within {timeout:g}s (last: {last})")

    def pause(self) -> None:
        """SIGSTOP every node (they keep their connections; nothing is claimed until resume())."""
        for proc in self.procs:
            proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGCONT)

    def rss(self) -> list[dict[str, int]]:
        return [proc_status(pid) for pid in self.pids]

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(proc.log_tail(lines) for proc in self.procs)

    def log_summary(self, samples: int = 5) -> dict[str, Any]:
        """What the nodes logged above info (warnings, errors, anything not a JSON line), with samples."""
        quiet = ('"level":"info"', '"level":"debug"', '"level":"trace"', '"level":"success"')
        lines = [line for proc in self.procs for line in proc.read_logs().splitlines()
                 if line.strip() and not any(level in line for level in quiet)]
        return {"lines": len(lines), "samples": [line[:300] for line in lines[:samples]]}

    def log_lines(self) -> int:
        """Every line the nodes logged (stdout and stderr)."""
        return sum(1 for proc in self.procs for line in proc.read_logs().splitlines() if line.strip())

    def exited(self) -> list[str]:
        return [f"{proc.name} exited with code {proc.returncode}" for proc in self.procs if proc.returncode is not None]

    async def stop(self) -> list[str]:
        """SIGCONT + SIGTERM each node, SIGKILL after 10 s; returns problems seen (unclean exits)."""
        problems: list[str] = []

        def _stop(proc: SecautoProcess) -> None:
            if proc.is_running:
                try:
                    code = proc.terminate(timeout=10)
                except TimeoutError:
                    problems.append(f"{proc.name} ignored SIGTERM for 10 s and was killed")
                else:
                    if code not in (0, -signal.SIGTERM):
                        problems.append(f"{proc.name} exited with code {code} on SIGTERM")
            proc.cleanup(timeout=5)

        await asyncio.gather(*(asyncio.to_thread(_stop, proc) for proc in self.procs))
        alive = [pid for proc in self.procs for pid in proc.alive_pids()]
        if alive:
            problems.append(f"node pids still alive after stop: {alive}")
        return problems


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
