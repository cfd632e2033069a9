"""Issue 4 with real processes: node crashes, pauses, graceful stops, restarts, elections, poison jobs.

Each test starts its own `secauto serve` nodes (process_factory, cleaned up by the fixture) on the
session's redis-server with its own cluster name, and the short timings of tests/support/faults.py
(heartbeat 0.5 s, lease 2 s, election 3 s, retry backoff 0.1 s, shutdown grace 5 s). Job outcomes are
read from the records in Redis; events from a plain redis-py subscriber started before any submission.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from tests.support.faults import (
    FAST_CLUSTER,
    SHUTDOWN_GRACE,
    Api,
    EventRecorder,
    FaultEnv,
    crash_lines,
    get_job,
    leader_id,
    log_lines,
    mark_step,
    outcomes,
    side_effects,
    wait_jobs,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

LEASE = float(FAST_CLUSTER["lease_timeout"])
HEARTBEAT = float(FAST_CLUSTER["heartbeat_interval"])
ELECTION = float(FAST_CLUSTER["election_timeout"])
# actors/reaper.py: the leader reaps every min(lease / 3, heartbeat, 5) seconds.
REAP_INTERVAL = max(0.1, min(LEASE / 3, HEARTBEAT, 5.0))
# A dead node is noticed when its lease expires or its record (TTL 3 heartbeats) is gone, at the next reap.
RECOVERY_BOUND = min(LEASE, 3 * HEARTBEAT) + REAP_INTERVAL
SLACK = 1.0  # scheduling slack on a loaded 2-core machine


def _env(tmp_path: Path, process_factory: Any, redis_url: str, name: str) -> FaultEnv:
    return FaultEnv(tmp_path, process_factory, redis_url, f"faults-{name}")


async def _leader(client: redis.asyncio.Redis, cluster: str) -> str:
    leader: str = await wait_until(lambda: leader_id(client, cluster), timeout=10, what="a leader")
    return leader


async def _all_started(recorder: EventRecorder, job_ids: list[str], timeout: float) -> dict[str, str]:
    """{job id: node id} of each job's latest job.started, once every job has one."""
    def started() -> dict[str, str] | None:
        nodes = {event["job_id"]: event["node_id"] for _, event in recorder.of("job.started")}
        return nodes if all(job_id in nodes for job_id in job_ids) else None
    nodes: dict[str, str] = await wait_until(started, timeout=timeout, what="every job to start")
    return nodes


# ---------------------------------------------------------------------------------------------------
# 1. SIGKILL a node with running jobs
# ---------------------------------------------------------------------------------------------------


async def test_sigkill_node_jobs_complete_once_on_survivor(tmp_path: Path, redis_url: str,
                                                           redis_client: redis.asyncio.Redis,
                                                           process_factory: Any) -> None:
    env = _env(tmp_path, process_factory, redis_url, "kill9")
    async with asyncio.timeout(60):
        await env.start("a", "b")
        async with EventRecorder(redis_client, env.cluster) as recorder, Api.open() as api:
            leader = await _leader(redis_client, env.cluster)
            # Kill the node that is not the leader: recovery is then bounded by lease/heartbeats + reap
            # (leader death adds an election, tested below).
            victim, survivor = (env.nodes["b"], env.nodes["a"]) if leader == "a" else (env.nodes["a"], env.nodes["b"])
            job_ids = [await api.submit(survivor.url, [mark_step(seconds=3)], env.context(f"kill9-{i}"))
                       for i in range(6)]
            placement = await _all_started(recorder, job_ids, timeout=10)
            on_victim = [job_id for job_id, node in placement.items() if node == victim.name]
            assert on_victim, f"precondition: the victim runs none of the jobs {placement}"

            assert victim.proc.kill() == -signal.SIGKILL
            killed_at = time.monotonic()
            jobs = await wait_jobs(redis_client, job_ids, timeout=30)
            await asyncio.sleep(0.5)  # let any duplicate job.completed arrive

        for job_id, job in jobs.items():
            if job_id in on_victim:
                assert outcomes(job) == ["node_lost", "completed"], job["attempts"]
                lost, done = job["attempts"]
                assert lost["node"] == victim.name and done["node"] == survivor.name
                assert job["assigned_to"] == survivor.name and job["attempt"] == 2 and job["node_losses"] == 1
                assert job["context"]["ran"]["node_pid"] == survivor.proc.pid
            else:
                assert outcomes(job) == ["completed"] and job["assigned_to"] == survivor.name, job["attempts"]
        completions = recorder.count("job.completed")
        assert completions == dict.fromkeys(job_ids, 1), completions
        assert all(event["node_id"] == survivor.name for _, event in recorder.of("job.completed"))

        # Recovery within the configured bound, measured from the kill to each job.retrying.
        delays = {}
        for job_id in on_victim:
            retried = recorder.of("job.retrying", job_id)
            assert len(retried) == 1, retried
            assert retried[0][1]["reason"] == "node_lost"
            delays[job_id] = retried[0][0] - killed_at
        assert max(delays.values()) <= RECOVERY_BOUND + SLACK, (delays, RECOVERY_BOUND)
        # ... and as the leader reports it (recovery_s: from the lost node's last sign of life).
        reported = [line["recovery_s"] for line in log_lines(survivor.proc)
                    if "orphaned job(s)" in line["message"] and "recovery_s" in line]
        assert reported, "the leader logged no 'recovered N orphaned job(s)' line with recovery_s"
        assert max(reported) <= RECOVERY_BOUND + SLACK, reported
        assert survivor.proc.is_running and not crash_lines(survivor.proc), crash_lines(survivor.proc)


