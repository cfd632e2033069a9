"""Three nodes in one event loop sharing a real redis-server: the cluster-mode document end to end."""

from __future__ import annotations

import asyncio
import collections
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio
from loguru import logger

from actors.messages import StopClaiming
from secauto.node import Node
from tests.support.nodes import auth, node_settings, running_node
from tests.support.ports import free_port

CLUSTER = "my-secauto-cluster"
QUICK = [{"action": "set", "variables": {"done": True}}, {"action": "log", "message": "job {{n}}"}]


def sleepy(seconds: float) -> list[dict[str, Any]]:
    return [{"action": "sleep", "seconds": seconds}]


async def start_cluster(redis_url: str, count: int = 3, **sections: Any) -> tuple[AsyncExitStack, list[Node]]:
    stack = AsyncExitStack()
    nodes = []
    for index in range(1, count + 1):
        settings = node_settings(f"node-{index}", redis_url=redis_url, cluster_name=CLUSTER, **sections)
        nodes.append(await stack.enter_async_context(running_node(settings)))
    return stack, nodes


@pytest.fixture
async def cluster(redis_url: str) -> AsyncIterator[list[Node]]:
    stack, nodes = await start_cluster(redis_url)
    async with stack:
        yield nodes


async def submit(session: aiohttp.ClientSession, node: Node, body: dict[str, Any]) -> str:
    async with session.post(f"{node.url}/cluster/jobs", json=body, headers=auth()) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["job_id"])


async def get_cluster(session: aiohttp.ClientSession, node: Node) -> dict[str, Any]:
    async with session.get(f"{node.url}/cluster", headers=auth()) as response:
        assert response.status == 200
        return (await response.json())["cluster"]  # type: ignore[no-any-return]


