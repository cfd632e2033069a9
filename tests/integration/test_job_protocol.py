"""The Redis job protocol (submit, claim, renew, complete, reap), on a real redis-server and on the
embedded store: the same Lua scripts must behave the same on both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
import redis.asyncio

from secauto.models import Job, json_encoder, make_event, new_job_id, utc_now
from secauto.store.connection import open_embedded
from secauto.store.jobs import JobQueue
from secauto.store.keys import Keys
from secauto.store.registry import NodeRegistry

CLUSTER = "proto"


@pytest.fixture(params=["redis", "embedded"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[redis.asyncio.Redis]:
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        conn = redis.asyncio.Redis.from_url(server.url)
        await conn.flushall()
    else:
        conn = open_embedded()
    try:
        yield conn
    finally:
        await conn.aclose()


def job(priority: int = 0, **fields: object) -> Job:
    return Job(id=new_job_id(), priority=priority, submitted_at=utc_now(), submitted_to="n0",
               playbook=[{"action": "log", "message": "x"}], context={"empty": [], "obj": {}, "big": 2**60},
               **fields)  # type: ignore[arg-type]


async def submit(queue: JobQueue, *jobs: Job) -> int:
    events = [make_event("job.submitted", job_id=j.id, status="pending") for j in jobs]
    return await queue.submit(list(jobs), events)


async def test_queue_orders_by_priority_then_submission(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, Keys(CLUSTER))
    low1, high, low2, mid = job(0), job(5), job(0), job(2)
    assert await submit(queue, low1, high, low2) == 3
    assert await submit(queue, mid) == 1
    assert await client.zcard(f"secauto:jobs:{CLUSTER}") == 4
    claimed = await queue.claim("n1", 10, 30_000)
    assert [j.id for j in claimed] == [high.id, mid.id, low1.id, low2.id]
    assert await queue.queue_size() == 0


async def test_claim_marks_running_and_keeps_body_byte_for_byte(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, Keys(CLUSTER))
    original = job(1)
    await submit(queue, original)
    before = await client.get(f"secauto:job:{original.id}")
    [claimed] = await queue.claim("node-a", 1, 30_000)
    assert (claimed.status, claimed.attempt, claimed.assigned_to) == ("running", 1, "node-a")
    assert claimed.started_at is not None
    # Lua rewrote only the header: empty lists/objects and big ints survive (cjson would mangle them).
    assert claimed.context == {"empty": [], "obj": {}, "big": 2**60}
    after = await client.get(f"secauto:job:{original.id}")
    assert before is not None and after is not None
    assert after.split(b'"submitted_at"', 1)[1] == before.split(b'"submitted_at"', 1)[1]
    assert await client.zscore(f"secauto:running:{CLUSTER}", original.id) is not None


async def test_submit_is_idempotent_per_job_id(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, Keys(CLUSTER))
    one = job()
    assert await submit(queue, one) == 1
    assert await submit(queue, one) == 0
    assert await queue.queue_size() == 1


async def test_claim_never_takes_more_than_asked(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, Keys(CLUSTER))
    await submit(queue, *[job() for _ in range(5)])
    assert len(await queue.claim("n", 2, 30_000)) == 2
    assert len(await queue.claim("n", 0, 30_000)) == 0
    assert await queue.queue_size() == 3


async def test_concurrent_claims_never_share_a_job(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, Keys(CLUSTER))
    jobs = [job() for _ in range(200)]
    await submit(queue, *jobs)
    results = await asyncio.gather(*(queue.claim(f"n{i % 4}", 3, 30_000) for i in range(100)))
    ids = [j.id for batch in results for j in batch]
    assert len(ids) == len(set(ids)) == 200


async def test_complete_is_fenced_by_attempt_and_node(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, Keys(CLUSTER))
    await submit(queue, job())
    [claimed] = await queue.claim("n1", 1, 30_000)
    done = msgspec.structs.replace(claimed, status="completed", completed_at=utc_now(), results=[{"ok": True}])
    event = make_event("job.completed", job_id=claimed.id)
    # Wrong node, then wrong attempt: refused, nothing written.
    assert not await queue.complete(done, "n2", 60, event)
    assert not await queue.complete(msgspec.structs.replace(done, attempt=2), "n1", 60, event)
    assert (await queue.get(claimed.id)).status == "running"  # type: ignore[union-attr]
    assert await queue.complete(done, "n1", 60, event)
    stored = await queue.get(claimed.id)
    assert stored is not None and stored.status == "completed" and stored.results == [{"ok": True}]
    assert 0 < await client.ttl(f"secauto:job:{claimed.id}") <= 60
    assert await queue.running_size() == 0
    # A second completion (duplicate delivery) is refused: the job is no longer running.
    assert not await queue.complete(done, "n1", 60, event)


async def test_renew_reports_jobs_the_node_lost(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, Keys(CLUSTER))
    await submit(queue, job(), job())
    a, b = await queue.claim("n1", 2, 30_000)
    lost = await queue.renew("n1", {a.id: a.attempt, b.id: b.attempt + 1, "job-missing": 1}, 30_000)
    assert sorted(lost) == sorted([b.id, "job-missing"])


async def test_reap_requeues_expired_leases_only_for_the_leader(client: redis.asyncio.Redis) -> None:
    keys = Keys(CLUSTER)
    queue, registry = JobQueue(client, keys), NodeRegistry(client, keys)
    short, live = job(max_retries=1), job()
    await submit(queue, short)
    [first] = await queue.claim("dead-node", 1, 50)  # lease of 50 ms
    await submit(queue, live)
    [running] = await queue.claim("live-node", 1, 60_000)
    await asyncio.sleep(0.1)
    assert await queue.reap("nobody:token", retention_s=60) is None  # not the leader: refused
    assert await registry.hold_leadership("n1:tok", 5000, make_event("leader.changed", node_id="n1")) == 1
    assert await registry.leader() == "n1"
    assert await queue.reap("n1:tok", retention_s=60) == (1, 0)
    requeued = await queue.get(first.id)
    assert requeued is not None
    assert (requeued.status, requeued.retry_count, requeued.assigned_to) == ("pending", 1, None)
    assert (await queue.get(running.id)).status == "running"  # type: ignore[union-attr]
    # The zombie attempt cannot write after the takeover.
    stale = msgspec.structs.replace(first, status="completed")
    assert not await queue.complete(stale, "dead-node", 60, make_event("job.completed"))
    # Second attempt also dies: retries (1) exhausted -> failed and dead-lettered.
    [second] = await queue.claim("dead-node", 1, 50)
    assert second.attempt == 2
    await asyncio.sleep(0.1)
    assert await queue.reap("n1:tok", retention_s=60) == (0, 1)
    failed = await queue.get(first.id)
    assert failed is not None and failed.status == "failed" and "retries exhausted" in (failed.error or "")
    assert await client.zscore(keys.dlq, first.id) is not None


async def test_leader_lease_is_exclusive_and_released_only_by_holder(client: redis.asyncio.Redis) -> None:
    registry = NodeRegistry(client, Keys(CLUSTER))
    event = make_event("leader.changed")
    assert await registry.hold_leadership("a:1", 5000, event) == 1
    assert await registry.hold_leadership("b:1", 5000, event) == 0
    assert await registry.hold_leadership("a:1", 5000, event) == 2
    assert not await registry.release_leadership("a:2")  # same node id, other incarnation
    assert await registry.release_leadership("a:1")
    assert await registry.hold_leadership("b:1", 5000, event) == 1


async def test_record_header_rejects_foreign_json(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, Keys(CLUSTER))
    bad = json_encoder.encode({"status": "pending", "id": "x"})
    with pytest.raises(redis.exceptions.ResponseError):
        await queue._scripts.submit(keys=[queue.keys.queue, queue.keys.sequence, queue.keys.job("x")],
                                    args=[queue.keys.channel, "x", bad, b"{}"])
    assert await client.get(queue.keys.job("x")) is None