# ---------------------------------------------------------------------------------------------------
# 2. SIGSTOP a node past its lease, then SIGCONT: the woken node cannot change the job
# ---------------------------------------------------------------------------------------------------


async def test_sigstop_past_lease_woken_node_cannot_change_job(tmp_path: Path, redis_url: str,
                                                               redis_client: redis.asyncio.Redis,
                                                               process_factory: Any) -> None:
    env = _env(tmp_path, process_factory, redis_url, "sigstop")
    async with asyncio.timeout(60):
        await env.start("a", "b")
        async with EventRecorder(redis_client, env.cluster) as recorder, Api.open() as api:
            await _leader(redis_client, env.cluster)
            seconds = LEASE + 1.5  # the job runs longer than its lease
            job_id = await api.submit(env.nodes["a"].url, [mark_step(seconds=seconds)], env.context("paused"))
            _, started = await recorder.wait_for(lambda e: e["type"] == "job.started" and e["job_id"] == job_id,
                                                 timeout=10, what="job.started")
            victim = env.nodes[started["node_id"]]
            survivor = next(node for node in env.nodes.values() if node is not victim)

            # A live node keeps its job past the lease: renewals, not run time, decide.
            await asyncio.sleep(LEASE + 0.5)
            job = await get_job(redis_client, job_id)
            assert job is not None and job["status"] == "running" and job["attempt"] == 1, job
            assert not recorder.of("job.retrying", job_id)

            victim.proc.stop_signal(signal.SIGSTOP)
            try:
                jobs = await wait_jobs(redis_client, [job_id], timeout=25)
                final = jobs[job_id]
                assert outcomes(final) == ["node_lost", "completed"], final["attempts"]
                assert final["assigned_to"] == survivor.name and final["attempt"] == 2
                assert final["context"]["ran"]["node_pid"] == survivor.proc.pid
                # The paused node's script is not frozen with it (own session): it ran to its end too.
                await wait_until(lambda: {pid for _, pid, _ in side_effects(env.out)} >= {victim.proc.pid,
                                                                                          survivor.proc.pid},
                                 timeout=5, what="both executions' side effects")
                before = await redis_client.get(f"secauto:job:{job_id}")
            finally:
                victim.proc.cont()

            def refused() -> bool:
                return any(line.get("job_id") == job_id and line["level"] in ("warning", "error")
                           and ("refused" in line["message"] or "lease lost" in line["message"])
                           for line in log_lines(victim.proc))

            await wait_until(refused, timeout=10, what="the woken node to log a refused write or lease-lost stop")
            await asyncio.sleep(1.0)  # give a stale write every chance to land
            assert await redis_client.get(f"secauto:job:{job_id}") == before
            completed = recorder.of("job.completed", job_id)
            assert [event["node_id"] for _, event in completed] == [survivor.name], completed
            # The woken node carries on normally: no actor crashed over the refused write.
            for node in (victim, survivor):
                assert node.proc.is_running and not crash_lines(node.proc), (node.name, crash_lines(node.proc))


# ---------------------------------------------------------------------------------------------------
# 2b. Lease renewals racing attempt ends (found by scripts/chaos)
# ---------------------------------------------------------------------------------------------------


