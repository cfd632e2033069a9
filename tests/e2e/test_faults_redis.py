"""Issue 4 with real processes: Redis outages, restarts with AOF, Sentinel failover, and retention.

Each test owns its Redis (redis_process_factory) except the retention test, which uses the session's.
Nodes are real `secauto serve` processes with the short timings of tests/support/faults.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from tests.support.faults import (
    FAST_CLUSTER,
    Api,
    FaultEnv,
    Submitter,
    crash_lines,
    get_job,
    leader_id,
    mark_step,
    outcomes,
    side_effects,
    wait_jobs,
    wait_until,
)
from tests.support.procs import pid_exists
from tests.support.sentinel import SentinelProcess

pytestmark = pytest.mark.timeout(150)

HEARTBEAT = float(FAST_CLUSTER["heartbeat_interval"])
ELECTION = float(FAST_CLUSTER["election_timeout"])


def _completed_attempts(job: dict[str, Any]) -> int:
    return sum(1 for attempt in job.get("attempts", []) if attempt["outcome"] == "completed")


async def _health(api: Api, url: str) -> tuple[int, Any, Any]:
    return await api.request("GET", f"{url}/health")


# ---------------------------------------------------------------------------------------------------
# 7. Redis stopped for a few seconds under load
# ---------------------------------------------------------------------------------------------------


async def test_redis_outage_under_load(tmp_path: Path, redis_process_factory: Any, process_factory: Any) -> None:
    server = redis_process_factory(appendonly=True, appendfsync="everysec")
    client = server.client()
    env = FaultEnv(tmp_path, process_factory, server.url, "faults-outage")
    try:
        async with asyncio.timeout(90):
            nodes = await env.start("a", "b")
            pids = {node.name: node.proc.pid for node in nodes}
            async with Api.open() as api:
                jobs = [{"playbook": [mark_step(seconds=1.5)], "context": env.context(f"outage-{i}")}
                        for i in range(24)]
                job_ids = await api.submit_batch(nodes[0].url, jobs)

                async def running() -> list[str]:
                    records = await client.mget([f"secauto:job:{job_id}" for job_id in job_ids])
                    return [json.loads(raw)["id"] for raw in records
                            if raw is not None and json.loads(raw)["status"] == "running"]

                await wait_until(lambda: _at_least(running(), 6), timeout=10, what="6 running jobs")
                running_at_outage = set(await running())

                server.stop()  # SIGTERM: Redis goes away (AOF kept)
                down_at = time.monotonic()
                for node in nodes:
                    status, body, _ = await api.request("GET", f"{node.url}/health/live")
                    assert status == 200, body

                async def degraded() -> bool:
                    answers = [await _health(api, node.url) for node in nodes]
                    return all(status == 503 and body["status"] == "degraded" and headers.get("Retry-After")
                               for status, body, headers in answers)

                await wait_until(degraded, timeout=5, what="/health to say degraded on both nodes")
                for node in nodes:
                    status, body, headers = await api.request("POST", f"{node.url}/cluster/jobs",
                                                              {"playbook": [mark_step()],
                                                               "context": env.context("refused")})
                    assert status == 503 and headers.get("Retry-After"), (status, body, headers)
                    assert body["error"]["code"] == "unavailable"
                await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - down_at)))
                for node in nodes:
                    assert node.proc.is_running and node.proc.pid == pids[node.name]
                    status, _, _ = await api.request("GET", f"{node.url}/health/live")
                    assert status == 200

                await asyncio.to_thread(server.start)
                up_at = time.monotonic()
                await wait_until(lambda: _all_healthy(api, nodes), timeout=10, what="/health healthy again")
                healthy_after = time.monotonic() - up_at
                # The cluster still works after the outage.
                job_ids.append(await api.submit(nodes[1].url, [mark_step()], env.context("after")))
                done = await wait_jobs(client, job_ids, timeout=45)

        assert healthy_after < 5, healthy_after
        for job_id, job in done.items():
            # One recorded completion per job, and a Redis blip is not a lost node: no retries at all.
            assert _completed_attempts(job) == 1, job["attempts"]
            assert outcomes(job)[-1] == "completed" and "node_lost" not in outcomes(job), (job_id, job["attempts"])
        for job_id in running_at_outage:
            # Kept running through the outage; its result was written once Redis was back.
            assert done[job_id]["attempt"] == 1 and outcomes(done[job_id]) == ["completed"], done[job_id]["attempts"]
        executions: dict[str, int] = {}
        for marker, _, _ in side_effects(env.out):
            executions[marker] = executions.get(marker, 0) + 1
        assert "refused" not in executions
        assert all(executions.get(f"outage-{i}") == 1 for i in range(24)), executions
        for node in nodes:
            assert node.proc.is_running and node.proc.pid == pids[node.name], "a node restarted"
            assert not crash_lines(node.proc), crash_lines(node.proc)[:5]
    finally:
        await client.aclose()


async def _at_least(awaitable: Any, count: int) -> bool:
    return len(await awaitable) >= count


async def _all_healthy(api: Api, nodes: list[Any]) -> bool:
    statuses = [(await _health(api, node.url))[0] for node in nodes]
    return all(status == 200 for status in statuses)


# ---------------------------------------------------------------------------------------------------
# 8. Redis killed and restarted with appendonly (appendfsync always): no acknowledged job is lost
# ---------------------------------------------------------------------------------------------------


async def test_redis_sigkill_restart_with_aof_loses_no_acknowledged_job(tmp_path: Path, redis_process_factory: Any,
                                                                         process_factory: Any) -> None:
    server = redis_process_factory(appendonly=True, appendfsync="always")
    client = server.client()
    env = FaultEnv(tmp_path, process_factory, server.url, "faults-aof")
    try:
        async with asyncio.timeout(90):
            nodes = await env.start("a", "b", cluster={"max_concurrent_jobs": 2})
            async with Api.open(timeout=10) as api:
                submitter = Submitter(api, [node.url for node in nodes],
                                      lambda i: {"playbook": [mark_step(seconds=0.2)],
                                                 "context": env.context(f"aof-{i}")}).start()
                await wait_until(lambda: len(submitter.acked) >= 30, timeout=15, what="30 acknowledged jobs")
                acked_before = len(submitter.acked)
                server.kill()  # a crash: only what was fsynced survives, and every reply came after an fsync
                await asyncio.sleep(1.0)
                await asyncio.to_thread(server.start)
                await wait_until(lambda: len(submitter.acked) >= acked_before + 20, timeout=20,
                                 what="submissions to be accepted again")
                await submitter.stop()
                done = await wait_jobs(client, submitter.acked, timeout=60)
        assert len(done) == len(submitter.acked)
        for job in done.values():
            assert _completed_attempts(job) == 1, job["attempts"]
        assert submitter.statuses.get(503, 0) + sum(submitter.errors.values()) > 0, (
            "no submission was refused: did Redis really go down?", submitter.statuses)
        assert set(submitter.statuses) <= {200, 503}, submitter.statuses
        for node in nodes:
            assert node.proc.is_running
            assert not crash_lines(node.proc), crash_lines(node.proc)[:5]
    finally:
        await client.aclose()


# ---------------------------------------------------------------------------------------------------
# 9. Redis Sentinel: a primary failover under load wedges no node; durable submissions survive it
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def sentinel_factory(tmp_path: Path) -> Any:
    started: list[SentinelProcess] = []

    def factory(primary_port: int) -> SentinelProcess:
        proc = SentinelProcess(primary_port, dir=tmp_path / f"sentinel-{len(started)}")
        started.append(proc)
        return proc.start()

    yield factory
    for proc in started:
        proc.stop()  # SIGTERM, then SIGKILL after 10 s
    alive = [pid for proc in started for pid in proc.pids if pid_exists(pid)]
    assert not alive, f"sentinel pids still alive after teardown: {alive}"


async def _role(server: Any) -> str:
    client = server.client()
    try:
        info = await client.info("replication")
        return str(info["role"])
    finally:
        await client.aclose()


@pytest.mark.parametrize("how", ["failover", "sigkill"])
async def test_sentinel_failover_under_load(tmp_path: Path, redis_process_factory: Any, sentinel_factory: Any,
                                            process_factory: Any, how: str) -> None:
    primary = redis_process_factory()
    replicas = [redis_process_factory(extra_args=["--replicaof", primary.host, str(primary.port)])
                for _ in range(2 if how == "sigkill" else 1)]
    sentinels = [sentinel_factory(primary.port) for _ in range(3)]
    async with asyncio.timeout(120):
        # Sentinels know each other and the replicas (hello messages every 2 s) before anything fails.
        async def ready() -> bool:
            for sentinel in sentinels:
                client = sentinel.client()
                try:
                    known = await client.execute_command("SENTINEL", "REPLICAS", "mymaster")
                    peers = await client.execute_command("SENTINEL", "SENTINELS", "mymaster")
                finally:
                    await client.aclose()
                if len(known) < len(replicas) or len(peers) < 2:
                    return False
            return all([await _role(replica) == "slave" for replica in replicas])

        await wait_until(ready, timeout=30, interval=0.2, what="sentinels to discover replicas and each other")
        url = "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in sentinels) + "/mymaster"
        env = FaultEnv(tmp_path, process_factory, url, f"faults-sentinel-{how}")
        nodes = await env.start("a", "b", cluster={"durable_submit": True, "durable_replicas": 1,
                                                   "durable_timeout": 2})
        async with Api.open(timeout=15) as api:
            submitter = Submitter(api, [node.url for node in nodes],
                                  lambda i: {"playbook": [mark_step(seconds=0.2)],
                                             "context": env.context(f"sentinel-{i}")}).start()
            await wait_until(lambda: len(submitter.acked) >= 20, timeout=20, what="20 acknowledged jobs")
            sentinel = sentinels[0].client()
            try:
                if how == "failover":
                    assert await sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster")
                else:
                    primary.kill()
                failed_over_at = time.monotonic()

                async def switched() -> bool:
                    _, port = await sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
                    return int(port) != primary.port

                await wait_until(switched, timeout=30, interval=0.1, what="the sentinels to switch the primary")
                switch_s = time.monotonic() - failed_over_at
                switched_at = time.time()
                _, port = await sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
            finally:
                await sentinel.aclose()
            new_primary = next(server for server in replicas if server.port == int(port))
            acked_at_switch = len(submitter.acked)
            client = new_primary.client()
            try:
                # Every node writes to the new primary within a few heartbeats: its record there is fresh.
                async def fresh() -> bool:
                    for node in nodes:
                        raw = await client.get(f"secauto:nodes:{env.cluster}:{node.name}")
                        if raw is None or json.loads(raw)["last_seen_epoch"] < switched_at:
                            return False
                    return True

                try:
                    await wait_until(fresh, timeout=20, interval=0.1, what="fresh node records on the new primary")
                    fresh_s: float | None = time.time() - switched_at
                except AssertionError:
                    fresh_s = None
            finally:
                await client.aclose()
            # Submissions are acknowledged again after the failover (no node wedged).
            await wait_until(lambda: len(submitter.acked) >= acked_at_switch + 20, timeout=30,
                             what="20 more acknowledged jobs after the failover")
            await submitter.stop()
            await wait_until(lambda: _all_healthy(api, nodes), timeout=15, what="/health healthy after failover")
            client = new_primary.client()
            try:
                done = await wait_jobs(client, submitter.acked, timeout=60)
            finally:
                await client.aclose()
        assert switch_s < 30
        assert len(done) == len(submitter.acked)  # every acknowledged (durable) submission survived
        for job in done.values():
            assert _completed_attempts(job) == 1, job["attempts"]
        for node in nodes:
            assert node.proc.is_running
            assert not crash_lines(node.proc), crash_lines(node.proc)[:5]
        problems = []
        if fresh_s is None or fresh_s > 3 * HEARTBEAT + 2:
            problems.append(f"nodes kept writing to the demoted primary: fresh records on the new one after "
                            f"{fresh_s}s (want <= {3 * HEARTBEAT + 2}s after the switch)")
        if set(submitter.statuses) - {200, 503}:
            problems.append(f"submissions answered other than 200/503 (with Retry-After): {submitter.statuses}")
        assert not problems, problems


# ---------------------------------------------------------------------------------------------------
# 10. Retention: every secauto:* key is bounded or expires
# ---------------------------------------------------------------------------------------------------

# Keys without a TTL that are bounded by construction (see secauto/store/keys.py), by name prefix.
BOUNDED = ("secauto:jobs:", "secauto:running:", "secauto:delayed:", "secauto:dlq:", "secauto:node-index:",
           "secauto:load:", "secauto:capacity:", "secauto:tag-running:", "secauto:rr:", "secauto:seq:",
           "secauto:job-index:", "secauto:recent:", "secauto:keys:", "secauto:keys-version:", "secauto:keys-used:",
           "secauto:audit:", "secauto:quota:", "secauto:quota-owner:")


async def test_retention_every_key_bounded_or_expiring(tmp_path: Path, redis_url: str,
                                                       redis_client: redis.asyncio.Redis,
                                                       process_factory: Any) -> None:
    # Short retentions, so the test can also watch records expire and the job index being trimmed.
    retention, dlq_retention, dlq_max = 5, 6, 2
    env = FaultEnv(tmp_path, process_factory, redis_url, "faults-retention")
    cluster = env.cluster
    async with asyncio.timeout(60):
        nodes = await env.start("a", "b", cluster={"job_retention": retention, "dlq_retention": dlq_retention,
                                                   "dlq_max": dlq_max})
        async with Api.open() as api:
            done = await api.submit_batch(nodes[0].url, [
                {"playbook": [mark_step()], "context": env.context(f"keep-{i}"), "tags": ["t1"]} for i in range(6)])
            failed = []
            for i in range(3):  # one after the other: the DLQ cap drops the oldest
                failed.append(await api.submit(nodes[1].url, [{"action": "fail", "message": f"boom {i}"}], {},
                                               max_retries=0))
                await wait_jobs(redis_client, failed[-1:], statuses=("failed",), timeout=10)
            delayed = await api.submit(nodes[0].url, [mark_step()], env.context("delayed"), delay=300)
            status, body, _ = await api.request("DELETE", f"{nodes[0].url}/cluster/jobs/{delayed}")
            assert status == 200, body
            retried = await api.submit(nodes[1].url, [{"action": "fail", "message": "again"}], {}, max_retries=1)
            await wait_jobs(redis_client, done, timeout=20)
            await wait_jobs(redis_client, [retried], statuses=("failed",), timeout=20)
            # The DLQ cap holds: the oldest dead letters (and their records) are gone.
            dlq = [member.decode() for member in await redis_client.zrange(f"secauto:dlq:{cluster}", 0, -1)]
            assert dlq == [failed[2], retried], (dlq, failed, retried)
            assert await get_job(redis_client, failed[0]) is None and await get_job(redis_client, failed[1]) is None

            # A node that dies leaves nothing behind once the leader noticed.
            nodes[1].proc.kill()
            await wait_until(lambda: _node_gone(redis_client, cluster, "b"), timeout=3 * HEARTBEAT + 5,
                             what="node b to be forgotten by the leader")

            problems: list[str] = []
            seen: dict[str, int] = {}
            async for raw_key in redis_client.scan_iter(match="secauto:*", count=500):
                key = raw_key.decode()
                ttl_ms = await redis_client.pttl(key)
                seen[key] = ttl_ms
                if key.startswith("secauto:job:"):
                    job = await get_job(redis_client, key.removeprefix("secauto:job:"))
                    assert job is not None
                    limit = dlq_retention if job["status"] == "failed" else retention
                    if job["status"] in ("completed", "failed", "cancelled") and not 0 < ttl_ms <= limit * 1000:
                        problems.append(f"{key} ({job['status']}) TTL {ttl_ms} ms, want (0, {limit}] s")
                elif key.startswith(f"secauto:nodes:{cluster}:"):
                    if not 0 < ttl_ms <= 3 * HEARTBEAT * 1000:
                        problems.append(f"{key} TTL {ttl_ms} ms, want (0, {3 * HEARTBEAT}] s")
                elif key == f"secauto:leader:{cluster}":
                    if not 0 < ttl_ms <= ELECTION * 1000:
                        problems.append(f"{key} TTL {ttl_ms} ms, want (0, {ELECTION}] s")
                elif key.startswith(BOUNDED):
                    if not key.endswith(f":{cluster}"):
                        problems.append(f"{key}: a bounded key of another cluster?")
                elif ttl_ms < 0:
                    problems.append(f"{key}: no TTL and not a known bounded key")
            assert not problems, problems

            # Completed and dead-lettered jobs keep their records for the retention period only.
            for job_id in done:
                assert 0 < await redis_client.ttl(f"secauto:job:{job_id}") <= retention
            for job_id in dlq:
                assert 0 < await redis_client.ttl(f"secauto:job:{job_id}") <= dlq_retention
            # The bounded keys are bounded by what is live: nothing pending or running is left, and the
            # lost node b is gone from every per-node structure.
            assert await redis_client.zcard(f"secauto:jobs:{cluster}") == 0
            assert await redis_client.zcard(f"secauto:running:{cluster}") == 0
            assert await redis_client.zcard(f"secauto:delayed:{cluster}") == 0
            assert await redis_client.zrange(f"secauto:node-index:{cluster}", 0, -1) == [b"a"]
            for name in ("load", "capacity"):
                fields = await redis_client.hkeys(f"secauto:{name}:{cluster}")
                assert b"b" not in fields, (name, fields)
            tag_counts = await redis_client.hgetall(f"secauto:tag-running:{cluster}")
            assert all(int(value) > 0 for value in tag_counts.values()), tag_counts
            assert await leader_id(redis_client, cluster) == "a"
            assert seen
            from secauto.store.keys import RECENT_MAX

            assert await redis_client.llen(f"secauto:recent:{cluster}") <= RECENT_MAX

            # Once the retention periods passed, the records are gone and the next submission trims the
            # job index to what still exists: nothing grows with the number of jobs ever run.
            await asyncio.sleep(dlq_retention + 0.5)
            every = [*done, *failed, retried, delayed]
            assert [job_id for job_id in every if await get_job(redis_client, job_id) is not None] == []
            last = await api.submit(nodes[0].url, [mark_step()], env.context("last"))
            await wait_jobs(redis_client, [last], timeout=10)
            index = [member.decode() for member in await redis_client.zrange(f"secauto:job-index:{cluster}", 0, -1)]
            assert index == [last], index


async def _node_gone(client: redis.asyncio.Redis, cluster: str, node_id: str) -> bool:
    if await client.exists(f"secauto:nodes:{cluster}:{node_id}"):
        return False
    if await client.zscore(f"secauto:node-index:{cluster}", node_id) is not None:
        return False
    for name in ("load", "capacity"):
        if await client.hexists(f"secauto:{name}:{cluster}", node_id):
            return False
    return True
