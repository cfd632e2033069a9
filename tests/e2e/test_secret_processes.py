"""Secrets across real ``secauto serve`` processes: a node that never saw a secret being stored learns its
value by itself (loading the store at start, revealing it for a step) and masks it in its own logs and
records, also where a job did not reference it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio
import yaml

from tests.e2e.test_serve_processes import HEADERS, node_config
from tests.support.ports import free_port
from tests.support.procs import write_config

SECRET_KEY = "e2e-secret-key-0123456789abcdefghij"
CORE = uuid.uuid4().hex
VALUE = f'e2e-"{CORE}"-value'
SCRIPT = """
import json, sys
data = json.load(sys.stdin)
print("script stderr: " + data["token"], file=sys.stderr)
print(json.dumps({"echo": data["token"]}))
"""


def config(tmp_path: Path, name: str, port: int, redis_url: str, scripts: Path) -> Path:
    path = node_config(tmp_path, name, port, redis_url)
    data = yaml.safe_load(path.read_text())
    data["security"]["secret_key"] = SECRET_KEY
    data["engine"]["scripts_dir"] = str(scripts)
    data["logging"]["level"] = "debug"
    return write_config(path, data)


async def wait_done(http: aiohttp.ClientSession, url: str, job_id: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            async with http.get(f"{url}/cluster/jobs/{job_id}", headers=HEADERS) as response:
                job: dict[str, Any] = (await response.json())["job"]
            if job["status"] in ("completed", "failed"):
                return job
            await asyncio.sleep(0.1)


async def test_a_node_masks_a_secret_it_never_saw_stored(tmp_path: Path, redis_url: str,
                                                        process_factory: Any) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "echo_token.py").write_text(SCRIPT)
    first_port, second_port = free_port(), free_port()
    first = process_factory(config(tmp_path, "first", first_port, redis_url, scripts), name="first")
    await first.wait_http(timeout=30)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{first_port}/secrets", headers=HEADERS,
                             json={"name": "token", "value": VALUE}) as response:
            assert response.status == 200
        first.terminate()
        second = process_factory(config(tmp_path, "second", second_port, redis_url, scripts), name="second")
        await second.wait_http(timeout=30)
        url = f"http://127.0.0.1:{second_port}"
        uses = {"playbook": [{"run": "echo_token", "token": "{{secrets.token}}"},
                             {"action": "log", "message": "echoed {{echo}}"}]}
        # The first job does not reference the secret (its value arrives in the submitted context): the node
        # knows the value only from loading the store at start.
        carries = {"playbook": [{"run": "echo_token"}, {"action": "log", "message": "echoed {{echo}}"}],
                   "context": {"token": VALUE}}
        jobs = []
        for body in (carries, uses):
            async with http.post(f"{url}/cluster/jobs", headers=HEADERS, json=body) as response:
                jobs.append(await wait_done(http, url, (await response.json())["job_id"]))
        second.terminate()
    for job in jobs:
        assert job["status"] == "completed" and job["results"][0]["output"] == {"echo": "***"}, job
    log = second.stdout_path.read_text() + second.stderr_path.read_text()
    assert "echoed ***" in log and CORE not in log
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        records = [await client.get(f"secauto:job:{job['id']}") for job in jobs]
    finally:
        await client.aclose()
    assert all(record is not None and b'"echo":"***"' in record and CORE.encode() not in record for record in records)