async def test_lease_renewal_racing_finishes_crashes_nothing(tmp_path: Path, redis_url: str,
                                                             redis_client: redis.asyncio.Redis,
                                                             process_factory: Any) -> None:
    """Under steady load, a lease renewal often runs while attempt ends are being written. A job whose end
    was just recorded is "not renewable" any more; that must not stop (cancel) the attempt that is still
    waiting for its write's answer, nor crash the executor, nor make the node recover its own jobs."""
    env = _env(tmp_path, process_factory, redis_url, "renew-race")
    async with asyncio.timeout(60):
        # A short lease (renewal every 0.15 s) and many short jobs: renewals and finishes overlap a lot.
        (node,) = await env.start("a", cluster={"max_concurrent_jobs": 16, "lease_timeout": 0.45})
        async with Api.open() as api:
            job_ids = []
            for _ in range(4):
                job_ids += await api.submit_batch(node.url, [
                    {"playbook": [{"action": "sleep", "seconds": 0.05}], "context": {}} for _ in range(300)])
            try:
                jobs = await wait_jobs(redis_client, job_ids, statuses=("completed", "failed"), timeout=40)
            except AssertionError as exc:  # report the cause (below) before the symptom
                unfinished: AssertionError | None = exc
            else:
                unfinished = None
        assert node.proc.is_running, node.proc.log_tail()
        assert not crash_lines(node.proc), crash_lines(node.proc)[:5]
        assert unfinished is None, unfinished
        # (A lease this short may expire on a loaded machine: a retry is fine, a second completion is not.)
        assert all(job["status"] == "completed" and outcomes(job).count("completed") == 1
                   for job in jobs.values()), [
            [(attempt["outcome"], attempt.get("error")) for attempt in job["attempts"]]
            for job in jobs.values() if outcomes(job) != ["completed"]][:3]
        assert not [line for line in log_lines(node.proc) if "previous run" in line["message"]]


# ---------------------------------------------------------------------------------------------------
# 3. SIGTERM a busy node: exit 0 within the grace, hand back, release leadership, remove the record
# ---------------------------------------------------------------------------------------------------


async def test_sigterm_busy_node_hands_back_and_leaves_cleanly(tmp_path: Path, redis_url: str,
                                                               redis_client: redis.asyncio.Redis,
                                                               process_factory: Any) -> None:
    env = _env(tmp_path, process_factory, redis_url, "sigterm")
    gate = tmp_path / "gate"
    gate.touch()
    async with asyncio.timeout(60):
        (victim,) = await env.start("a", cluster={"max_concurrent_jobs": 6})
        async with EventRecorder(redis_client, env.cluster) as recorder, Api.open() as api:
            assert await _leader(redis_client, env.cluster) == "a"
            gated = [await api.submit(victim.url, [mark_step(gate=str(gate))], env.context(f"gated-{i}"))
                     for i in range(4)]
            short = [await api.submit(victim.url, [mark_step(seconds=2)], env.context(f"short-{i}"))
                     for i in range(2)]
            placement = await _all_started(recorder, gated + short, timeout=10)
            assert set(placement.values()) == {"a"}
            (survivor,) = await env.start("b", cluster={"max_concurrent_jobs": 6})
            await wait_until(lambda: redis_client.exists(f"secauto:nodes:{env.cluster}:b"), timeout=5,
                             what="b's node record")

            sent = time.monotonic()
            code = await asyncio.to_thread(victim.proc.terminate, SHUTDOWN_GRACE + 10)
            exited = time.monotonic()
            # Right after the exit: no node record, no leader lease held by the stopped node.
            record_left = await redis_client.exists(f"secauto:nodes:{env.cluster}:a")
            lease_after = await leader_id(redis_client, env.cluster)
            assert code == 0, victim.proc.log_tail()
            assert exited - sent <= SHUTDOWN_GRACE + 3, exited - sent
            assert record_left == 0
            assert lease_after != "a"
            assert await redis_client.zscore(f"secauto:node-index:{env.cluster}", "a") is None

            # The short jobs finished during the grace period on the stopping node.
            for job_id in short:
                job = await get_job(redis_client, job_id)
                assert job is not None and job["status"] == "completed" and outcomes(job) == ["completed"], job
                assert job["assigned_to"] == "a"
            # The gated ones were handed back (not a failed attempt) and the other node has them.
            for job_id in gated:
                job = await get_job(redis_client, job_id)
                assert job is not None and outcomes(job)[:1] == ["handed_back"], job
                assert job["retry_count"] == 0 and job["node_losses"] == 0, job
            gate.unlink()
            jobs = await wait_jobs(redis_client, gated, timeout=15)
            for job in jobs.values():
                assert outcomes(job) == ["handed_back", "completed"], job["attempts"]
                assert job["attempts"][1]["node"] == "b" and job["retry_count"] == 0
                assert job["context"]["ran"]["node_pid"] == survivor.proc.pid
            # Leadership moved at once (released), not after the lease ran out.
            at, _ = await recorder.wait_for(lambda e: e["type"] == "leader.changed" and e.get("node_id") == "b",
                                            timeout=5, what="leader.changed to b")
            assert at - exited < 1.0, f"b led {at - exited:.2f}s after a's exit (lease would be {LEASE * 1.0}s)"
            left = recorder.of("node.left")
            assert [event["node_id"] for _, event in left] == ["a"]
            # The handed-back jobs were claimed without waiting for any timeout.
            for job_id in gated:
                starts = [at for at, event in recorder.of("job.started", job_id) if event["node_id"] == "b"]
                assert starts and starts[0] - exited < 1.0, (job_id, starts, exited)
            assert recorder.count("job.completed") == dict.fromkeys(gated + short, 1)
            for node in (victim, survivor):
                assert not crash_lines(node.proc), (node.name, crash_lines(node.proc))


