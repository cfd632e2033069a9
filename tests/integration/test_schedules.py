"""Schedules against a real Redis with several nodes in one event loop: one job per slot across a
leader that hangs and concurrent upserts, overlap, pause/resume/trigger, catch-up after every node
was stopped, and restarts of every node.

Exactly-once is checked by counting the jobs per ``scheduled_for`` in Redis, and by checking that the
history accounts for every slot once.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio

from secauto.node import Node
from tests.support.nodes import auth, node_settings, running_node

CLUSTER = "sched-cluster"
QUICK = [{"action": "log", "message": "tick"}]

pytestmark = pytest.mark.timeout(90)


def every_second(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "every": 1, "playbook": QUICK, **extra}


async def start_nodes(stack: AsyncExitStack, redis_url: str, ids: list[str], **sections: Any) -> list[Node]:
    return [await stack.enter_async_context(running_node(
        node_settings(node_id, redis_url=redis_url, cluster_name=CLUSTER, **sections))) for node_id in ids]


async def scheduled_jobs(client: redis.asyncio.Redis, name: str) -> list[dict[str, Any]]:
    ids = [member async for member in client.zscan_iter(f"secauto:job-index:{CLUSTER}")]
    raws = await client.mget([f"secauto:job:{job_id.decode()}" for job_id, _ in ids]) if ids else []
    jobs = [msgspec.json.decode(raw) for raw in raws if raw is not None]
    return [job for job in jobs if job.get("schedule") == name]


async def history(client: redis.asyncio.Redis, name: str) -> list[dict[str, Any]]:
    raws = await client.lrange(f"secauto:schedule-history:{CLUSTER}:{name}", 0, -1)
    return [msgspec.json.decode(raw) for raw in raws]


def assert_one_job_per_slot(jobs: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    per_slot = collections.Counter(job["scheduled_for"] for job in jobs)
    assert per_slot and max(per_slot.values()) == 1, [slot for slot, count in per_slot.items() if count > 1]
    recorded = collections.Counter(entry["slot"] for entry in entries)
    assert max(recorded.values()) == 1, [slot for slot, count in recorded.items() if count > 1]
    fired = {entry["slot"]: entry["job_id"] for entry in entries if entry["outcome"] == "fired"}
    assert {job["scheduled_for"]: job["id"] for job in jobs} == fired


async def api(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with session.request(method, url, json=body, headers=auth()) as response:
        return response.status, await response.json()


async def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            value = await predicate()
            if value:
                return value
            await asyncio.sleep(0.1)
    raise AssertionError(what)  # pragma: no cover


async def leader_of(client: redis.asyncio.Redis) -> str:
    async def current() -> str | None:
        raw = await client.get(f"secauto:leader:{CLUSTER}")
        return raw.decode().rpartition(":")[0] if raw else None
    leader: str = await wait_for(current, 10, "a leader")
    return leader


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def test_one_job_per_slot_across_a_hung_leader_and_concurrent_upserts(
        redis_url: str, redis_client: redis.asyncio.Redis, session: aiohttp.ClientSession) -> None:
    config = {"schedules": [every_second("cfg-tick", overlap="allow")]}
    async with AsyncExitStack() as stack:
        # Three nodes start at once with the same config schedule: concurrent, idempotent upserts.
        nodes = await asyncio.gather(*(stack.enter_async_context(running_node(node_settings(
            f"node-{index}", redis_url=redis_url, cluster_name=CLUSTER, **config))) for index in (1, 2, 3)))
        body = {"every": 1, "playbook": QUICK, "overlap": "allow"}
        answers = await asyncio.gather(*(api(session, "PUT", f"{node.url}/schedules/api-tick", body)
                                         for node in nodes))
        assert sorted(status for status, _ in answers) == [200, 200, 200]
        assert sum(1 for _, answer in answers if answer["created"]) == 1

        stop = asyncio.Event()

        async def keep_upserting() -> None:
            # Two nodes keep redefining the schedule (same timing, changing context): every change
            # bumps its revision, so fires planned meanwhile are refused and planned again.
            round_ = 0
            while not stop.is_set():
                round_ += 1
                node = nodes[round_ % 2]
                status, answer = await api(session, "PUT", f"{node.url}/schedules/api-tick",
                                           {**body, "context": {"round": round_ // 3}})
                assert status == 200, answer
                await asyncio.sleep(0.03)

        upserts = asyncio.create_task(keep_upserting())
        await asyncio.sleep(2.5)
        leader = await leader_of(redis_client)
        hung = next(node for node in nodes if node.settings.node_id == leader)
        # The leader hangs: it stops renewing its lease but its scheduler keeps its token and keeps trying.
        hung.system.get("reaper")._cell.cancel_timer("elect")  # type: ignore[attr-defined]
        hung.system.get("reaper")._cell.cancel_timer("reap")  # type: ignore[attr-defined]
        new_leader = await wait_for(lambda: _other_leader(redis_client, leader), 10, "a new leader")
        await asyncio.sleep(3.0)
        stop.set()
        await upserts
        assert new_leader != leader
        for name in ("cfg-tick", "api-tick"):
            jobs, entries = await scheduled_jobs(redis_client, name), await history(redis_client, name)
            assert_one_job_per_slot(jobs, entries)
            assert len(jobs) >= 5, (name, len(jobs))
            submitters = {job["submitted_to"] for job in jobs}
            assert leader in submitters and new_leader in submitters
            # Every slot from the first to the last is accounted for once: fired, or missed in the takeover.
            seconds = sorted(_epoch(entry["slot"]) for entry in entries)
            assert seconds == list(range(seconds[0], seconds[-1] + 1)), seconds
        state = await redis_client.hgetall(f"secauto:schedule:{CLUSTER}:cfg-tick")
        assert state[b"source"] == b"config" and int(state[b"rev"]) == 1  # three identical upserts: one write


async def _other_leader(client: redis.asyncio.Redis, old: str) -> str | None:
    raw = await client.get(f"secauto:leader:{CLUSTER}")
    leader = raw.decode().rpartition(":")[0] if raw else None
    return leader if leader and leader != old else None


async def test_overlap_skip_buffer_one_and_allow(redis_url: str, redis_client: redis.asyncio.Redis,
                                                 session: aiohttp.ClientSession) -> None:
    slow = [{"action": "sleep", "seconds": 2.2}]
    async with AsyncExitStack() as stack:
        await start_nodes(stack, redis_url, ["solo"], schedules=[
            {"name": "skip", "every": 1, "playbook": slow},
            {"name": "buffer", "every": 1, "playbook": slow, "overlap": "buffer_one"},
            {"name": "allow", "every": 1, "playbook": slow, "overlap": "allow"},
        ])
        await asyncio.sleep(6.5)
        results = {name: (await scheduled_jobs(redis_client, name), await history(redis_client, name))
                   for name in ("skip", "buffer", "allow")}
    for name, (jobs, entries) in results.items():
        assert_one_job_per_slot(jobs, entries)
        outcomes = collections.Counter(entry["outcome"] for entry in entries)
        running = _max_concurrent(jobs)
        if name == "skip":
            assert running == 1 and outcomes["skipped_overlap"] >= 3, (outcomes, running)
        elif name == "buffer":
            # one running, one queued behind it (created when the first ended), the rest skipped
            assert running == 1 and outcomes["skipped_overlap"] >= 2 and len(jobs) >= 2, (outcomes, running)
            first, second = sorted(jobs, key=lambda job: job["scheduled_for"])[:2]
            assert second["submitted_at"] >= (first.get("completed_at") or "9"), (first, second)
        else:
            assert running >= 2 and "skipped_overlap" not in outcomes, (outcomes, running)


def _max_concurrent(jobs: list[dict[str, Any]]) -> int:
    """The most of these jobs that were running at the same moment (from their attempts)."""
    edges = []
    for job in jobs:
        for attempt in job.get("attempts", []):
            edges += [(attempt["started_at"], 1), (attempt.get("ended_at") or "9999", -1)]
        if job["status"] == "running":
            edges += [(job["started_at"], 1), ("9999", -1)]
    level = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        level += step
        peak = max(peak, level)
    return peak


async def test_pause_resume_and_trigger(redis_url: str, redis_client: redis.asyncio.Redis,
                                        session: aiohttp.ClientSession) -> None:
    events: list[dict[str, Any]] = []
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(f"secauto:events:{CLUSTER}")

    async def collect() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["data"].startswith(b'{"type":"schedule.'):
                events.append(msgspec.json.decode(message["data"]))

    collector = asyncio.create_task(collect())
    async with AsyncExitStack() as stack:
        stack.push_async_callback(pubsub.aclose)
        stack.callback(collector.cancel)
        nodes = await start_nodes(stack, redis_url, ["node-1", "node-2"],
                                  schedules=[every_second("cfg", overlap="allow")])
        url = f"{nodes[1].url}/schedules/cfg"
        await wait_for(lambda: scheduled_jobs(redis_client, "cfg"), 5, "a first fire")
        status, answer = await api(session, "POST", f"{url}/pause", {"note": "maintenance"})
        assert status == 200 and answer["schedule"]["paused"] and answer["schedule"]["next_fires"] == []
        assert answer["schedule"]["pause_note"] == "maintenance"
        before = len(await scheduled_jobs(redis_client, "cfg"))
        await asyncio.sleep(2.5)
        status, answer = await api(session, "POST", f"{url}/trigger")  # a config schedule, paused: still works
        assert status == 200
        triggered = answer["job_id"]
        await asyncio.sleep(0.5)
        jobs = await scheduled_jobs(redis_client, "cfg")
        assert len(jobs) == before + 1 and triggered in {job["id"] for job in jobs}
        entries = await history(redis_client, "cfg")
        paused_slots = [entry["slot"] for entry in entries if entry["outcome"] == "paused"]
        assert len(paused_slots) >= 2
        assert [entry["outcome"] for entry in entries if entry["job_id"] == triggered] == ["triggered"]
        status, answer = await api(session, "POST", f"{url}/resume")
        assert status == 200 and not answer["schedule"]["paused"] and len(answer["schedule"]["next_fires"]) == 5
        resumed_at = answer["timestamp"]
        await asyncio.sleep(2.2)
        jobs = await scheduled_jobs(redis_client, "cfg")
        fired_slots = {job["scheduled_for"] for job in jobs if job["id"] != triggered}
        assert not fired_slots & set(paused_slots)  # the paused slots never fire
        assert any(slot > resumed_at for slot in fired_slots)  # and it goes on from now
        assert_one_job_per_slot([job for job in jobs if job["id"] != triggered],
                                [entry for entry in await history(redis_client, "cfg")
                                 if entry["outcome"] != "triggered"])
        triggered_job = next(job for job in jobs if job["id"] == triggered)
        assert triggered_job["submitted_by"] == "admin" and triggered_job["schedule"] == "cfg"
        # Events: each fire and each paused slot, with the schedule and the slot.
        kinds = collections.Counter((event["type"], event.get("reason")) for event in events)
        assert kinds[("schedule.fired", "triggered")] == 1 and kinds[("schedule.skipped", "paused")] >= 2
        fired_events = {event["scheduled_for"]: event["job_id"] for event in events
                        if event["type"] == "schedule.fired" and event.get("reason") is None}
        assert all(fired_events[job["scheduled_for"]] == job["id"] for job in jobs
                   if job["id"] != triggered and job["scheduled_for"] in fired_events)
        assert all(event["schedule"] == "cfg" for event in events)
        # The job listing filters by schedule.
        async with session.get(f"{nodes[0].url}/cluster/jobs?schedule=cfg&limit=200", headers=auth()) as response:
            listed = (await response.json())["jobs"]
        assert {job["id"] for job in listed} == {job["id"] for job in jobs}
        assert all(job["schedule"] == "cfg" and job["scheduled_for"] for job in listed)


async def test_catchup_after_every_node_was_stopped(redis_url: str, redis_client: redis.asyncio.Redis,
                                                    session: aiohttp.ClientSession) -> None:
    daily = {"every": 86400, "playbook": QUICK, "overlap": "allow", "catchup_window": 3 * 86400}
    definitions = {"tick": {"every": 1, "playbook": QUICK, "overlap": "allow"},
                   "d-latest": daily, "d-none": {**daily, "catchup": "none"}, "d-all": {**daily, "catchup": "all"}}
    async with AsyncExitStack() as stack:
        (node,) = await start_nodes(stack, redis_url, ["node-1"])
        for name, body in definitions.items():
            status, answer = await api(session, "PUT", f"{node.url}/schedules/{name}", body)
            assert status == 200, answer
        await asyncio.sleep(1.5)
    # Every node is down. The tick schedule misses real slots; for the daily ones, the stored state is
    # moved back as it would be after two and a half days without any node.
    now = int((await redis_client.time())[0])
    day = 86400
    if now % day < 30:  # the newest daily slot must be clearly late (not "on time")
        await asyncio.sleep(30 - now % day)
        now = int((await redis_client.time())[0])
    newest = now - now % day
    pending = (newest - 2 * day) * 1000
    for name in ("d-latest", "d-none", "d-all"):
        await redis_client.hset(f"secauto:schedule:{CLUSTER}:{name}",
                                mapping={"slot": pending, "due": pending, "last_slot": pending - day * 1000})
        await redis_client.zadd(f"secauto:schedule-due:{CLUSTER}", {name: pending})
    await asyncio.sleep(3.5)  # the tick schedule misses at least 3 slots
    async with AsyncExitStack() as stack:
        (node,) = await start_nodes(stack, redis_url, ["node-1"])  # the schedules survived the restart
        await wait_for(lambda: _handled(redis_client, "d-all", 3), 10, "the daily catch-up")
        await asyncio.sleep(1.5)
        status, listing = await api(session, "GET", f"{node.url}/schedules")
        assert status == 200 and [item["name"] for item in listing["schedules"]] == sorted(definitions)
        outcomes = {name: [(entry["slot"][:10], entry["outcome"]) for entry in await history(redis_client, name)]
                    for name in ("d-latest", "d-none", "d-all")}
        tick_jobs, tick_entries = await scheduled_jobs(redis_client, "tick"), await history(redis_client, "tick")
    newest_day, older = _day(newest), [_day(newest - 2 * day), _day(newest - day)]
    assert sorted(outcomes["d-latest"]) == sorted([(older[0], "missed"), (older[1], "missed"), (newest_day, "fired")])
    assert sorted(outcomes["d-none"]) == sorted([(day_, "missed") for day_ in [*older, newest_day]])
    assert sorted(outcomes["d-all"]) == sorted([(day_, "fired") for day_ in [*older, newest_day]])
    assert len(await scheduled_jobs(redis_client, "d-latest")) == 1
    assert len(await scheduled_jobs(redis_client, "d-all")) == 3
    # The tick schedule: the slots of the outage are recorded missed, the newest one fired, each slot once.
    assert_one_job_per_slot(tick_jobs, tick_entries)
    assert sum(1 for entry in tick_entries if entry["outcome"] == "missed") >= 2


def _epoch(stamp: str) -> int:
    import datetime

    return int(datetime.datetime.fromisoformat(stamp).timestamp())


def _day(epoch: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d")


async def _handled(client: redis.asyncio.Redis, name: str, count: int) -> bool:
    return len(await history(client, name)) >= count


async def test_eviction_policy_refuses_to_start_or_is_explained(redis_process_factory: Any) -> None:
    from secauto.config import ConfigError

    lru = redis_process_factory(extra_args=["--maxmemory-policy", "allkeys-lru"])
    node = Node(node_settings("careful", redis_url=lru.url, cluster_name=CLUSTER))
    with pytest.raises(ConfigError, match=r"^cluster\.allow_eviction: Redis maxmemory-policy is allkeys-lru"):
        await node.start()
    assert node.system.fatal is None
    volatile = redis_process_factory(extra_args=["--maxmemory-policy", "volatile-ttl"])
    settings = node_settings("brave", redis_url=volatile.url, cluster_name=CLUSTER, cluster={"allow_eviction": True})
    async with running_node(settings) as started, aiohttp.ClientSession() as http:
        async with asyncio.timeout(5):
            while True:
                async with http.get(f"{started.url}/health") as response:
                    health = await response.json()
                if health["warnings"]:
                    break
                await asyncio.sleep(0.05)
        assert response.status == 200 and health["status"] == "healthy"
        assert "volatile-ttl" in health["warnings"][0] and "noeviction" in health["warnings"][0]
    # A managed Redis that refuses CONFIG: the policy is unknown, the node starts (with a warning log).
    refused = redis_process_factory(extra_args=["--rename-command", "CONFIG", '""'])
    async with running_node(node_settings("managed", redis_url=refused.url, cluster_name=CLUSTER)) as managed, \
            aiohttp.ClientSession() as http, http.get(f"{managed.url}/health") as response:
        assert response.status == 200 and (await response.json())["warnings"] == []


async def test_the_fire_script_is_fenced_by_token_slot_revision_and_pause(redis_client: redis.asyncio.Redis) -> None:
    from secauto.models import make_event
    from secauto.schedules.definition import ScheduleRecord, schedule_job, slot_job_id
    from secauto.schedules.spec import ScheduleSpec
    from secauto.store.jobs import JobQueue
    from secauto.store.keys import Keys
    from secauto.store.schedules import FireEntry, ScheduleStore

    store = ScheduleStore(JobQueue(redis_client, Keys(CLUSTER)))
    record = ScheduleRecord(spec=ScheduleSpec(name="fenced", every=60, playbook=QUICK), steps=QUICK)
    now = await store.redis_time()
    slot = record.timing.next_after(now - 120_000)  # a slot that is already due
    assert await store.upsert(record, source="api", mode="create", def_hash="d1", timing_hash="t1", first_slot=slot,
                              first_due=slot, now_iso="x") == "created"
    await redis_client.set(f"secauto:leader:{CLUSTER}", "node-1:token")
    job = schedule_job(record, job_id=slot_job_id(CLUSTER, "fenced", slot), slot=slot, now_ms=now, node_id="node-1",
                       default_max_retries=0)
    entry = FireEntry(slot=slot, intent="fire", job=job, event=make_event("job.submitted", job_id=job.id))

    async def fire(token: str, **changes: Any) -> list[str] | None:
        stored = await store.get("fenced")
        assert stored is not None
        state = msgspec.structs.replace(stored.state, **changes)
        return await store.fire(token=token, name="fenced", state=state, overlap="allow", entries=[entry],
                                next_slot=slot + 60_000, next_due=slot + 60_000, now_iso="x")

    assert await fire("node-2:other") is None  # a deposed leader
    assert await fire("node-1:token", rev="7") == []  # planned with another revision of the definition
    assert await fire("node-1:token", paused=True) == []  # planned while it was paused
    assert await fire("node-1:token", slot=slot - 60_000) == []  # planned for another pending slot
    assert await redis_client.exists(f"secauto:job:{job.id}") == 0
    assert await fire("node-1:token") == ["fired"]
    assert await redis_client.exists(f"secauto:job:{job.id}") == 1
    # The same plan again (a retry after a lost answer, or a second leader) finds the slot moved on.
    assert await fire("node-1:token", slot=slot) == []
    assert [entry["outcome"] for entry in await history(redis_client, "fenced")] == ["fired"]
    state = await redis_client.hgetall(f"secauto:schedule:{CLUSTER}:fenced")
    assert int(state[b"slot"]) == slot + 60_000 and int(state[b"last_slot"]) == slot
    # An upsert of the same definition changes nothing; a new timing cannot move back onto a handled slot.
    assert await store.upsert(record, source="api", mode="replace", def_hash="d1", timing_hash="t1", first_slot=0,
                              first_due=0, now_iso="x") == "unchanged"
    assert await store.upsert(record, source="api", mode="replace", def_hash="d2", timing_hash="t2", first_slot=slot,
                              first_due=slot, now_iso="x") == "stale"
