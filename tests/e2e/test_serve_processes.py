"""Two real `secauto serve` processes with config files share a real redis-server."""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.nodes import REPO
from tests.support.ports import free_port
from tests.support.procs import write_config

KEY = "e2e-admin-key-0123456789abcdef"
CLUSTER = "e2e-cluster"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def node_config(tmp_path: Path, name: str, port: int, redis_url: str) -> Path:
    return write_config(tmp_path / f"{name}.yaml", {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_grace": 5},
        "cluster": {"enabled": True, "redis_url": redis_url.removeprefix("redis://"), "node_id": name,
                    "cluster_name": CLUSTER, "heartbeat_interval": 1, "lease_timeout": 5,
                    "max_concurrent_jobs": 4},
        "security": {"api_keys": [KEY]},
        "engine": {"scripts_dir": str(REPO / "automations"), "playbooks_dir": str(REPO / "playbooks")},
        "logging": {"level": "info", "destination": "stdout"},
    })


async def test_two_serve_processes_share_the_work(tmp_path: Path, redis_url: str, process_factory: Any) -> None:
    ports = [free_port(), free_port()]
    procs = [process_factory(node_config(tmp_path, f"proc-{i}", port, redis_url), name=f"proc-{i}")
             for i, port in enumerate(ports)]
    for proc in procs:
        await proc.wait_http(timeout=30)
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    body = {"playbook": [{"action": "run_script", "script": "baseit.py", "parameters": {"target": "10.0.0.{{n}}"}}]}
    async with aiohttp.ClientSession() as session:
        job_ids = []
        for index in range(24):
            payload = {**body, "context": {"n": index}}
            async with session.post(f"{urls[index % 2]}/cluster/jobs", json=payload, headers=HEADERS) as response:
                assert response.status == 200
                job_ids.append((await response.json())["job_id"])
        jobs: dict[str, dict[str, Any]] = {}
        async with asyncio.timeout(90):
            while len(jobs) < len(job_ids):
                for job_id in job_ids:
                    if job_id in jobs:
                        continue
                    async with session.get(f"{urls[1]}/cluster/jobs/{job_id}", headers=HEADERS) as response:
                        job = (await response.json())["job"]
                    if job["status"] in ("completed", "failed"):
                        jobs[job_id] = job
                await asyncio.sleep(0.2)
        assert all(job["status"] == "completed" for job in jobs.values()), next(iter(jobs.values()))
        assert {job["context"]["baseit"]["target"] for job in jobs.values()} == {f"10.0.0.{n}" for n in range(24)}
        per_node = collections.Counter(job["assigned_to"] for job in jobs.values())
        assert set(per_node) == {"proc-0", "proc-1"}, per_node
        async with asyncio.timeout(10):
            while True:
                async with session.get(f"{urls[0]}/cluster", headers=HEADERS) as response:
                    cluster = (await response.json())["cluster"]
                counts = {node["id"]: node["jobs_completed"] for node in cluster["nodes"]}
                if counts == dict(per_node):
                    break
                await asyncio.sleep(0.2)
        assert cluster["total_nodes"] == 2 and cluster["cluster_name"] == CLUSTER
    # SIGTERM: a clean exit, and the logs are JSON lines with the document's fields.
    for proc in procs:
        assert proc.terminate(timeout=20) == 0
    lines = [json.loads(line) for proc in procs for line in proc.read_stdout().splitlines() if line.strip()]
    assert all({"timestamp", "level", "component", "message"} <= set(line) for line in lines)
    submitted = [line for line in lines if line["message"] == "Job submitted to distributed queue"]
    assert len(submitted) == 24
    assert all(line["level"] == "info" and line["job_id"] in job_ids and line["node_id"] in ("proc-0", "proc-1")
               and line["component"] == "dispatcher" for line in submitted)
    assert all(KEY not in proc.read_logs() for proc in procs)


async def test_standalone_serve_prints_a_generated_key_once(tmp_path: Path, process_factory: Any) -> None:
    port = free_port()
    config = write_config(tmp_path / "solo.yaml", {"server": {"host": "127.0.0.1", "port": port}})
    proc = process_factory(config, name="solo")
    await proc.wait_http(timeout=30)
    stderr = proc.read_stderr()
    assert stderr.count("generated one for this run") == 1
    key = stderr.split("(shown once): ", 1)[1].split()[0]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/cluster", headers={"X-API-Key": key}) as response:
            assert response.status == 200
            assert (await response.json())["cluster"]["total_nodes"] == 1
        async with session.get(f"http://127.0.0.1:{port}/cluster") as response:
            assert response.status == 401
    assert proc.terminate(timeout=20) == 0
    assert key not in proc.read_stdout()


@pytest.mark.parametrize("config_text", ["cluster:\n  heartbeat_interval: -1\n"])
def test_bad_config_exits_2(tmp_path: Path, config_text: str, process_factory: Any) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(config_text)
    proc = process_factory(path, name="bad", url="http://127.0.0.1:1")
    assert proc.wait(timeout=30) == 2
    assert proc.read_stderr().strip().splitlines() == [
        "secauto: config error: cluster.heartbeat_interval: Expected `float` > 0.0"]