async def wait_running(client: redis.asyncio.Redis, job_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The job's record once it is running."""
    async with asyncio.timeout(timeout):
        while (raw := await client.get(f"secauto:job:{job_id}")) is None or \
                (job := msgspec.json.decode(raw))["status"] != "running":
            await asyncio.sleep(0.05)
    return job  # type: ignore[no-any-return]


async def wait_finished(client: redis.asyncio.Redis, job_ids: list[str], timeout: float = 60.0) -> list[dict[str, Any]]:
    async with asyncio.timeout(timeout):
        while True:
            raws = await client.mget([f"secauto:job:{job_id}" for job_id in job_ids])
            jobs = [msgspec.json.decode(raw) for raw in raws if raw is not None]
            if len(jobs) == len(job_ids) and all(job["status"] in ("completed", "failed") for job in jobs):
                return jobs
            await asyncio.sleep(0.1)


async def test_300_jobs_round_robin_complete_exactly_once_on_several_nodes(
        cluster: list[Node], redis_client: redis.asyncio.Redis) -> None:
    events: collections.Counter[tuple[str, str]] = collections.Counter()
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(f"secauto:events:{CLUSTER}")

    async def collect() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                event = msgspec.json.decode(message["data"])
                if event.get("job_id"):
                    events[(event["type"], event["job_id"])] += 1

    collector = asyncio.create_task(collect())
    semaphore = asyncio.Semaphore(30)
    try:
        async with aiohttp.ClientSession() as session:

            async def one(index: int) -> str:
                async with semaphore:
                    body = {"playbook": [*QUICK, *sleepy(0.02)], "context": {"n": index}}
                    return await submit(session, cluster[index % 3], body)

            job_ids = await asyncio.gather(*(one(index) for index in range(300)))
            jobs = await wait_finished(redis_client, job_ids)
            assert [job["status"] for job in jobs] == ["completed"] * 300
            assert all(job["attempt"] == 1 and job["retry_count"] == 0 for job in jobs)
            per_node = collections.Counter(job["assigned_to"] for job in jobs)
            assert len(per_node) > 1, per_node
            assert await redis_client.zcard(f"secauto:jobs:{CLUSTER}") == 0
            # Exactly once: one start and one completion event per job, for every job.
            async with asyncio.timeout(5):
                while sum(1 for (kind, _) in events if kind == "job.completed") < 300:
                    await asyncio.sleep(0.05)
            for job_id in job_ids:
                assert events[("job.submitted", job_id)] == 1
                assert events[("job.started", job_id)] == 1
                assert events[("job.completed", job_id)] == 1
            # Every node's view lists the three nodes, and their counters add up to the jobs run.
            async with asyncio.timeout(10):
                while True:
                    views = [await get_cluster(session, node) for node in cluster]
                    totals = [sum(node["jobs_completed"] for node in view["nodes"]) for view in views]
                    if all(view["total_nodes"] == 3 for view in views) and totals == [300, 300, 300]:
                        break
                    await asyncio.sleep(0.2)
            for view in views:
                assert sorted(node["id"] for node in view["nodes"]) == ["node-1", "node-2", "node-3"]
                counts = {node["id"]: node["jobs_completed"] for node in view["nodes"]}
                assert counts == dict(per_node)
                assert all(node["status"] == "active" and node["jobs_failed"] == 0 for node in view["nodes"])
                assert view["leader"] in ("node-1", "node-2", "node-3")
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        await pubsub.aclose()


async def test_load_is_running_over_capacity(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    stack, [node] = await start_cluster(redis_url, count=1, cluster={"max_concurrent_jobs": 10})
    async with stack, aiohttp.ClientSession() as session:
        ids = [await submit(session, node, {"playbook": sleepy(3)}) for _ in range(3)]
        async with asyncio.timeout(10):
            while True:
                view = await get_cluster(session, node)
                record = view["nodes"][0]
                if record["jobs_running"] == 3:
                    break
                await asyncio.sleep(0.1)
        assert record["load"] == 0.3
        await wait_finished(redis_client, ids)


async def test_no_node_runs_more_than_its_slots(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    stack, nodes = await start_cluster(redis_url, count=2, cluster={"max_concurrent_jobs": 2})
    async with stack, aiohttp.ClientSession() as session:
        ids = [await submit(session, nodes[0], {"playbook": sleepy(1)}) for _ in range(7)]
        await asyncio.sleep(0.5)
        running = await redis_client.zcard(f"secauto:running:{CLUSTER}")
        assert running == 4
        assert await redis_client.zcard(f"secauto:jobs:{CLUSTER}") == 3
        jobs = await wait_finished(redis_client, ids, timeout=30)
        assert all(job["status"] == "completed" for job in jobs)


def redis_cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10,
                          check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli not installed")
async def test_the_documents_redis_cli_commands(redis_url: str, redis_server: Any) -> None:
    stack, nodes = await start_cluster(redis_url, cluster={"max_concurrent_jobs": 1})
    async with stack, aiohttp.ClientSession() as session:
        ids = [await submit(session, nodes[i % 3], {"playbook": sleepy(2)}) for i in range(5)]
        await asyncio.sleep(0.5)
        port = redis_server.port
        assert redis_cli(port, "ZCARD", f"secauto:jobs:{CLUSTER}") == "2"
        keys = redis_cli(port, "KEYS", f"secauto:nodes:{CLUSTER}:*").splitlines()
        assert sorted(keys) == [f"secauto:nodes:{CLUSTER}:node-{i}" for i in (1, 2, 3)]
        job = msgspec.json.decode(redis_cli(port, "GET", f"secauto:job:{ids[0]}"))
        assert job["id"] == ids[0] and job["status"] in ("pending", "running")
        node = msgspec.json.decode(redis_cli(port, "GET", f"secauto:nodes:{CLUSTER}:node-1"))
        assert node["id"] == "node-1" and "load" in node
        ttl = int(redis_cli(port, "PTTL", f"secauto:nodes:{CLUSTER}:node-1"))
        assert 0 < ttl <= 1500  # 3 x heartbeat_interval (0.5 s)


async def test_dead_node_shows_inactive_then_disappears(redis_url: str) -> None:
    stack, nodes = await start_cluster(redis_url, count=2)
    async with stack, aiohttp.ClientSession() as session:
        async with asyncio.timeout(5):
            while (await get_cluster(session, nodes[0]))["total_nodes"] != 2:
                await asyncio.sleep(0.1)
        # Silence node-2's heartbeat without a graceful leave (as if it hung or crashed).
        nodes[1].system.get("heartbeat")._cell.cancel_timer("beat")  # type: ignore[attr-defined]
        statuses = []
        async with asyncio.timeout(10):
            while True:
                view = await get_cluster(session, nodes[0])
                entry = {node["id"]: node["status"] for node in view["nodes"]}.get("node-2")
                statuses.append(entry)
                if entry is None and "inactive" in statuses:
                    break
                await asyncio.sleep(0.1)
        assert statuses[0] == "active" and "inactive" in statuses and statuses[-1] is None


async def test_graceful_stop_removes_the_record_at_once(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    stack, nodes = await start_cluster(redis_url, count=2)
    async with stack, aiohttp.ClientSession() as session:
        async with asyncio.timeout(5):
            while (await get_cluster(session, nodes[0]))["total_nodes"] != 2:
                await asyncio.sleep(0.1)
        await nodes[1].stop(grace=1)
        assert await redis_client.exists(f"secauto:nodes:{CLUSTER}:node-2") == 0
        async with asyncio.timeout(2):
            while (await get_cluster(session, nodes[0]))["total_nodes"] != 1:
                await asyncio.sleep(0.05)


async def test_expired_lease_is_requeued_by_the_leader(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    stack, nodes = await start_cluster(redis_url, count=2, cluster={"lease_timeout": 1})
    async with stack, aiohttp.ClientSession() as session:
        job_id = await submit(session, nodes[0], {"playbook": sleepy(2.5)})
        owner = (await wait_running(redis_client, job_id))["assigned_to"]
        victim = next(node for node in nodes if node.settings.node_id == owner)
        # The owner stops renewing (as if paused): its lease runs out and the leader requeues the job.
        for task in victim.system.get("executor")._cell.tasks:  # type: ignore[attr-defined]
            if task.get_name().endswith(":lease-renewal"):
                task.cancel()
        await victim.system.get("dispatcher").ask(StopClaiming())
        [job] = await wait_finished(redis_client, [job_id], timeout=20)
        assert job["status"] == "completed"
        assert job["retry_count"] == 1 and job["attempt"] == 2 and job["assigned_to"] != owner
        assert [(a["node"], a["outcome"]) for a in job["attempts"]] == [(owner, "node_lost"),
                                                                         (job["assigned_to"], "completed")]


async def test_idle_nodes_wake_on_pubsub_not_polling(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    # The slow poll is 60 s: a job that starts within a second was picked up through pub/sub.
    stack, nodes = await start_cluster(redis_url, count=2, cluster={"poll_interval": 60})
    async with stack, aiohttp.ClientSession() as session:
        await asyncio.sleep(0.5)  # past the start-up claim
        for _ in range(3):
            job_id = await submit(session, nodes[0], {"playbook": QUICK, "context": {"n": 1}})
            [job] = await wait_finished(redis_client, [job_id], timeout=1.0)
            assert job["status"] == "completed"


async def test_a_redis_demoted_to_replica_is_waited_out(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    # Redis turns read-only under a busy node (REPLICAOF by an operator, a failover without Sentinel):
    # every actor that writes meets READONLY. They retry instead of crashing (restarts, then a fatal stop
    # of the node), and the job running meanwhile completes once Redis takes writes again.
    crashes: list[str] = []
    sink = logger.add(lambda message: crashes.append(str(message)), level="WARNING",
                      filter=lambda record: "restarting actor" in record["message"])
    stack, nodes = await start_cluster(redis_url, count=1)
    try:
        async with stack, aiohttp.ClientSession() as session:
            job_id = await submit(session, nodes[0], {"playbook": sleepy(1.5)})
            await wait_running(redis_client, job_id)
            await redis_client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
            try:
                # Past the heartbeat, the lease renewal, the job's end and the poll: every writer met it.
                await asyncio.sleep(4)
                async with session.post(f"{nodes[0].url}/cluster/jobs", json={"playbook": QUICK},
                                        headers=auth()) as response:
                    assert response.status == 503
            finally:
                await redis_client.execute_command("REPLICAOF", "NO", "ONE")
            [job] = await wait_finished(redis_client, [job_id], timeout=30)
            assert job["status"] == "completed"
            assert nodes[0].system.fatal is None
            assert crashes == []
    finally:
        logger.remove(sink)