# ---------------------------------------------------------------------------------------------------
# 4. Restart under the same node_id after SIGKILL: its old jobs are recovered at once
# ---------------------------------------------------------------------------------------------------


async def test_restart_same_node_id_recovers_previous_jobs_at_once(tmp_path: Path, redis_url: str,
                                                                    redis_client: redis.asyncio.Redis,
                                                                    process_factory: Any) -> None:
    env = _env(tmp_path, process_factory, redis_url, "restart")
    # Long liveness bounds, so "at once" is clearly distinguishable from "after the lease / heartbeats".
    slow = {"lease_timeout": 30, "heartbeat_interval": 10, "election_timeout": 6, "retry_avoid": 0}
    bound = min(30, 3 * 10)
    async with asyncio.timeout(60):
        (node,) = await env.start("a", cluster=slow)
        async with EventRecorder(redis_client, env.cluster) as recorder, Api.open() as api:
            job_ids = [await api.submit(node.url, [mark_step(seconds=1.5)], env.context(f"restart-{i}"))
                       for i in range(3)]
            await _all_started(recorder, job_ids, timeout=10)
            old_pid = node.proc.pid
            node.proc.kill()
            killed_at = time.monotonic()
            await env.restart(node)
            ready_at = time.monotonic()
            jobs = await wait_jobs(redis_client, job_ids, timeout=20)
        for job in jobs.values():
            assert outcomes(job) == ["node_lost", "completed"], job["attempts"]
            assert "node restarted" in (job["attempts"][0].get("error") or ""), job["attempts"][0]
            assert job["context"]["ran"]["node_pid"] == node.proc.pid != old_pid
        recovered = [at for job_id in job_ids for at, _ in recorder.of("job.retrying", job_id)]
        assert len(recovered) == len(job_ids)
        delay = max(recovered) - killed_at
        # At once: while the node starts (before it even answers HTTP), far below the liveness bound.
        assert delay <= (ready_at - killed_at) + SLACK and delay < bound / 2, (delay, ready_at - killed_at, bound)


# ---------------------------------------------------------------------------------------------------
# 5. Leader election: kill -9 the leader; a paused leader is deposed
# ---------------------------------------------------------------------------------------------------


