"""The gauges of ``GET /metrics`` that need the store: pending and ready jobs, ``secauto_redis_up``,
and what a scrape answers while the store is unreachable.

The nodes run on fakeredis; its server's ``connected`` flag emulates an outage (every command raises
redis-py's ConnectionError), so no redis-server is needed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import fakeredis
import pytest
from prometheus_client.parser import text_string_to_metric_families

from secauto.models import Job, make_event, new_job_id, utc_now
from secauto.node import Node
from secauto.store.connection import open_embedded
from secauto.store.jobs import JobQueue
from secauto.store.keys import Keys
from tests.support.nodes import VIEWER_KEY, auth, node_settings

CLUSTER_GAUGES = ("secauto_queue_size", "secauto_queue_ready", "secauto_dlq_size", "secauto_active_nodes")


@pytest.fixture
async def store() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def node(store: fakeredis.FakeServer) -> AsyncIterator[Node]:
    redis = fakeredis.FakeAsyncRedis(server=store, lua_modules=set())
    node = Node(node_settings("redis-up"), redis=redis)
    await node.start()
    try:
        yield node
    finally:
        store.connected = True
        await node.stop(grace=0)
        await redis.aclose()


async def scrape(node: Node) -> tuple[int, dict[str, float]]:
    """(HTTP status, the value of every unlabelled sample and of secauto_node_info)."""
    async with aiohttp.ClientSession(base_url=node.url) as http, \
            http.get("/metrics", headers=auth(VIEWER_KEY)) as response:
        text = await response.text()
    samples = {sample.name: sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if not sample.labels or sample.name == "secauto_node_info"}
    return response.status, samples


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)
    assert predicate(), what


def redis_up(node: Node) -> float | None:
    return node.metrics.registry.get_sample_value("secauto_redis_up")


async def test_scrape_reports_redis_down_and_unknown_cluster_gauges_during_an_outage(
        node: Node, store: fakeredis.FakeServer) -> None:
    status, samples = await scrape(node)
    assert status == 200 and samples["secauto_redis_up"] == 1
    assert samples["secauto_queue_size"] == 0 and samples["secauto_active_nodes"] == 1

    store.connected = False
    status, samples = await scrape(node)
    assert status == 200  # not 503: Prometheus must see the node and its secauto_redis_up 0
    assert samples["secauto_redis_up"] == 0
    for name in CLUSTER_GAUGES:
        assert math.isnan(samples[name]), name  # unknown, not the last value read
    assert samples["secauto_jobs_running"] == 0 and samples["secauto_node_info"] == 1

    store.connected = True
    status, samples = await scrape(node)
    assert status == 200 and samples["secauto_redis_up"] == 1
    assert samples["secauto_queue_size"] == 0 and samples["secauto_dlq_size"] == 0


async def test_a_scrape_that_cannot_read_the_cluster_in_time_still_answers_and_leaves_redis_up_alone(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    await wait_for(lambda: redis_up(node) == 1, "the first heartbeat write to set redis_up 1")
    # As if the discovery actor were stuck on a hung Redis: the read runs out of time.
    monkeypatch.setattr("secauto.api.metrics.CLUSTER_READ_TIMEOUT_S", 0)
    status, samples = await scrape(node)
    assert status == 200
    for name in CLUSTER_GAUGES:
        assert math.isnan(samples[name]), name
    assert samples["secauto_redis_up"] == 1  # slow is not unreachable: the heartbeat decides


async def test_heartbeat_and_health_check_set_redis_up_without_any_scrape(
        node: Node, store: fakeredis.FakeServer) -> None:
    await wait_for(lambda: redis_up(node) == 1, "the first heartbeat write to set redis_up 1")

    store.connected = False  # the next heartbeat write (every 0.5 s) fails
    await wait_for(lambda: redis_up(node) == 0, "a failed heartbeat write to set redis_up 0")
    store.connected = True
    await wait_for(lambda: redis_up(node) == 1, "a heartbeat write to set redis_up 1 again")

    async with aiohttp.ClientSession(base_url=node.url) as http:
        store.connected = False
        async with http.get("/health") as response:
            assert response.status == 503
        assert redis_up(node) == 0  # the health check's ping, not a heartbeat
        store.connected = True
        async with http.get("/health") as response:
            assert response.status == 200
        assert redis_up(node) == 1


async def test_redis_up_is_zero_until_redis_was_reached() -> None:
    store = fakeredis.FakeServer()
    store.connected = False
    redis = fakeredis.FakeAsyncRedis(server=store, lua_modules=set())
    node = Node(node_settings("never-reached"), redis=redis)
    try:
        await node.start()
        await asyncio.sleep(0.6)  # past the first heartbeat write, which failed
        assert redis_up(node) == 0
        status, samples = await scrape(node)
        assert status == 200 and samples["secauto_redis_up"] == 0
        assert math.isnan(samples["secauto_queue_size"])
    finally:
        await node.stop(grace=0)
        await redis.aclose()


# ---------------------------------------------------------------------------------------------------
# pending and ready jobs
# ---------------------------------------------------------------------------------------------------


async def test_queue_sizes_count_delayed_jobs_as_ready_only_once_due() -> None:
    redis = open_embedded()
    queue = JobQueue(redis, Keys("sizes"))
    try:
        jobs = [Job(id=new_job_id(), submitted_at=utc_now(), submitted_to="n0",
                    playbook=[{"action": "log", "message": "x"}]) for _ in range(3)]
        events = [make_event("job.submitted", job_id=job.id, status="pending") for job in jobs]
        before_ms = int(time.time() * 1000)
        # now, in a minute, in an hour
        await queue.submit(jobs, events, delays_ms=[0, 60_000, 3_600_000])
        after_ms = int(time.time() * 1000)
        assert await queue.queue_sizes(now_ms=after_ms) == (3, 1)
        assert await queue.queue_sizes(now_ms=after_ms + 60_000) == (3, 2)  # due: ready before any claim
        assert await queue.queue_sizes(now_ms=before_ms + 59_000) == (3, 1)
        assert await queue.queue_sizes(now_ms=after_ms + 3_600_000) == (3, 3)
        assert await queue.queue_size() == 3
    finally:
        await redis.aclose()


async def test_scrape_tells_jobs_ready_to_start_from_jobs_held_back() -> None:
    redis = open_embedded()
    node = Node(node_settings("ready", cluster={"max_concurrent_jobs": 1}), redis=redis)
    await node.start()
    try:
        async with aiohttp.ClientSession(base_url=node.url) as http:
            bodies = [{"playbook": [{"action": "sleep", "seconds": 30}]},   # takes the only slot
                      {"playbook": [{"action": "log", "message": "x"}]},    # waits for the slot: ready
                      {"playbook": [{"action": "log", "message": "x"}], "delay": 3600}]  # held back
            for body in bodies:
                async with http.post("/cluster/jobs", json=body, headers=auth()) as response:
                    assert response.status == 200, await response.text()
        await wait_for(lambda: node.metrics.registry.get_sample_value("secauto_jobs_running") == 1,
                       "the sleep job to run")
        status, samples = await scrape(node)
        assert status == 200
        assert samples["secauto_queue_size"] == 2 and samples["secauto_queue_ready"] == 1
    finally:
        await node.stop(grace=0)
        await redis.aclose()
