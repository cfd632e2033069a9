"""max_pending quotas in the store scripts, on a real redis-server and on the embedded store: counted at
submit, atomically; released by every end for good (completed, dead-lettered, cancelled, reaped) and
by nothing else (a retry or a handback keeps the job live)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import redis.asyncio

from secauto.models import Job, make_event, new_job_id, utc_now
from secauto.store.jobs import JobQueue, Quota, QuotaExceeded, RetentionPolicy
from secauto.store.keys import Keys

CLUSTER = "quota"
KEYS = Keys(CLUSTER)
CI = Quota(key_name="ci", max_pending=3)


def job(**fields: object) -> Job:
    return Job(id=new_job_id(), submitted_at=utc_now(), submitted_to="n0", playbook=[{"action": "log", "message": "x"}],
               **fields)  # type: ignore[arg-type]


async def submit(queue: JobQueue, *jobs: Job, quota: Quota | None = CI) -> int:
    events = [make_event("job.submitted", job_id=j.id, status="pending") for j in jobs]
    return await queue.submit(list(jobs), events, quota=quota)


async def live(client: redis.asyncio.Redis, name: str = "ci") -> int:
    return int(await client.hget(KEYS.quota_pending, name) or 0)


async def test_submissions_beyond_the_quota_are_refused_whole(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS)
    assert await submit(queue, job(), job()) == 2
    with pytest.raises(QuotaExceeded) as refused:
        await submit(queue, job(), job())  # 2 + 2 > 3: neither is stored
    assert (refused.value.live, refused.value.max_pending) == (2, 3)
    assert await queue.queue_size() == 2 and await live(client) == 2
    assert await submit(queue, job()) == 1
    with pytest.raises(QuotaExceeded):
        await submit(queue, job())
    assert await submit(queue, job(), quota=Quota(key_name="other", max_pending=1)) == 1  # per key
    assert await submit(queue, job(), job(), quota=None) == 2  # no quota: not counted at all
    assert await live(client) == 3 and await live(client, "other") == 1
    assert await client.hlen(KEYS.quota_owner) == 4


async def test_every_end_for_good_releases_and_nothing_else_does(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS, RetentionPolicy(backoff_base_ms=1, backoff_cap_ms=1, poison_limit=5))
    done, dead, retried = job(), job(max_retries=0), job(max_retries=1)
    await submit(queue, done, dead, retried)
    claimed = {j.id: j for j in await queue.claim("n1", 3, 60_000)}
    event = make_event("job.x")
    assert await queue.finish(msgspec.structs.replace(claimed[done.id], status="completed"), "n1", "completed", event)
    assert await live(client) == 2
    assert await queue.finish(msgspec.structs.replace(claimed[dead.id], status="failed"), "n1", "dead", event)
    assert await live(client) == 1
    pending = msgspec.structs.replace(claimed[retried.id], status="pending", assigned_to=None)
    assert await queue.finish(pending, "n1", "retry", event, backoff_ms=1)
    assert await live(client) == 1  # a retry is still live
    await asyncio.sleep(0.01)
    [again] = await queue.claim("n2", 1, 60_000)
    assert await queue.handback("n2", {again.id: again.attempt}) == 1
    assert await live(client) == 1  # handed back: still live
    assert await queue.cancel(retried.id) == "pending"
    assert await live(client) == 0 and await client.hlen(KEYS.quota_owner) == 0
    assert not await client.exists(KEYS.quota_pending)  # fields at 0 are removed


async def test_cancelling_a_running_job_and_reaping_a_lost_one_release(client: redis.asyncio.Redis) -> None:
    queue = JobQueue(client, KEYS, RetentionPolicy(backoff_base_ms=1, backoff_cap_ms=1, poison_limit=5))
    running, lost, requeued = job(), job(max_retries=0), job(max_retries=3)
    await submit(queue, running, lost, requeued)
    await queue.claim("alive", 1, 600_000)
    await queue.claim("gone", 2, 600_000)
    assert await queue.cancel(running.id) == "running"
    assert await live(client) == 2
    recovery = await queue.recover(leader_token="", mode="nodes", cause="node lost", nodes=["gone"])
    assert recovery is not None and (recovery.requeued, recovery.failed) == (1, 1)
    assert await live(client) == 1  # the dead-lettered one left; the requeued one is still live
    assert await client.hget(KEYS.quota_owner, requeued.id) == b"ci"