async def test_leader_killed_new_leader_within_election_timeout(tmp_path: Path, redis_url: str,
                                                                redis_client: redis.asyncio.Redis,
                                                                process_factory: Any) -> None:
    env = _env(tmp_path, process_factory, redis_url, "election")
    async with asyncio.timeout(60):
        await env.start("a", "b", "c")
        async with EventRecorder(redis_client, env.cluster) as recorder, Api.open() as api:
            first = await _leader(redis_client, env.cluster)
            env.nodes[first].proc.kill()
            killed_at = time.monotonic()
            at, event = await recorder.wait_for(lambda e: e["type"] == "leader.changed" and e.get("node_id") != first,
                                                timeout=ELECTION + 2, what="a new leader")
            assert at - killed_at <= ELECTION, at - killed_at
            second = event["node_id"]
            survivors = [node for node in env.nodes.values() if node.name != first]

            async def agreed(nodes: list[Any], leader: str) -> bool:
                views = [await api.cluster(node.url) for node in nodes]
                return all(view["leader"] == leader for view in views)

            await wait_until(lambda: agreed(survivors, second), timeout=ELECTION, what="GET /cluster to name it")
            assert time.monotonic() - killed_at <= ELECTION + SLACK

            # A leader paused past its lease is replaced; once it wakes it knows it was deposed.
            paused = env.nodes[second]
            third = next(node for node in survivors if node is not paused)
            paused.proc.stop_signal(signal.SIGSTOP)
            try:
                await recorder.wait_for(lambda e: e["type"] == "leader.changed" and e.get("node_id") == third.name,
                                        timeout=ELECTION + 2, what="the third node to lead")
            finally:
                paused.proc.cont()
            await wait_until(lambda: any("lost cluster leadership" in line["message"]
                                         for line in log_lines(paused.proc)),
                             timeout=ELECTION, what="the woken leader to notice it was deposed")
            await wait_until(lambda: agreed(survivors, third.name), timeout=ELECTION, what="both to name the third")
            await asyncio.sleep(ELECTION / 2)  # no flapping back
            assert await leader_id(redis_client, env.cluster) == third.name
            changes = [event["node_id"] for _, event in recorder.of("leader.changed")]
            assert changes == [second, third.name], changes
            for node in survivors:
                assert not crash_lines(node.proc), (node.name, crash_lines(node.proc))


# ---------------------------------------------------------------------------------------------------
# 6. Poison job: quarantined after 2 lost nodes, the third node lives
# ---------------------------------------------------------------------------------------------------


async def test_poison_job_quarantined_after_two_node_losses(tmp_path: Path, redis_url: str,
                                                            redis_client: redis.asyncio.Redis,
                                                            process_factory: Any) -> None:
    env = _env(tmp_path, process_factory, redis_url, "poison")
    async with asyncio.timeout(60):
        await env.start("a", "b", "c")
        async with EventRecorder(redis_client, env.cluster) as recorder, Api.open() as api:
            await _leader(redis_client, env.cluster)
            job_id = await api.submit(env.nodes["a"].url, [{"action": "run_script", "script": "suicide"}],
                                      env.context("poison"), max_retries=5)
            jobs = await wait_jobs(redis_client, [job_id], statuses=("failed", "completed"), timeout=30)
            job = jobs[job_id]
            assert job["status"] == "failed" and job["reason"] == "poison", job
            assert job["node_losses"] == 2 and outcomes(job) == ["node_lost", "node_lost"], job["attempts"]
            killed = [attempt["node"] for attempt in job["attempts"]]
            assert len(set(killed)) == 2, killed
            await asyncio.sleep(2 * REAP_INTERVAL + 1)  # nothing else happens to the job or the cluster
            dead = sorted(node.name for node in env.nodes.values() if not node.proc.is_running)
            assert dead == sorted(killed), (dead, killed)
            (alive,) = [node for node in env.nodes.values() if node.proc.is_running]
            assert len(side_effects(env.out)) == 2  # it ran exactly twice
            status, body, _ = await api.request("GET", f"{alive.url}/health/live")
            assert status == 200, body
            assert not crash_lines(alive.proc), crash_lines(alive.proc)
            status, body, _ = await api.request("GET", f"{alive.url}/cluster/dlq")
            assert status == 200, body
            listed = [entry for entry in body["dlq"]["jobs"] if entry["id"] == job_id]
            assert listed and listed[0]["reason"] == "poison", body
            dead_lettered = recorder.of("job.dead_lettered", job_id)
            assert len(dead_lettered) == 1 and dead_lettered[0][1]["reason"] == "poison", dead_lettered
            assert not recorder.of("job.completed")
            # The DLQ is manageable: delete the quarantined job.
            status, body, _ = await api.request("DELETE", f"{alive.url}/cluster/dlq/{job_id}")
            assert status == 200, body
            assert await get_job(redis_client, job_id) is None
            assert await redis_client.zcard(f"secauto:dlq:{env.cluster}") == 0


def test_scripts_are_executable_python() -> None:
    """The scripts in tests/support/faults.py are valid Python (a syntax error would look like a node bug)."""
    from tests.support.faults import MARK_SCRIPT, SUICIDE_SCRIPT

    for source in (MARK_SCRIPT, SUICIDE_SCRIPT):
        compile(source, "<script>", "exec")
