"""The Redis job protocol (submit, claim, renew, complete, reap), on a real redis-server and on the
embedded store: the same Lua scripts must behave the same on both."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import redis.asyncio

from secauto.models import Job, job_decoder, json_encoder, make_event, new_job_id, utc_now
from secauto.store.jobs import JobQueue, RequeueResult, RetentionPolicy
from secauto.store.keys import Keys
from secauto.store.registry import NodeRegistry

CLUSTER = "proto"


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
    assert not await queue.finish(done, "n2", "completed", event)
    assert not await queue.finish(msgspec.structs.replace(done, attempt=2), "n1", "completed", event)
    assert (await queue.get(claimed.id)).status == "running"  # type: ignore[union-attr]
    assert await queue.finish(done, "n1", "completed", event)
    stored = await queue.get(claimed.id)
    assert stored is not None and stored.status == "completed" and stored.results == [{"ok": True}]
    assert 0 < await client.ttl(f"secauto:job:{claimed.id}") <= 86400
    assert await queue.running_size() == 0
    # A second completion (duplicate delivery) is refused: the job is no longer running.
    assert not await queue.finish(done, "n1", "completed", event)


async def test_renew_reports_jobs_the_node_lost(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, Keys(CLUSTER))
    await submit(queue, job(), job())
    a, b = await queue.claim("n1", 2, 30_000)
    lost = await queue.renew("n1", {a.id: a.attempt, b.id: b.attempt + 1, "job-missing": 1}, 30_000)
    assert sorted(lost) == sorted([b.id, "job-missing"])


async def test_recovery_requeues_expired_leases_only_for_the_leader(client: redis.asyncio.Redis) -> None:
    keys = Keys(CLUSTER)
    queue = JobQueue(client, keys, RetentionPolicy(backoff_base_ms=1, backoff_cap_ms=1, avoid_ms=0, poison_limit=5))
    registry = NodeRegistry(client, keys)
    short, live = job(max_retries=1), job()
    await submit(queue, short)
    [first] = await queue.claim("dead-node", 1, 50)  # lease of 50 ms
    await submit(queue, live)
    [running] = await queue.claim("live-node", 1, 60_000)
    await asyncio.sleep(0.1)
    assert await queue.recover(leader_token="nobody:token", mode="expired", cause="lease expired") is None
    assert await registry.hold_leadership("n1:tok", 5000, make_event("leader.changed", node_id="n1")) == 1
    assert await registry.leader() == "n1"
    recovery = await queue.recover(leader_token="n1:tok", mode="expired", cause="lease expired")
    assert recovery is not None and (recovery.requeued, recovery.failed) == (1, 0)
    requeued = await queue.get(first.id)
    assert requeued is not None
    assert (requeued.status, requeued.retry_count, requeued.assigned_to) == ("pending", 1, None)
    assert [(a.attempt, a.node, a.outcome) for a in requeued.attempts] == [(1, "dead-node", "node_lost")]
    assert (await queue.get(running.id)).status == "running"  # type: ignore[union-attr]
    # The zombie attempt cannot write after the takeover.
    stale = msgspec.structs.replace(first, status="completed")
    assert not await queue.finish(stale, "dead-node", "completed", make_event("job.completed"))
    # Second attempt also dies: retries (1) used up -> failed and dead-lettered.
    await asyncio.sleep(0.01)
    [second] = await queue.claim("dead-node", 1, 50)
    assert second.attempt == 2
    await asyncio.sleep(0.1)
    recovery = await queue.recover(leader_token="n1:tok", mode="expired", cause="lease expired")
    assert recovery is not None and (recovery.requeued, recovery.failed) == (0, 1)
    failed = await queue.get(first.id)
    assert failed is not None and failed.status == "failed" and failed.reason == "node_lost"
    assert len(failed.attempts) == 2
    assert await client.zscore(keys.dlq, first.id) is not None


async def test_jobs_of_a_lost_node_are_recovered_without_waiting_for_the_lease(client: redis.asyncio.Redis) -> None:
    keys = Keys(CLUSTER)
    queue = JobQueue(client, keys, RetentionPolicy(backoff_base_ms=1, backoff_cap_ms=1, poison_limit=2))
    await submit(queue, job(), job())
    a, b = await queue.claim("gone", 1, 600_000) + await queue.claim("alive", 1, 600_000)
    await client.set(keys.node("alive"), b"{}")
    # "alive" still has a record, so naming it changes nothing; "gone" has none.
    recovery = await queue.recover(leader_token="", mode="nodes", cause="node lost", nodes=["gone", "alive"])
    assert recovery is not None and recovery.requeued == 1
    assert (await queue.get(a.id)).status == "pending"  # type: ignore[union-attr]
    assert (await queue.get(b.id)).status == "running"  # type: ignore[union-attr]


async def test_poison_job_is_quarantined_after_two_lost_nodes(client: redis.asyncio.Redis) -> None:
    keys = Keys(CLUSTER)
    queue = JobQueue(client, keys, RetentionPolicy(backoff_base_ms=1, backoff_cap_ms=1, avoid_ms=0, poison_limit=2))
    poison = job(max_retries=10)
    await submit(queue, poison)
    for node in ("n1", "n2"):
        await asyncio.sleep(0.01)
        assert len(await queue.claim(node, 1, 600_000)) == 1
        await queue.recover(leader_token="", mode="nodes", cause="node restarted", nodes=[node], check_records=False)
    stored = await queue.get(poison.id)
    assert stored is not None and stored.status == "failed" and stored.reason == "poison"
    assert stored.node_losses == 2 and "quarantined" in (stored.error or "")
    assert await client.zscore(keys.dlq, poison.id) is not None


async def test_retry_goes_to_another_node_first(client: redis.asyncio.Redis) -> None:
    keys = Keys(CLUSTER)
    queue = JobQueue(client, keys, RetentionPolicy(avoid_ms=60_000))
    await submit(queue, job())
    [claimed] = await queue.claim("n1", 1, 60_000)
    retry = msgspec.structs.replace(claimed, status="pending", assigned_to=None, retry_count=1)
    assert await queue.finish(retry, "n1", "retry", make_event("job.retrying"), backoff_ms=0)
    # Alone, n1 takes its own retry at once; with another active node it leaves it to that one.
    await client.hset(keys.capacity, "n2", 10)
    await client.set(keys.node("n2"), b"{}")
    assert await queue.claim("n1", 1, 60_000) == []  # n1 is avoided while others may take it
    [again] = await queue.claim("n2", 1, 60_000)
    assert (again.id, again.attempt, again.retry_count) == (claimed.id, 2, 1)


async def test_retry_backoff_parks_the_job_until_due(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, Keys(CLUSTER), RetentionPolicy(avoid_ms=0))
    await submit(queue, job())
    [claimed] = await queue.claim("n1", 1, 60_000)
    retry = msgspec.structs.replace(claimed, status="pending", assigned_to=None, retry_count=1)
    assert await queue.finish(retry, "n1", "retry", make_event("job.retrying"), backoff_ms=300)
    assert await queue.queue_size() == 1
    assert await queue.claim("n2", 1, 60_000) == []
    await asyncio.sleep(0.35)
    assert len(await queue.claim("n2", 1, 60_000)) == 1


async def test_handback_requeues_at_the_front_without_using_a_retry(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, Keys(CLUSTER))
    first, second = job(), job()
    await submit(queue, first)
    [claimed] = await queue.claim("n1", 1, 60_000)
    await submit(queue, second)
    assert await queue.handback("n1", {claimed.id: claimed.attempt, "job-unknown": 1}) == 1
    [again] = await queue.claim("n2", 1, 60_000)
    assert again.id == first.id and again.retry_count == 0 and again.attempt == 2
    assert [a.outcome for a in again.attempts] == ["handed_back"]


async def test_cancel_pending_and_running(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, Keys(CLUSTER))
    pending, running = job(), job()
    await submit(queue, running)
    [claimed] = await queue.claim("n1", 1, 60_000)
    await submit(queue, pending)
    assert await queue.cancel(pending.id) == "pending"
    assert await queue.cancel(claimed.id) == "running"
    assert await queue.cancel(claimed.id) == "cancelled"
    assert await queue.cancel("job-unknown") is None
    assert await queue.queue_size() == 0 and await queue.running_size() == 0
    stored = await queue.get(claimed.id)
    assert stored is not None and stored.status == "cancelled" and stored.attempts[-1].outcome == "cancelled"
    done = msgspec.structs.replace(claimed, status="completed")
    assert not await queue.finish(done, "n1", "completed", make_event("job.completed"))


async def test_dead_letter_requeue_and_forget(client: redis.asyncio.Redis) -> None:
    keys = Keys(CLUSTER)
    queue = JobQueue(client, keys, RetentionPolicy(dlq_max=2))
    jobs = [job() for _ in range(3)]
    await submit(queue, *jobs)
    for claimed in await queue.claim("n1", 3, 60_000):
        dead = msgspec.structs.replace(claimed, status="failed", reason="playbook_error")
        assert await queue.finish(dead, "n1", "dead", make_event("job.failed"))
    size, records = await queue.dead_letters()
    # Capped: one entry (the oldest; ties within a millisecond go by id) and its record are gone.
    kept = [job_decoder.decode(record).id for record in records]
    [dropped] = [j.id for j in jobs if j.id not in kept]
    assert size == 2 and len(kept) == 2 and await queue.get(dropped) is None
    assert await queue.requeue(kept[0]) == RequeueResult(before="failed", after="pending")
    assert await queue.requeue(kept[0]) == RequeueResult(before="pending", after=None)
    assert (await queue.dead_letters())[0] == 1
    assert await queue.forget(kept[1])
    assert not await queue.forget(kept[1])
    assert await queue.get(kept[1]) is None


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
        keys = queue.keys
        await queue._scripts.submit(
            keys=[keys.queue, keys.sequence, keys.delayed, keys.capacity, keys.round_robin, keys.job("x")],
            args=[keys.channel, keys.node_prefix, "least_loaded", "x", bad, b"{}", 0])
    assert await client.get(queue.keys.job("x")) is None


async def test_a_lone_node_takes_its_own_retry_at_once(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, Keys(CLUSTER), RetentionPolicy(avoid_ms=60_000))
    await submit(queue, job())
    [claimed] = await queue.claim("n1", 1, 60_000)
    retry = msgspec.structs.replace(claimed, status="pending", assigned_to=None, retry_count=1)
    assert await queue.finish(retry, "n1", "retry", make_event("job.retrying"), backoff_ms=0)
    [again] = await queue.claim("n1", 1, 60_000)
    assert again.attempt == 2


async def test_a_recovered_job_goes_to_the_front_of_its_band(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, Keys(CLUSTER), RetentionPolicy(backoff_base_ms=1, backoff_cap_ms=1, avoid_ms=0))
    first = job()
    await submit(queue, first)
    await queue.claim("gone", 1, 60_000)
    await submit(queue, job(), job())
    await queue.recover(leader_token="", mode="nodes", cause="node lost", nodes=["gone"], check_records=False)
    await asyncio.sleep(0.01)
    [head] = await queue.claim("n2", 1, 60_000)
    assert head.id == first.id and head.retry_count == 1


async def test_affinity_jobs_are_claimed(client: redis.asyncio.Redis) -> None:
    # The embedded store's Lua has no redis.sha1hex (found by schemathesis): rendezvous falls back.
    queue = JobQueue(client, Keys(CLUSTER))
    sticky = job(affinity="customer-1")
    await submit(queue, sticky)
    assert [claimed.id for claimed in await queue.claim("solo", 1, 30_000)] == [sticky.id]


async def test_the_packed_submit_and_claim_survive_a_flushed_script_cache_and_report_script_errors(
        client: redis.asyncio.Redis) -> None:
    """submit and claim go out as one pre-packed EVALSHA (secauto.store.scripts.run_script): after the
    script cache is flushed (a Redis restart) they load the script and run it once; a script's own
    error is raised as with redis-py's Script."""
    from redis.exceptions import ResponseError

    from secauto.store.scripts import run_script

    queue = JobQueue(client, Keys(CLUSTER))
    first = job()
    assert await queue.submit([first], [make_event("job.submitted", job_id=first.id)]) == 1
    await client.script_flush()
    second = job()
    assert await queue.submit([second], [make_event("job.submitted", job_id=second.id)]) == 1
    claimed = await queue.claim("n1", 5, 30_000)
    assert sorted(j.id for j in claimed) == sorted([first.id, second.id])  # each stored once
    failing = client.register_script("return redis.error_reply('refused here')")
    with pytest.raises(ResponseError, match="refused here"):
        await run_script(client, failing, [], [])
    assert await run_script(client, client.register_script("return ARGV[1] .. KEYS[1]"), ["k"], [b"v", 7]) == b"vk"
