"""Job dependencies at the store level (submit, finish, reap, cancel, requeue, settle scripts), on a real
redis-server and on the embedded store. Scripts are atomic, so these tests interleave a dependency's end
and its dependent's submission deterministically: before, after, and racing on two connections."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
import redis.asyncio
from msgspec import UNSET

from secauto.dependencies import MAX_DEPENDENTS
from secauto.models import Job, json_encoder, make_event, new_job_id, utc_now
from secauto.store.jobs import (
    DependencyRefused,
    FinishOutcome,
    JobQueue,
    Quota,
    QuotaExceeded,
    RequeueResult,
    RetentionPolicy,
)
from secauto.store.keys import Keys
from secauto.store.registry import NodeRegistry

CLUSTER = "deps"
KEYS = Keys(CLUSTER)


def job(*parents: Job | str, policy: str = "cancel", max_retries: int = 0, **fields: Any) -> Job:
    ids = [parent if isinstance(parent, str) else parent.id for parent in parents]
    return Job(id=new_job_id(), submitted_at=utc_now(), submitted_to="n0", max_retries=max_retries,
               playbook=[{"action": "log", "message": "x"}], context={"empty": []}, depends_on=ids or UNSET,
               parent_list=",".join(ids) or UNSET,
               on_dependency_failure=policy if ids else UNSET,  # type: ignore[arg-type]
               **fields)


async def submit(queue: JobQueue, *jobs: Job) -> int:
    return await queue.submit(list(jobs), [make_event("job.submitted", job_id=j.id, status="pending") for j in jobs])


async def status(queue: JobQueue, item: Job) -> str | None:
    stored = await queue.get(item.id)
    return None if stored is None else stored.status


async def statuses(queue: JobQueue, *items: Job) -> list[str | None]:
    return [await status(queue, item) for item in items]


async def run(queue: JobQueue, item: Job, outcome: FinishOutcome = "completed", node: str = "n1",
              context: dict[str, Any] | None = None) -> None:
    """Claim ``item`` (it must be the only claimable job) and end its attempt with ``outcome``."""
    [claimed] = await queue.claim(node, 1, 60_000)
    assert claimed.id == item.id
    await end(queue, claimed, outcome, node, context)


async def end(queue: JobQueue, claimed: Job, outcome: FinishOutcome, node: str = "n1",
              context: dict[str, Any] | None = None) -> None:
    if outcome == "completed":
        final = msgspec.structs.replace(claimed, status="completed", completed_at=utc_now(),
                                        context=context if context is not None else claimed.context)
    elif outcome == "retry":
        final = msgspec.structs.replace(claimed, status="pending", assigned_to=None,
                                        retry_count=claimed.retry_count + 1)
    else:
        final = msgspec.structs.replace(claimed, status="failed", completed_at=utc_now(), reason="playbook_error")
    assert await queue.finish(final, node, outcome, make_event("job.ended", job_id=claimed.id))


async def subscribe(pubsub: Any, *channels: str) -> None:
    """Subscribe and wait until the server confirmed it (so nothing published afterwards is missed)."""
    await pubsub.subscribe(*channels)
    confirmed = 0
    async with asyncio.timeout(5):
        while confirmed < len(channels):
            message = await pubsub.get_message(timeout=1)
            if message is not None and message["type"] == "subscribe":
                confirmed += 1


async def drain(pubsub: Any, *, quiet: float = 0.3) -> list[bytes]:
    """The messages published so far (until none came for ``quiet`` seconds)."""
    payloads = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + quiet
    while (left := deadline - loop.time()) > 0:
        # None also stands for a subscription confirmation: only a real message restarts the wait.
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None:
            payloads.append(message["data"])
            deadline = loop.time() + quiet
    return payloads


async def queued(client: redis.asyncio.Redis) -> set[str]:
    return {item.decode() for item in await client.zrange(KEYS.queue, 0, -1)}


async def test_a_dependent_waits_and_is_released_when_its_dependency_completes(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS)
    parent = job()
    child = job(parent, priority=5)
    assert await submit(queue, parent, child) == 2
    assert await statuses(queue, parent, child) == ["pending", "waiting"]
    assert await queued(client) == {parent.id}  # the dispatcher never sees a waiting job
    assert await client.smembers(KEYS.waiting_prefix + child.id) == {parent.id.encode()}
    async with client.pubsub() as pubsub:
        await subscribe(pubsub, KEYS.channel, KEYS.control)
        await run(queue, parent)
        payloads = await drain(pubsub)
    # Released in the same script that recorded the parent's end: queued, announced, nodes woken.
    assert await statuses(queue, parent, child) == ["completed", "pending"]
    assert await queued(client) == {child.id}
    assert not await client.exists(KEYS.waiting_prefix + child.id, KEYS.dependents_prefix + parent.id)
    assert b"wake" in payloads
    assert any(b'"type":"job.released"' in payload and child.id.encode() in payload for payload in payloads)
    [claimed] = await queue.claim("n2", 1, 60_000)
    assert claimed.id == child.id and claimed.depends_on == [parent.id]


async def test_fan_out_fan_in_and_diamond_release_in_dependency_order(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS)
    root = job()
    left, right = job(root), job(root)
    join = job(left, right)
    assert await submit(queue, root, left, right, join) == 4
    await run(queue, root)
    assert await statuses(queue, left, right, join) == ["pending", "pending", "waiting"]
    claimed = await queue.claim("n1", 2, 60_000)
    assert {item.id for item in claimed} == {left.id, right.id}
    await end(queue, claimed[0], "completed")
    assert await status(queue, join) == "waiting"
    assert await client.smembers(KEYS.waiting_prefix + join.id) == {claimed[1].id.encode()}
    await end(queue, claimed[1], "completed")
    assert await status(queue, join) == "pending"


async def test_dependencies_that_ended_before_the_submission(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS)
    done, failed = job(), job()
    await submit(queue, done)
    await run(queue, done)
    await submit(queue, failed)
    await run(queue, failed, "dead")
    # Completed: no wait at all. Failed: cancel (default) at once, or run.
    after_done, cancelled, runs = job(done), job(failed), job(failed, done, policy="run")
    assert await submit(queue, after_done, cancelled, runs) == 3
    assert await statuses(queue, after_done, cancelled, runs) == ["pending", "cancelled", "pending"]
    stored = await queue.get(cancelled.id)
    assert stored is not None and stored.reason == "dependency_failed"
    assert stored.error == f"dependency {failed.id} ended failed"
    assert await queued(client) == {after_done.id, runs.id}


async def test_unknown_dependency_refuses_the_whole_batch(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS)
    existing = job()
    await submit(queue, existing)
    before = sorted(await client.keys("*"))
    first, second = job(existing), job("job-does-not-exist", existing, "job-gone")
    with pytest.raises(DependencyRefused) as refused:
        await submit(queue, first, second)
    assert refused.value.problem == "unknown_dependency"
    assert refused.value.job_ids == ["job-does-not-exist", "job-gone"]
    assert sorted(await client.keys("*")) == before  # nothing of the batch, not even an index entry
    assert await client.zcard(KEYS.job_index) == 1 and await client.llen(KEYS.dependents_prefix + existing.id) == 0


async def test_a_batch_must_list_dependencies_first(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS)
    parent = job()
    child = job(parent)
    with pytest.raises(redis.exceptions.ResponseError, match="comes before its dependency"):
        await submit(queue, child, parent)
    assert await client.keys("*") == []


async def test_a_job_has_at_most_max_dependents(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS)
    parent = job()
    await submit(queue, parent)
    await client.rpush(KEYS.dependents_prefix + parent.id, *[f"job-{i}" for i in range(MAX_DEPENDENTS - 1)])
    with pytest.raises(DependencyRefused) as refused:
        await submit(queue, job(parent), job(parent))
    assert (refused.value.problem, refused.value.job_ids) == ("too_many_dependents", [parent.id])
    assert await submit(queue, job(parent)) == 1


async def test_a_retried_dependency_keeps_its_dependents_waiting(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS, RetentionPolicy(avoid_ms=0))
    parent = job(max_retries=1)
    child = job(parent)
    await submit(queue, parent, child)
    await run(queue, parent, "retry")
    assert await statuses(queue, parent, child) == ["pending", "waiting"]
    await asyncio.sleep(0.01)
    await run(queue, parent, "dead")
    assert await statuses(queue, parent, child) == ["failed", "cancelled"]


async def test_failure_cancels_dependents_transitively_and_run_policy_runs(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS)
    parent = job()
    child, runner = job(parent), job(parent, policy="run")
    grandchild = job(child)
    after_cancelled = job(child, policy="run")  # its dependency is cancelled: run anyway
    await submit(queue, parent, child, runner, grandchild, after_cancelled)
    async with client.pubsub() as pubsub:
        await subscribe(pubsub, KEYS.channel)
        await run(queue, parent, "dead")
        events = await drain(pubsub)
    assert await statuses(queue, child, runner, grandchild, after_cancelled) == [
        "cancelled", "pending", "cancelled", "pending"]
    for item, cause in ((child, parent), (grandchild, child)):
        stored = await queue.get(item.id)
        assert stored is not None and stored.reason == "dependency_failed"
        assert stored.error and cause.id in stored.error
    cancelled = [msgspec.json.decode(event) for event in events if b'"job.cancelled"' in event]
    assert {event["job_id"] for event in cancelled} == {child.id, grandchild.id}
    assert all(event["reason"] == "dependency_failed" for event in cancelled)
    assert await queued(client) == {runner.id, after_cancelled.id}


async def test_cancelling_a_job_cancels_its_waiting_dependents(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS)
    parent = job()
    child = job(parent)
    grandchild = job(child)
    other = job(parent)
    await submit(queue, parent, child, grandchild, other)
    # Cancelling a waiting job: it and its dependents end; the parent's later end skips it.
    assert await queue.cancel(child.id) == "waiting"
    assert await statuses(queue, child, grandchild, other) == ["cancelled", "cancelled", "waiting"]
    assert (await queue.get(child.id)).reason == "cancelled"  # type: ignore[union-attr]
    assert (await queue.get(grandchild.id)).reason == "dependency_failed"  # type: ignore[union-attr]
    assert not await client.exists(KEYS.waiting_prefix + child.id, KEYS.waiting_prefix + grandchild.id)
    # They left the dependents lists of what they waited for: only `other` is left waiting on parent.
    assert await client.lrange(KEYS.dependents_prefix + parent.id, 0, -1) == [other.id.encode()]
    assert not await client.exists(KEYS.dependents_prefix + child.id)
    await run(queue, parent)
    assert await statuses(queue, child, other) == ["cancelled", "pending"]
    # Cancelling a pending or running job cascades too.
    [running] = await queue.claim("n1", 1, 60_000)
    dependent = job(running.id)
    await submit(queue, dependent)
    assert await queue.cancel(running.id) == "running"
    assert await status(queue, dependent) == "cancelled"


async def test_a_job_lost_for_good_with_its_node_settles_its_dependents(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS, RetentionPolicy(backoff_base_ms=1, backoff_cap_ms=1, avoid_ms=0, poison_limit=5))
    parent = job(max_retries=1)
    child, runner = job(parent), job(parent, policy="run")
    await submit(queue, parent, child, runner)
    # Lost with a retry left: requeued, and its dependents keep waiting.
    await queue.claim("gone", 1, 60_000)
    recovery = await queue.recover(leader_token="", mode="nodes", cause="node lost", nodes=["gone"])
    assert recovery is not None and recovery.requeued == 1
    assert await statuses(queue, parent, child, runner) == ["pending", "waiting", "waiting"]
    # Lost again, retries used up: failed for good, and its dependents are settled.
    await asyncio.sleep(0.01)
    await queue.claim("gone-too", 1, 60_000)
    recovery = await queue.recover(leader_token="", mode="nodes", cause="node lost", nodes=["gone-too"])
    assert recovery is not None and recovery.failed == 1
    assert await statuses(queue, parent, child, runner) == ["failed", "cancelled", "pending"]


async def test_no_lost_wake_up_when_the_dependency_ends_during_the_submission(client: redis.asyncio.Redis) -> None:
    """A dependent submitted while its dependency's end is being recorded, on two connections: whichever
    script runs first, the dependent ends up released, never stranded waiting."""
    queue = JobQueue(client, KEYS)  # a pool: concurrent calls go out on separate connections
    rounds = 40
    parents = [job() for _ in range(rounds)]
    await submit(queue, *parents)
    running = {item.id: item for item in await queue.claim("n1", rounds, 60_000)}
    children = [job(parent) for parent in parents]

    async def finish(parent: Job) -> None:
        await end(queue, running[parent.id], "completed")

    async def add(child: Job) -> None:
        await submit(queue, child)

    order = []
    for index, (parent, child) in enumerate(zip(parents, children, strict=True)):
        # Alternate which goes first, and let the event loop interleave them.
        pair = (finish(parent), add(child)) if index % 2 else (add(child), finish(parent))
        order.append(asyncio.gather(*pair))
    await asyncio.gather(*order)
    assert await statuses(queue, *children) == ["pending"] * rounds
    assert await queued(client) == {child.id for child in children}
    assert not await client.keys(KEYS.waiting_prefix + "*") and not await client.keys(KEYS.dependents_prefix + "*")


async def test_settling_is_bounded_and_the_leader_finishes_the_cascade(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS, RetentionPolicy(settle_budget=3))
    registry = NodeRegistry(client, KEYS)
    # A fan-out of 5 and a chain of 4 below the first dependent: 9 dependents to settle.
    parent = job()
    fan = [job(parent) for _ in range(5)]
    chain = [fan[0]]
    for _ in range(4):
        chain.append(job(chain[-1]))
    await submit(queue, parent, *fan, *chain[1:])
    await run(queue, parent, "dead")
    # 3 dependents settled with the end; the rest waits in the backlog (nothing lost).
    assert [entry.decode() for entry in await client.zrange(KEYS.dependency_backlog, 0, -1)] != []
    settled = [s for s in await statuses(queue, *fan, *chain[1:]) if s == "cancelled"]
    assert len(settled) == 3
    assert await queue.settle_backlog(leader_token="nobody:x") is None  # leader only
    assert await registry.hold_leadership("n1:tok", 5000, make_event("leader.changed", node_id="n1")) == 1
    for _ in range(10):
        if not await queue.settle_backlog(leader_token="n1:tok"):
            break
    assert await statuses(queue, *fan, *chain[1:]) == ["cancelled"] * 9
    assert await client.zcard(KEYS.dependency_backlog) == 0
    assert not await client.keys(KEYS.dependents_prefix + "*") and not await client.keys(KEYS.waiting_prefix + "*")


async def test_records_stay_while_dependents_may_read_them(client: redis.asyncio.Redis) -> None:
    policy = RetentionPolicy(job_retention_s=100, dlq_retention_s=200, dependency_hold_s=5000)
    queue = JobQueue(client, KEYS, policy)
    first, second = job(), job()
    child = job(first, second, policy="run")
    await submit(queue, first, second, child)
    await run(queue, first)
    # first ended while child still waits for second: its record is kept past its retention.
    assert 100 < await client.ttl(KEYS.job(first.id)) <= 5000
    await run(queue, second, "dead")
    assert 200 < await client.ttl(KEYS.job(second.id)) <= 5000
    [claimed] = await queue.claim("n1", 1, 60_000)
    records = await queue.dependency_records(claimed.depends_on)
    assert [record is not None for record in records] == [True, True]
    await end(queue, claimed, "completed")
    # The last dependent ended: each gets its own retention back, counted from now.
    assert 0 < await client.ttl(KEYS.job(first.id)) <= 100
    assert 100 < await client.ttl(KEYS.job(second.id)) <= 200
    assert not await client.exists(KEYS.dependency_refs, KEYS.dependency_pins)
    # Submitting after the end pins the record again, until that dependent ends.
    late = job(first)
    await submit(queue, late)
    assert 100 < await client.ttl(KEYS.job(first.id)) <= 5000
    assert await queue.cancel(late.id) == "pending"
    assert 0 < await client.ttl(KEYS.job(first.id)) <= 100


async def test_retry_of_a_dependent_enters_its_dependencies_again(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS)
    parent = job()
    child = job(parent)
    await submit(queue, parent, child)
    await run(queue, parent, "dead")
    assert await status(queue, child) == "cancelled"
    # While the dependency is still failed, a retry of the dependent is cancelled again at once.
    assert await queue.requeue(child.id) == RequeueResult(before="cancelled", after="cancelled")
    # Retry the dependency: the dependent, retried, now waits for it, and is released when it completes.
    assert await queue.requeue(parent.id) == RequeueResult(before="failed", after="pending")
    assert await queue.requeue(child.id) == RequeueResult(before="cancelled", after="waiting")
    await run(queue, parent)
    assert await status(queue, child) == "pending"


async def test_a_job_without_dependencies_carries_no_dependency_fields(client: redis.asyncio.Redis) -> None:
    """Its record stays as small as before dependencies existed (scripts copy whole records), through
    every rewrite; so do records stored before they existed. Explicit nulls are read as well."""
    queue = JobQueue(client, KEYS)
    plain, nulls = job(), job()
    await submit(queue, plain)
    explicit = json_encoder.encode(nulls).replace(b',"submitted_at"',
                                                  b',"on_dependency_failure":null,"parent_list":null,"submitted_at"')
    await client.set(KEYS.job(nulls.id), explicit)
    await client.zadd(KEYS.queue, {nulls.id: 1e15})
    for claimed in await queue.claim("n1", 2, 60_000):
        await end(queue, claimed, "completed")
    for item in (plain, nulls):
        raw = await client.get(KEYS.job(item.id))
        assert raw is not None and await status(queue, item) == "completed"
        for field in (b"on_dependency_failure", b"parent_list", b"depends_on", b"dependency_keys"):
            assert field not in raw, (field, raw)



def test_the_header_prefixes_match_the_header() -> None:
    """lib.lua spells each header field twice (HEADER, and HEADER_PREFIX as constants); and the header is
    the first fields of Job, in order."""
    import re

    from secauto.store.scripts import script_source

    source = script_source("claim")
    header = re.findall(r"'(\w+)'", source.split("local HEADER = {", 1)[1].split("}", 1)[0])
    prefixes = re.findall(r"'\"(\w+)\":'", source.split("local HEADER_PREFIX = {", 1)[1].split("}", 1)[0])
    assert header == prefixes
    assert header == list(Job.__struct_fields__[:len(header)])


async def test_waiting_jobs_count_against_a_quota_until_they_end_even_by_a_cascade(
        client: redis.asyncio.Redis) -> None:
    """max_pending counts waiting jobs too; a dependent cancelled by a cascade (or at submission)
    gives its place back like any job that ended."""
    queue = JobQueue(client, KEYS)
    quota = Quota(key_name="ci", max_pending=4)

    async def live() -> int:
        return int(await client.hget(KEYS.quota_pending, "ci") or 0)

    parent = job()
    child = job(parent)
    grandchild = job(child)
    events = [make_event("job.submitted", job_id=j.id, status="pending") for j in (parent, child, grandchild)]
    assert await queue.submit([parent, child, grandchild], events, quota=quota) == 3
    assert await live() == 3
    with pytest.raises(QuotaExceeded):
        await queue.submit([job(), job()], [make_event("job.submitted")] * 2, quota=quota)
    await run(queue, parent, "dead")
    assert await statuses(queue, child, grandchild) == ["cancelled", "cancelled"]
    assert await live() == 0 and not await client.hlen(KEYS.quota_owner)
    # Cancelled at submission (its dependency already failed): it takes no place.
    late = job(parent)
    assert await queue.submit([late], [make_event("job.submitted", job_id=late.id)], quota=quota) == 1
    assert await status(queue, late) == "cancelled" and await live() == 0
