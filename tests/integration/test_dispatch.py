"""Dispatch rules on a real 3-node cluster (one event loop, real redis-server): counts, not timings."""

from __future__ import annotations

import asyncio
import collections
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import msgspec
import redis.asyncio

from secauto.node import Node
from tests.support.nodes import auth, node_settings, running_node

CLUSTER = "dispatch"


async def cluster_of(redis_url: str, capacities: list[int], **cluster: Any) -> tuple[AsyncExitStack, list[Node]]:
    stack = AsyncExitStack()
    nodes = []
    for index, capacity in enumerate(capacities, start=1):
        settings = node_settings(f"node-{index}", redis_url=redis_url, cluster_name=CLUSTER,
                                 cluster={"max_concurrent_jobs": capacity, **cluster})
        nodes.append(await stack.enter_async_context(running_node(settings)))
    # Wait until every node has published its slots (first heartbeat).
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(5):
            while await client.hlen(f"secauto:capacity:{CLUSTER}") < len(capacities):
                await asyncio.sleep(0.02)
    finally:
        await client.aclose()
    return stack, nodes


def sleeping(seconds: float, **fields: Any) -> dict[str, Any]:
    return {"playbook": [{"action": "sleep", "seconds": seconds}], **fields}


async def submit_batch(session: aiohttp.ClientSession, node: Node, jobs: list[dict[str, Any]]) -> list[str]:
    async with session.post(f"{node.url}/cluster/jobs/batch", json={"jobs": jobs}, headers=auth()) as response:
        assert response.status == 200, await response.text()
        return list((await response.json())["job_ids"])


async def jobs_of(client: redis.asyncio.Redis, ids: list[str]) -> list[dict[str, Any]]:
    return [msgspec.json.decode(raw) for raw in await client.mget([f"secauto:job:{i}" for i in ids])]


