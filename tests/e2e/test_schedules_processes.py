"""Schedules with real `secauto serve` processes: one job per slot while the leader is SIGKILLed and
while Redis restarts from its AOF, and the eviction-policy refusal (exit 2, one line).

Exactly-once is counted as jobs per ``scheduled_for`` (and per history entry) in Redis.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from tests.support.faults import Api, FaultEnv, leader_id, node_config, wait_until
from tests.support.ports import free_port

pytestmark = pytest.mark.timeout(120)

TICK = {"schedules": [{"name": "tick", "every": 1, "overlap": "allow",
                       "playbook": [{"action": "log", "message": "tick"}]}]}


async def _slots(client: redis.asyncio.Redis, cluster: str) -> tuple[collections.Counter[str], list[dict[str, Any]]]:
    """(jobs per scheduled_for of schedule tick, its history entries). The schedule keeps firing while
    this reads: the history is read first, so the jobs read afterwards may include slots newer than any
    history entry, which :func:`_check_exactly_once` leaves out of the comparison."""
    history = [json.loads(raw) for raw in await client.lrange(f"secauto:schedule-history:{cluster}:tick", 0, -1)]
    ids = [member.decode() async for member, _ in client.zscan_iter(f"secauto:job-index:{cluster}")]
    raws = await client.mget([f"secauto:job:{job_id}" for job_id in ids]) if ids else []
    jobs = [json.loads(raw) for raw in raws if raw is not None]
    per_slot = collections.Counter(job["scheduled_for"] for job in jobs if job.get("schedule") == "tick")
    return per_slot, history


def _check_exactly_once(per_slot: collections.Counter[str], history: list[dict[str, Any]]) -> None:
    assert per_slot and max(per_slot.values()) == 1, {slot: n for slot, n in per_slot.items() if n > 1}
    recorded = collections.Counter(entry["slot"] for entry in history)
    assert max(recorded.values()) == 1, {slot: n for slot, n in recorded.items() if n > 1}
    fired = {entry["slot"] for entry in history if entry["outcome"] == "fired"}
    newest = max(datetime.datetime.fromisoformat(entry["slot"]) for entry in history)
    assert fired == {slot for slot in per_slot if datetime.datetime.fromisoformat(slot) <= newest}
    seconds = sorted(int(datetime.datetime.fromisoformat(entry["slot"]).timestamp()) for entry in history)
    assert seconds == list(range(seconds[0], seconds[-1] + 1)), "a slot was neither fired nor recorded"


async def test_sigkill_the_leader_mid_schedule(tmp_path: Path, redis_url: str, redis_client: redis.asyncio.Redis,
                                               process_factory: Any) -> None:
    env = FaultEnv(tmp_path, process_factory, redis_url, "sched-kill")
    async with asyncio.timeout(90):
        nodes = await env.start("a", "b", "c", extra=TICK)
        leader = await wait_until(lambda: leader_id(redis_client, env.cluster), timeout=10, what="a leader")
        await asyncio.sleep(3)
        env.nodes[leader].proc.kill()  # SIGKILL, mid-schedule
        new_leader = await wait_until(lambda: _new_leader(redis_client, env.cluster, leader), timeout=15,
                                      what="a new leader")
        await asyncio.sleep(3)
        per_slot, history = await _slots(redis_client, env.cluster)
    _check_exactly_once(per_slot, history)
    outcomes = collections.Counter(entry["outcome"] for entry in history)
    assert outcomes["fired"] >= 5 and set(outcomes) <= {"fired", "missed"}, outcomes
    assert new_leader != leader and len(nodes) == 3


async def _new_leader(client: redis.asyncio.Redis, cluster: str, old: str) -> str | None:
    leader = await leader_id(client, cluster)
    return leader if leader and leader != old else None


async def test_redis_restart_from_aof_mid_schedule(tmp_path: Path, redis_process_factory: Any,
                                                   process_factory: Any) -> None:
    server = redis_process_factory(appendonly=True, appendfsync="always")
    client = server.client()
    env = FaultEnv(tmp_path, process_factory, server.url, "sched-aof")
    try:
        async with asyncio.timeout(90):
            await env.start("a", "b", extra=TICK)
            async with Api.open() as api:
                status, body, _ = await api.request("PUT", f"{env.nodes['a'].url}/schedules/api-made", {
                    "every": 1, "playbook": [{"action": "log", "message": "x"}]})
                assert status == 200, body
                await asyncio.sleep(3)
                server.stop()  # SIGTERM: the AOF is complete
                await asyncio.sleep(1.5)
                await asyncio.to_thread(server.start)
                await wait_until(lambda: _fired_after_restart(client, env.cluster), timeout=20,
                                 what="fires after the restart")
                await asyncio.sleep(2)
                status, body, _ = await api.request("GET", f"{env.nodes['b'].url}/schedules")
                assert status == 200 and [item["name"] for item in body["schedules"]] == ["api-made", "tick"]
                per_slot, history = await _slots(client, env.cluster)
    finally:
        await client.aclose()
    _check_exactly_once(per_slot, history)


async def _fired_after_restart(client: redis.asyncio.Redis, cluster: str) -> bool:
    try:
        entries = await client.lrange(f"secauto:schedule-history:{cluster}:tick", 0, 2)
    except (redis.exceptions.ConnectionError, OSError):
        return False
    return sum(1 for raw in entries if json.loads(raw)["outcome"] == "fired") >= 2 and await client.ping()


def test_refuses_to_start_on_a_redis_that_evicts(tmp_path: Path, redis_process_factory: Any) -> None:
    server = redis_process_factory(extra_args=["--maxmemory-policy", "volatile-lru"])
    config = node_config(tmp_path / "node.yaml", node_id="careful", port=free_port(), redis_url=server.url,
                         cluster_name="sched-evict", scripts_dir=tmp_path)
    proc = subprocess.run([sys.executable, "-m", "secauto", "serve", "--config", str(config)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "secauto: config error: cluster.allow_eviction: Redis maxmemory-policy is volatile-lru"), proc.stderr
