"""Job dependencies on three nodes in one event loop sharing a real redis-server: DAG release order,
failure propagation, cancel cascades, and dependents submitted before, while and after their
dependencies end."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio

import secauto.node
from secauto.node import Node
from tests.integration.test_cluster import start_cluster
from tests.support.nodes import auth

CLUSTER = "my-secauto-cluster"
FINISHED = ("completed", "failed", "cancelled")


@pytest.fixture
async def cluster(redis_url: str) -> AsyncIterator[list[Node]]:
    stack, nodes = await start_cluster(redis_url, cluster={"max_retries": 0, "max_concurrent_jobs": 4})
    async with stack:
        yield nodes


def work(seconds: float, **variables: Any) -> list[dict[str, Any]]:
    return [{"action": "sleep", "seconds": seconds}, {"action": "set", "variables": variables or {"done": True}}]


async def post(session: aiohttp.ClientSession, node: Node, path: str, body: Any) -> dict[str, Any]:
    async with session.post(f"{node.url}{path}", json=body, headers=auth()) as response:
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def records(client: redis.asyncio.Redis, job_ids: list[str]) -> list[dict[str, Any]]:
    raws = await client.mget([f"secauto:job:{job_id}" for job_id in job_ids])
    return [msgspec.json.decode(raw) for raw in raws]


async def wait_ended(client: redis.asyncio.Redis, job_ids: list[str],
                     timeout: float = 40.0) -> dict[str, dict[str, Any]]:
    async with asyncio.timeout(timeout):
        while True:
            jobs = await records(client, job_ids)
            if all(job["status"] in FINISHED for job in jobs):
                return {job["id"]: job for job in jobs}
            await asyncio.sleep(0.05)


def assert_released_in_order(jobs: dict[str, dict[str, Any]]) -> None:
    """Each job started after every one of its dependencies completed."""
    for job in jobs.values():
        for parent in job.get("depends_on", []):
            assert job["started_at"] >= jobs[parent]["completed_at"], (job["id"], parent)


async def test_fan_out_fan_in_and_diamond_release_in_order_across_nodes(cluster: list[Node],
                                                                         redis_client: redis.asyncio.Redis) -> None:
    a, _, c = cluster
    async with aiohttp.ClientSession() as session:
        answer = await post(session, a, "/cluster/jobs/batch", {"jobs": [
            {"key": "root", "playbook": work(0.1, level="root")},
            *({"key": f"fan{i}", "depends_on": ["root"], "playbook": work(0.2, part=i)} for i in range(6)),
            {"key": "join", "depends_on": [f"fan{i}" for i in range(6)],
             "playbook": work(0.05, parts=[f"{{{{dependencies.fan{i}.context.part}}}}" for i in range(6)])},
            {"key": "left", "depends_on": ["join"], "playbook": work(0.1)},
            {"key": "right", "depends_on": ["join"], "playbook": work(0.3)},
            {"key": "bottom", "depends_on": ["left", "right"], "playbook": work(0)},
        ]})
        ids = answer["job_ids"]
        jobs = await wait_ended(redis_client, ids)
        # The view of the last job, from another node.
        async with session.get(f"{c.url}/cluster/jobs/{ids[-1]}", headers=auth()) as response:
            view = (await response.json())["job"]
    assert [jobs[job_id]["status"] for job_id in ids] == ["completed"] * len(ids)
    assert_released_in_order(jobs)
    assert len({jobs[job_id]["assigned_to"] for job_id in ids[1:7]}) > 1  # the fan-out ran on several nodes
    assert jobs[ids[7]]["context"]["parts"] == list(range(6))
    assert view["dependencies"] == {"left": {"id": ids[8], "status": "completed"},
                                    "right": {"id": ids[9], "status": "completed"}}
    assert not await redis_client.keys(f"secauto:waiting-on:{CLUSTER}:*")
    assert not await redis_client.keys(f"secauto:dependents:{CLUSTER}:*")
    assert not await redis_client.exists(f"secauto:dep-refs:{CLUSTER}", f"secauto:dep-pins:{CLUSTER}")


async def test_failure_propagates_and_cancel_cascades(cluster: list[Node], redis_client: redis.asyncio.Redis) -> None:
    a, b, _ = cluster
    async with aiohttp.ClientSession() as session:
        answer = await post(session, a, "/cluster/jobs/batch", {"jobs": [
            {"key": "scan", "playbook": [{"action": "sleep", "seconds": 0.2}, {"action": "fail", "message": "down"}]},
            {"key": "enrich", "depends_on": ["scan"], "playbook": work(0)},
            {"key": "report", "depends_on": ["enrich"], "playbook": work(0)},
            {"key": "archive", "depends_on": ["report"], "playbook": work(0)},
            {"key": "cleanup", "depends_on": ["scan"], "on_dependency_failure": "run",
             "playbook": work(0, scan="{{dependencies.scan.status}}")},
            {"key": "long", "playbook": work(30)},
            {"key": "after-long", "depends_on": ["long"], "playbook": work(0)},
            {"key": "after-after", "depends_on": ["after-long"], "playbook": work(0)},
        ]})
        scan, enrich, report, archive, cleanup, long, after_long, after_after = answer["job_ids"]
        jobs = await wait_ended(redis_client, [scan, enrich, report, archive, cleanup])
        # Cancel a running job through another node: its waiting dependents go with it.
        async with session.delete(f"{b.url}/cluster/jobs/{long}", headers=auth()) as response:
            assert response.status == 200
        jobs |= await wait_ended(redis_client, [long, after_long, after_after], timeout=10)
    assert jobs[scan]["status"] == "failed"
    for job_id in (enrich, report, archive, after_long, after_after):
        assert (jobs[job_id]["status"], jobs[job_id]["reason"]) == ("cancelled", "dependency_failed"), jobs[job_id]
        assert jobs[job_id]["attempts"] == []  # never ran
    assert jobs[cleanup]["status"] == "completed" and jobs[cleanup]["context"]["scan"] == "failed"
    assert jobs[long]["status"] == "cancelled" and jobs[long]["reason"] == "cancelled"


async def test_dependents_submitted_before_while_and_after_their_dependencies_end(
        cluster: list[Node], redis_client: redis.asyncio.Redis) -> None:
    """Parents of a few tens of milliseconds, dependents submitted to random nodes at random moments
    around their ends: every dependent runs, after its parent."""
    rng = random.Random(7)
    async with aiohttp.ClientSession() as session:
        parents = [(await post(session, rng.choice(cluster), "/cluster/jobs", {"playbook": work(rng.uniform(0, 0.1))}))
                   ["job_id"] for _ in range(20)]

        async def add_child(parent: str) -> str:
            await asyncio.sleep(rng.uniform(0, 0.3))
            answer = await post(session, rng.choice(cluster), "/cluster/jobs",
                                {"playbook": work(0), "depends_on": [parent]})
            return str(answer["job_id"])

        children = await asyncio.gather(*(add_child(parent) for parent in parents for _ in range(2)))
        jobs = await wait_ended(redis_client, [*parents, *children])
    assert {job["status"] for job in jobs.values()} == {"completed"}
    assert_released_in_order(jobs)
    # Both cases happened: dependents that had to wait, and dependents of jobs already ended.
    ended_first = [jobs[child]["submitted_at"] > jobs[jobs[child]["depends_on"][0]]["completed_at"]
                   for child in children]
    assert any(ended_first) and not all(ended_first), ended_first


async def test_the_leader_finishes_a_cascade_larger_than_one_scripts_budget(
        redis_url: str, redis_client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a budget of 2 dependents per script, a failed job with 12 dependents below it (a fan-out and a
    chain) leaves most of its cascade to the backlog; the leader's reaper works it off."""
    original = secauto.node.retention_policy
    monkeypatch.setattr(secauto.node, "retention_policy",
                        lambda settings: msgspec.structs.replace(original(settings), settle_budget=2))
    stack, nodes = await start_cluster(redis_url, count=2, cluster={"max_retries": 0})
    async with stack, aiohttp.ClientSession() as session:
        chain = [{"key": f"c{i}", "depends_on": [f"c{i - 1}" if i else "f0"], "playbook": work(0)} for i in range(6)]
        answer = await post(session, nodes[0], "/cluster/jobs/batch", {"jobs": [
            {"key": "scan", "playbook": [{"action": "fail", "message": "down"}]},
            *({"key": f"f{i}", "depends_on": ["scan"], "playbook": work(0)} for i in range(6)),
            *chain,
        ]})
        jobs = await wait_ended(redis_client, answer["job_ids"], timeout=20)
    statuses = [jobs[job_id]["status"] for job_id in answer["job_ids"]]
    assert statuses == ["failed"] + ["cancelled"] * 12
    assert await redis_client.zcard(f"secauto:dep-backlog:{CLUSTER}") == 0
