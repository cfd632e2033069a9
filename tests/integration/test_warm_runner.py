"""The warm script runner inside a real node (cluster mode, real redis-server).

The node starts its runner with the node and stops it with the node; a job's step results say which
runner ran each script (``GET /cluster/jobs/{id}``); a runner SIGKILLed in the middle of a job fails
that attempt with a clear error, the job's retry runs it again, and the node keeps serving.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from secauto.node import Node
from tests.support.nodes import auth, node_settings, running_node
from tests.support.procs import pid_exists

SLOW = """
    # Writes its pid where `pidfile` says (first attempt only), sleeps `seconds`, answers.
    import json, os, sys, time
    data = json.load(sys.stdin)
    if not os.path.exists(data["pidfile"]):
        with open(data["pidfile"], "w") as handle:
            handle.write(str(os.getpid()))
    time.sleep(data["seconds"])
    print(json.dumps({"pid": os.getpid(), "ppid": os.getppid()}))
"""


@pytest.fixture
def scripts_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "slow.py").write_text(textwrap.dedent(SLOW).lstrip())
    return folder


async def submit(session: aiohttp.ClientSession, node: Node, body: dict[str, Any]) -> str:
    async with session.post(f"{node.url}/cluster/jobs", json=body, headers=auth()) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["job_id"])


async def finished(session: aiohttp.ClientSession, node: Node, job_id: str, within: float = 30.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            async with session.get(f"{node.url}/cluster/jobs/{job_id}", headers=auth()) as response:
                job: dict[str, Any] = (await response.json())["job"]
            if job["status"] in ("completed", "failed"):
                return job
            await asyncio.sleep(0.05)


def runner_pid(node: Node) -> int:
    assert node._scripts is not None
    pid = node._scripts.stats().pid
    assert pid is not None
    return pid


async def test_steps_run_warm_and_the_runner_lives_and_dies_with_the_node(redis_url: str, scripts_dir: Path,
                                                                          tmp_path: Path) -> None:
    settings = node_settings("warm-1", redis_url=redis_url, engine={"scripts_dir": str(scripts_dir)})
    async with running_node(settings) as node, aiohttp.ClientSession() as session:
        pid = runner_pid(node)
        body = {"playbook": [{"action": "run_script", "script": "slow",
                              "parameters": {"pidfile": str(tmp_path / "p"), "seconds": 0}}]}
        job = await finished(session, node, await submit(session, node, body))
        assert job["status"] == "completed", job
        step = job["results"][0]
        assert step["runner"] == "warm"
        assert step["output"]["ppid"] == pid
        async with session.get(f"{node.url}/metrics", headers=auth()) as response:
            metrics = await response.text()
        assert "secauto_script_runner_up 1.0" in metrics
        assert "secauto_script_runner_forks 1.0" in metrics
        for name in ("fork", "start"):  # one step: its figure is every percentile, a positive number of seconds
            p50, p99 = (float(re.search(rf'^secauto_script_runner_{name}_seconds{{percentile="{q}"}} (\S+)$', metrics,
                                        re.M).group(1)) for q in ("50", "99"))  # type: ignore[union-attr]
            assert 0 < p50 == p99 < 10, (name, p50, p99)
    assert not pid_exists(pid)  # stopped with the node


async def test_spawn_mode_starts_no_runner(redis_url: str, scripts_dir: Path, tmp_path: Path) -> None:
    settings = node_settings("spawn-1", redis_url=redis_url,
                             engine={"scripts_dir": str(scripts_dir), "runner": "spawn"})
    async with running_node(settings) as node, aiohttp.ClientSession() as session:
        assert node._scripts is None
        body = {"playbook": [{"action": "run_script", "script": "slow",
                              "parameters": {"pidfile": str(tmp_path / "p"), "seconds": 0}}]}
        job = await finished(session, node, await submit(session, node, body))
        assert job["status"] == "completed", job
        assert job["results"][0]["runner"] == "spawn"
        assert job["results"][0]["output"]["ppid"] == os.getpid()


async def test_a_killed_runner_fails_the_attempt_and_the_job_retry_completes_it(
        redis_url: str, scripts_dir: Path, tmp_path: Path) -> None:
    settings = node_settings("warm-2", redis_url=redis_url, engine={"scripts_dir": str(scripts_dir)})
    pidfile = tmp_path / "first-attempt"
    async with running_node(settings) as node, aiohttp.ClientSession() as session:
        first_runner = runner_pid(node)
        body = {"playbook": [{"action": "run_script", "script": "slow",
                              "parameters": {"pidfile": str(pidfile), "seconds": 1.0}}],
                "max_retries": 2}
        job_id = await submit(session, node, body)
        async with asyncio.timeout(10):
            while not pidfile.exists() or not pidfile.read_text():
                await asyncio.sleep(0.02)
        script_pid = int(pidfile.read_text())
        os.kill(first_runner, signal.SIGKILL)
        job = await finished(session, node, job_id)
        assert job["status"] == "completed", job
        assert job["retry_count"] == 1
        assert job["results"][0]["output"]["pid"] != script_pid
        deadline = time.monotonic() + 5
        while pid_exists(script_pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not pid_exists(script_pid)  # the first attempt's script died with its runner
        # The node replaced its runner and goes on running scripts warm.
        async with asyncio.timeout(10):
            while node._scripts is not None and node._scripts.stats().state != "ready":
                await asyncio.sleep(0.05)
        assert runner_pid(node) != first_runner
        body["playbook"][0]["parameters"]["seconds"] = 0
        job = await finished(session, node, await submit(session, node, body))
        assert job["status"] == "completed" and job["results"][0]["runner"] == "warm"
        async with session.get(f"{node.url}/health", headers=auth()) as response:
            assert response.status == 200