async def wait_running(client: redis.asyncio.Redis, ids: list[str], count: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(10):
        while True:
            jobs = await jobs_of(client, ids)
            if sum(job["status"] == "running" for job in jobs) >= count:
                return jobs
            await asyncio.sleep(0.05)


async def wait_done(client: redis.asyncio.Redis, ids: list[str], timeout: float = 30) -> list[dict[str, Any]]:
    async with asyncio.timeout(timeout):
        while True:
            jobs = await jobs_of(client, ids)
            if all(job["status"] in ("completed", "failed", "cancelled") for job in jobs):
                return jobs
            await asyncio.sleep(0.05)


def per_node(jobs: list[dict[str, Any]], status: str = "running") -> dict[str, int]:
    return dict(collections.Counter(job["assigned_to"] for job in jobs if job["status"] == status))


async def test_equal_capacities_split_evenly(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    stack, nodes = await cluster_of(redis_url, [10, 10, 10])
    async with stack, aiohttp.ClientSession() as session:
        ids = await submit_batch(session, nodes[0], [sleeping(1.5) for _ in range(30)])
        jobs = await wait_running(redis_client, ids, 30)
        counts = per_node(jobs)
        assert sorted(counts) == ["node-1", "node-2", "node-3"]
        assert all(9 <= count <= 11 for count in counts.values()), counts


async def test_split_follows_capacity(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    stack, nodes = await cluster_of(redis_url, [5, 10, 20])
    async with stack, aiohttp.ClientSession() as session:
        ids = await submit_batch(session, nodes[1], [sleeping(1.5) for _ in range(28)])
        jobs = await wait_running(redis_client, ids, 28)
        counts = per_node(jobs)
        # Proportional to 5:10:20 is 4:8:16.
        assert abs(counts.get("node-1", 0) - 4) <= 1 and abs(counts.get("node-2", 0) - 8) <= 1, counts
        assert abs(counts.get("node-3", 0) - 16) <= 1, counts


async def test_a_busy_node_gets_fewer_new_jobs(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    stack, nodes = await cluster_of(redis_url, [10, 10, 10])
    async with stack, aiohttp.ClientSession() as session:
        # Make node-1 busy first: with only node-1 accepting, give it 6 long jobs.
        for node in nodes[1:]:
            node.system.get("dispatcher")._cell.actor.claiming = False  # type: ignore[attr-defined]
        busy = await submit_batch(session, nodes[0], [sleeping(3) for _ in range(6)])
        await wait_running(redis_client, busy, 6)
        for node in nodes[1:]:
            node.system.get("dispatcher")._cell.actor.claiming = True  # type: ignore[attr-defined]
        ids = await submit_batch(session, nodes[0], [sleeping(1.5) for _ in range(12)])
        counts = per_node(await wait_running(redis_client, ids, 12))
        # Loads end up even: 6 + 2 on node-1, 5 each on the idle nodes.
        assert counts.get("node-1", 0) < counts.get("node-2", 0) and counts.get("node-1", 0) < counts.get("node-3", 0)
        assert counts.get("node-1", 0) <= 3, counts


async def test_no_node_ever_exceeds_its_slots(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    stack, nodes = await cluster_of(redis_url, [2, 3, 4])
    async with stack, aiohttp.ClientSession() as session:
        ids = await submit_batch(session, nodes[0], [sleeping(0.2) for _ in range(40)])
        capacity = {"node-1": 2, "node-2": 3, "node-3": 4}
        async with asyncio.timeout(30):
            while True:
                jobs = await jobs_of(redis_client, ids)
                for node_id, count in per_node(jobs).items():
                    assert count <= capacity[node_id], (node_id, count)
                if all(job["status"] == "completed" for job in jobs):
                    break
                await asyncio.sleep(0.02)


async def test_round_robin_takes_nodes_in_turn(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    stack, nodes = await cluster_of(redis_url, [10, 10, 10], load_balancing="round_robin")
    async with stack, aiohttp.ClientSession() as session:
        ids = await submit_batch(session, nodes[2], [{"playbook": [{"action": "log", "message": "x"}]}
                                                     for _ in range(30)])
        jobs = await wait_done(redis_client, ids)
        assert per_node(jobs, "completed") == {"node-1": 10, "node-2": 10, "node-3": 10}
        # Consecutive jobs went to the nodes in turn.
        order = [job["assigned_to"] for job in jobs]
        assert all(order[i] != order[i + 1] for i in range(len(order) - 1))


async def test_affinity_keeps_a_key_on_one_node_and_moves_only_the_leavers_keys(
        redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    stack, nodes = await cluster_of(redis_url, [10, 10, 10])
    async with stack, aiohttp.ClientSession() as session:
        keys = [f"incident-{n}" for n in range(12)]
        quick = [{"playbook": [{"action": "log", "message": "x"}], "affinity": key} for key in keys for _ in range(3)]
        jobs = await wait_done(redis_client, await submit_batch(session, nodes[0], quick))
        owner: dict[str, set[str]] = collections.defaultdict(set)
        for job in jobs:
            owner[job["affinity"]].add(job["assigned_to"])
        assert all(len(nodes_for_key) == 1 for nodes_for_key in owner.values()), owner
        before = {key: next(iter(value)) for key, value in owner.items()}
        assert len(set(before.values())) > 1  # keys spread over nodes
        leaver = next(node for node in nodes if node.settings.node_id in before.values())
        await leaver.stop(grace=1)
        survivors = [node for node in nodes if node is not leaver]
        again = [{"playbook": [{"action": "log", "message": "x"}], "affinity": key} for key in keys]
        jobs = await wait_done(redis_client, await submit_batch(session, survivors[0], again))
        after = {job["affinity"]: job["assigned_to"] for job in jobs}
        for key in keys:
            if before[key] != leaver.settings.node_id:
                assert after[key] == before[key], key  # only the leaver's keys moved
            else:
                assert after[key] != leaver.settings.node_id


async def test_affinity_is_only_a_preference(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    stack, nodes = await cluster_of(redis_url, [1, 1], affinity_wait=0.5)
    async with stack, aiohttp.ClientSession() as session:
        [first] = await submit_batch(session, nodes[0], [sleeping(3, affinity="k")])
        [owner_job] = await wait_running(redis_client, [first], 1)
        [second] = await submit_batch(session, nodes[0], [{"playbook": [{"action": "log", "message": "x"}],
                                                           "affinity": "k"}])
        [job] = await wait_done(redis_client, [second], timeout=5)
        assert job["assigned_to"] != owner_job["assigned_to"]  # did not wait for the busy owner


async def test_priority_first_then_fifo_when_all_nodes_are_busy(redis_url: str,
                                                                redis_client: redis.asyncio.Redis) -> None:
    stack, nodes = await cluster_of(redis_url, [1, 1, 1])
    # The order of job.started events is the order of the claims (timestamps have 1 ms resolution).
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(f"secauto:events:{CLUSTER}")
    try:
        async with stack, aiohttp.ClientSession() as session:
            blockers = await submit_batch(session, nodes[0], [sleeping(1) for _ in range(3)])
            await wait_running(redis_client, blockers, 3)
            queued = [{"playbook": [{"action": "log", "message": "x"}], "priority": p} for p in (0, 0, 5, 1, 5)]
            ids = await submit_batch(session, nodes[0], queued)
            await wait_done(redis_client, ids)
        order = []
        while (message := await pubsub.get_message(timeout=0.5)) is not None:
            if message["type"] != "message":
                continue
            event = msgspec.json.decode(message["data"])
            if event["type"] == "job.started" and event["job_id"] in ids:
                order.append(ids.index(event["job_id"]))
    finally:
        await pubsub.aclose()
    assert order[:2] == [2, 4] and order[2] == 3 and order[3:] == [0, 1], order


async def test_delayed_jobs_wait_without_blocking_others(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    stack, nodes = await cluster_of(redis_url, [1])
    async with stack, aiohttp.ClientSession() as session:
        [late] = await submit_batch(session, nodes[0], [{"playbook": [{"action": "log", "message": "x"}],
                                                         "delay": 1.0}])
        [now] = await submit_batch(session, nodes[0], [{"playbook": [{"action": "log", "message": "x"}]}])
        done_now, done_late = await wait_done(redis_client, [now, late], timeout=10)
        assert done_now["completed_at"] < done_late["started_at"]
        assert await redis_client.zcard(f"secauto:delayed:{CLUSTER}") == 0
        submitted = done_late["submitted_at"]
        assert _seconds(done_late["started_at"]) - _seconds(submitted) >= 0.95


async def test_tag_limits_cap_running_jobs_cluster_wide(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    stack, nodes = await cluster_of(redis_url, [5, 5, 5], tag_limits={"scan": 2})
    async with stack, aiohttp.ClientSession() as session:
        ids = await submit_batch(session, nodes[0], [sleeping(0.3, tags=["scan"]) for _ in range(6)])
        other = await submit_batch(session, nodes[0], [sleeping(0.3, tags=["enrich"]) for _ in range(4)])
        peak = 0
        async with asyncio.timeout(20):
            while True:
                jobs = await jobs_of(redis_client, ids)
                peak = max(peak, sum(job["status"] == "running" for job in jobs))
                if all(job["status"] == "completed" for job in jobs):
                    break
                await asyncio.sleep(0.02)
        assert peak == 2
        assert all(job["status"] == "completed" for job in await wait_done(redis_client, other))
        assert await redis_client.hgetall(f"secauto:tag-running:{CLUSTER}") == {}


def _seconds(stamp: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
