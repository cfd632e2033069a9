"""Issue 10 with real processes: a node is SIGKILLed right after it recorded a dependency's end, before
anything else happens on it; the dependent still runs, at once, on the other node.

The release of a waiting job happens in the same Lua script that records its last dependency's end, so
no step is left for the dead node to take. Placement is pinned with affinity keys (rendezvous hashing,
as claim.lua does): the dependency runs on the victim, the dependent is meant for the survivor, so its
start right after the kill (well within one lease) cannot come from the leader's recovery of a lost
node.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from tests.support.faults import (
    FAST_CLUSTER,
    Api,
    EventRecorder,
    FaultEnv,
    crash_lines,
    get_job,
    leader_id,
    mark_step,
    outcomes,
    wait_jobs,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

LEASE = float(FAST_CLUSTER["lease_timeout"])


def affinity_for(node: str, nodes: list[str]) -> str:
    """An affinity key that rendezvous hashing (lib.lua ``rendezvous``) gives to ``node``."""
    for index in range(1000):
        key = f"key-{index}"
        weights = {name: hashlib.sha1(f"{name}\0{key}".encode()).hexdigest()[:12] for name in nodes}
        if max(weights, key=lambda name: weights[name]) == node:
            return key
    raise AssertionError(f"no affinity key for {node}")


async def test_a_node_killed_right_after_a_dependency_ended_does_not_strand_its_dependent(
        tmp_path: Path, redis_url: str, redis_client: redis.asyncio.Redis, process_factory: Any) -> None:
    env = FaultEnv(tmp_path, process_factory, redis_url, "faults-deps-crash")
    async with asyncio.timeout(60):
        victim, survivor = await env.start("a", "b")
        await wait_until(lambda: leader_id(redis_client, env.cluster), timeout=10, what="a leader")
        # Both nodes have claimed once (they register their capacity), so affinity sees both.
        await wait_until(lambda: _both(redis_client, env.cluster), timeout=10, what="both nodes registered")
        names = ["a", "b"]
        async with EventRecorder(redis_client, env.cluster) as recorder, Api.open() as api:
            parent = await api.submit(victim.url, [mark_step(seconds=1.0)], env.context("parent"),
                                      affinity=affinity_for(victim.name, names), max_retries=0)
            child = await api.submit(victim.url, [mark_step(), {"action": "set", "variables": {
                "parent_ran_on": "{{dependencies." + parent + ".context.ran.node_pid}}"}}],
                env.context("child"), affinity=affinity_for(survivor.name, names), depends_on=[parent])
            waiting = await get_job(redis_client, child)
            assert waiting is not None and waiting["status"] == "waiting", waiting
            _, started = await recorder.wait_for(lambda e: e["type"] == "job.started" and e["job_id"] == parent,
                                                 timeout=10, what="the parent's start")
            assert started["node_id"] == victim.name

            await recorder.wait_for(lambda e: e["type"] == "job.completed" and e["job_id"] == parent,
                                    timeout=10, what="the parent's end")
            assert victim.proc.kill() == -signal.SIGKILL
            killed_at = time.monotonic()
            jobs = await wait_jobs(redis_client, [parent, child], timeout=20)
            child_started, _ = await recorder.wait_for(
                lambda e: e["type"] == "job.started" and e["job_id"] == child, timeout=1, what="the child's start")

    done, ran = jobs[parent], jobs[child]
    assert outcomes(done) == ["completed"] and outcomes(ran) == ["completed"], (done, ran)
    assert ran["assigned_to"] == survivor.name and ran["attempt"] == 1
    assert ran["started_at"] >= done["completed_at"]
    assert ran["context"]["parent_ran_on"] == done["context"]["ran"]["node_pid"]  # the parent's final context
    # Released by the script that recorded the parent's end: no recovery of the dead node was needed.
    assert child_started - killed_at < LEASE, child_started - killed_at
    assert not recorder.of("job.retrying")
    assert survivor.proc.is_running and not crash_lines(survivor.proc), crash_lines(survivor.proc)


async def _both(client: redis.asyncio.Redis, cluster: str) -> bool:
    return set(await client.hkeys(f"secauto:capacity:{cluster}")) >= {b"a", b"b"}
