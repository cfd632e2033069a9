"""The event channel as a public interface: plain redis-py subscribers and Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import msgspec
import redis.asyncio

from secauto.node import Node
from tests.support.nodes import auth, node_settings, running_node

CLUSTER = "events"
EVENT_KEYS = {"type", "version", "timestamp", "job_id", "node_id", "status", "attempt", "priority", "error",
              "reason"}


async def two_nodes(redis_url: str) -> tuple[AsyncExitStack, list[Node]]:
    stack = AsyncExitStack()
    nodes = [await stack.enter_async_context(running_node(node_settings(
        f"node-{i}", redis_url=redis_url, cluster_name=CLUSTER))) for i in (1, 2)]
    return stack, nodes


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event type, data) pairs from an SSE stream; comments are skipped."""
    kind, data = "", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            yield kind, json.loads(data)
            kind, data = "", ""


async def test_outside_subscriber_sees_the_documented_schema(redis_url: str, redis_client: redis.asyncio.Redis) -> None:
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(f"secauto:events:{CLUSTER}")
    stack, nodes = await two_nodes(redis_url)
    try:
        async with stack, aiohttp.ClientSession() as session:
            async with session.post(f"{nodes[0].url}/cluster/jobs", headers=auth(),
                                    json={"playbook": [{"action": "log", "message": "x"}]}) as response:
                job_id = (await response.json())["job_id"]
            seen: list[dict[str, Any]] = []
            async with asyncio.timeout(10):
                while not any(e.get("job_id") == job_id and e["type"] == "job.completed" for e in seen):
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        raw = message["data"]
                        assert raw.startswith(b'{"type":"')  # routable on a byte prefix
                        seen.append(msgspec.json.decode(raw))
        for event in seen:
            assert set(event) <= EVENT_KEYS and event["version"] == 1 and event["timestamp"].endswith("Z")
        kinds = [e["type"] for e in seen if e.get("job_id") == job_id]
        assert kinds == ["job.submitted", "job.started", "job.completed"]
        assert {"node.joined", "leader.changed"} <= {e["type"] for e in seen}
    finally:
        await pubsub.aclose()


async def test_sse_client_sees_a_job_run_on_another_node(redis_url: str) -> None:
    stack, nodes = await two_nodes(redis_url)
    async with stack, aiohttp.ClientSession() as session:
        # Only node-2 may claim: the job surely runs on the other node than the stream's.
        nodes[0].system.get("dispatcher")._cell.actor.claiming = False  # type: ignore[attr-defined]
        async with session.get(f"{nodes[0].url}/cluster/events?type=job.", headers=auth()) as stream:
            assert stream.status == 200 and stream.headers["Content-Type"] == "text/event-stream"
            events = sse_events(stream)
            async with session.post(f"{nodes[0].url}/cluster/jobs", headers=auth(),
                                    json={"playbook": [{"action": "log", "message": "x"}]}) as response:
                job_id = (await response.json())["job_id"]
            got = []
            async with asyncio.timeout(10):
                async for kind, data in events:
                    if data["job_id"] == job_id:
                        got.append((kind, data["status"], data.get("node_id")))
                    if kind == "job.completed":
                        break
        assert [kind for kind, _, _ in got] == ["job.submitted", "job.started", "job.completed"]
        assert got[1][2] == "node-2" and got[2][1] == "completed"


async def test_sse_filters_by_job_id(redis_url: str) -> None:
    stack, nodes = await two_nodes(redis_url)
    async with stack, aiohttp.ClientSession() as session:
        ids = []
        for _ in range(2):
            async with session.post(f"{nodes[1].url}/cluster/jobs", headers=auth(),
                                    json={"playbook": [{"action": "sleep", "seconds": 0.3}]}) as response:
                ids.append((await response.json())["job_id"])
        async with session.get(f"{nodes[0].url}/cluster/events?job_id={ids[1]}", headers=auth()) as stream:
            async with asyncio.timeout(10):
                async for kind, data in sse_events(stream):
                    assert data["job_id"] == ids[1]
                    if kind == "job.completed":
                        break
        async with session.get(f"{nodes[0].url}/cluster/events?type=Bad!", headers=auth()) as response:
            assert response.status == 400
        async with session.get(f"{nodes[0].url}/cluster/events") as response:
            assert response.status == 401


async def test_sse_survives_a_redis_restart(redis_process_factory: Any) -> None:
    server = redis_process_factory(appendonly=True, appendfsync="always")
    settings = node_settings("node-1", redis_url=server.url, cluster_name=CLUSTER)
    async with running_node(settings) as node, aiohttp.ClientSession() as session, \
            session.get(f"{node.url}/cluster/events?type=job.completed", headers=auth()) as stream:
        events = sse_events(stream)
        server.restart()
        seen: set[str] = set()

        async def collect() -> None:
            async for _, data in events:
                seen.add(data["job_id"])

        collector = asyncio.create_task(collect())
        try:
            # The stream stays open; once its subscription is back it delivers new completions.
            # Submissions get 503 until the node's connections are back.
            async with asyncio.timeout(30):
                while True:
                    async with session.post(f"{node.url}/cluster/jobs", headers=auth(),
                                            json={"playbook": [{"action": "log", "message": "x"}]}) as response:
                        if response.status == 200:
                            job_id = (await response.json())["job_id"]
                        else:
                            assert response.status == 503 and response.headers["Retry-After"]
                            job_id = None
                    await asyncio.sleep(0.5)
                    if job_id in seen:
                        break
        finally:
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
