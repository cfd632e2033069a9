"""SubmitWriter: concurrent submissions share script calls, failures reach every waiting request, and a
stop leaves nobody waiting (issue 9, point 4). The store is a stand-in that records its calls; the real
script is covered by the API and integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from actors.core import ActorDeadError
from actors.submit_writer import MAX_JOBS_PER_CALL, SubmitWriter
from secauto.metrics import NodeMetrics
from secauto.models import Event, Job, new_job_id, utc_now
from secauto.store.jobs import Quota, QuotaExceeded


class RecordingQueue:
    """Stands in for JobQueue.submit: records each call; ``gate`` holds calls until released."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[int], int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: Exception | None = None
        self.quotas: list[Quota | None] = []  # per call
        self.full: set[str] = set()  # key names whose quota refuses
        self.live: dict[str, int] = {}  # jobs stored per quota'd key: refuses what would pass max_pending
        self.stale_by = 0  # a refusal under-reports the live count by this much (another node's jobs)

    async def submit(self, jobs: Sequence[Job], events: Sequence[Event], *, delays_ms: Sequence[int] | None = None,
                     durable_replicas: int = 0, durable_timeout_ms: int = 0, quota: Quota | None = None) -> int:
        assert [event.job_id for event in events] == [job.id for job in jobs]
        self.calls.append(([job.id for job in jobs], list(delays_ms or []), durable_replicas))
        self.quotas.append(quota)
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        if quota is not None and quota.key_name in self.full:
            raise QuotaExceeded(quota.max_pending, quota.max_pending)
        if quota is not None:
            live = self.live.get(quota.key_name, 0)
            if live + len(jobs) > quota.max_pending:
                raise QuotaExceeded(live - self.stale_by, quota.max_pending)
            self.live[quota.key_name] = live + len(jobs)
        return len(jobs)


def job() -> Job:
    return Job(id=new_job_id(), max_retries=0, priority=0, submitted_at=utc_now(), submitted_to="n1")


@pytest.fixture
async def writer() -> AsyncIterator[tuple[SubmitWriter, RecordingQueue, asyncio.Task[None]]]:
    queue = RecordingQueue()
    metrics = NodeMetrics("n1")
    submit_writer = SubmitWriter(queue, "n1", metrics, durable_replicas=2, durable_timeout_ms=500)  # type: ignore[arg-type]
    task = asyncio.create_task(submit_writer.run())
    yield submit_writer, queue, task
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_one_submission_is_one_call(writer: Any) -> None:
    submit_writer, queue, _ = writer
    first = job()
    await submit_writer.add([first], [250])
    assert queue.calls == [([first.id], [250], 2)]


async def test_submissions_arriving_during_a_call_share_the_next_one(writer: Any) -> None:
    submit_writer, queue, _ = writer
    queue.gate.clear()
    first = submit_writer.add([job()])
    await asyncio.sleep(0)  # the first call is in flight
    later = [submit_writer.add([job()], [index]) for index in range(15)]
    queue.gate.set()
    await asyncio.gather(first, *later)
    assert [len(ids) for ids, _, _ in queue.calls] == [1, 15]
    assert queue.calls[1][1] == list(range(15))  # each job keeps its own delay


async def test_a_call_never_exceeds_the_cap_nor_splits_a_submission(writer: Any) -> None:
    submit_writer, queue, _ = writer
    queue.gate.clear()
    first = submit_writer.add([job()])
    await asyncio.sleep(0)
    big = [submit_writer.add([job() for _ in range(400)]) for _ in range(3)]
    queue.gate.set()
    await asyncio.gather(first, *big)
    sizes = [len(ids) for ids, _, _ in queue.calls]
    assert sizes == [1, 800, 400] and max(sizes) <= MAX_JOBS_PER_CALL


async def test_a_failed_call_fails_every_submission_in_it(writer: Any) -> None:
    submit_writer, queue, _ = writer
    queue.gate.clear()
    first = submit_writer.add([job()])
    await asyncio.sleep(0)
    queue.error = RedisConnectionError("down")
    waiting = [submit_writer.add([job()]) for _ in range(3)]
    queue.gate.set()
    results = await asyncio.gather(first, *waiting, return_exceptions=True)
    assert all(isinstance(result, RedisConnectionError) for result in results)
    queue.error = None
    await submit_writer.add([job()])  # the writer goes on after a failure
    assert len(queue.calls) == 3


async def test_stopping_fails_what_is_not_stored(writer: Any) -> None:
    submit_writer, queue, task = writer
    queue.gate.clear()
    in_flight = submit_writer.add([job()])
    await asyncio.sleep(0)
    queued = submit_writer.add([job()])
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for future in (in_flight, queued):
        with pytest.raises(ActorDeadError):
            await future


async def test_a_stopped_writer_refuses_new_submissions_until_it_runs_again(writer: Any) -> None:
    """The API calls add() directly: once the dispatcher stopped its writer, a submission is refused at
    once (503 for the client) rather than left waiting; a restarted writer takes them again."""
    submit_writer, queue, task = writer
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    with pytest.raises(ActorDeadError):
        submit_writer.add([job()])
    restarted = asyncio.create_task(submit_writer.run())
    try:
        await asyncio.sleep(0)
        await submit_writer.add([job()])
        assert len(queue.calls) == 1
    finally:
        restarted.cancel()
        await asyncio.gather(restarted, return_exceptions=True)


async def test_a_request_that_gave_up_does_not_break_the_others(writer: Any) -> None:
    submit_writer, queue, _ = writer
    queue.gate.clear()
    first = submit_writer.add([job()])
    await asyncio.sleep(0)
    abandoned = submit_writer.add([job()])
    kept = submit_writer.add([job()])
    abandoned.cancel()  # its request timed out
    queue.gate.set()
    await asyncio.gather(first, kept)
    assert [len(ids) for ids, _, _ in queue.calls] == [1, 2]  # already taken in: it is stored all the same


async def test_quota_submissions_share_calls_only_with_the_same_quota_and_only_the_refused_fails(
        writer: Any) -> None:
    submit_writer, queue, _ = writer
    queue.gate.clear()
    first = submit_writer.add([job()])
    await asyncio.sleep(0)  # the first call is in flight; the rest queue up behind it
    bounded, full = Quota(key_name="ci", max_pending=5), Quota(key_name="flood", max_pending=1)
    queue.full.add("flood")
    plain = [submit_writer.add([job()]) for _ in range(3)]
    quota_ok = submit_writer.add([job(), job()], quota=bounded)
    refused = submit_writer.add([job()], quota=full)
    more = [submit_writer.add([job()]) for _ in range(2)]
    queue.gate.set()
    results = await asyncio.gather(first, *plain, quota_ok, refused, *more, return_exceptions=True)
    assert [len(ids) for ids, _, _ in queue.calls] == [1, 3, 2, 1, 2]  # never across quotas
    assert queue.quotas == [None, None, bounded, full, None]
    assert isinstance(results[5], QuotaExceeded)
    assert all(result is None for index, result in enumerate(results) if index != 5)
async def test_submissions_of_one_quota_share_a_call_and_a_refused_call_is_split(writer: Any) -> None:
    """Far from the quota, a key's concurrent submissions share calls like any others; when a shared
    call is refused, exactly those that do not fit (in order) fail and the others are stored."""
    submit_writer, queue, _ = writer
    quota = Quota(key_name="ci", max_pending=5)
    queue.gate.clear()
    first = submit_writer.add([job()], quota=quota)
    await asyncio.sleep(0)  # the first call is in flight
    fitting = [submit_writer.add([job()], quota=quota) for _ in range(2)]
    queue.gate.set()
    await asyncio.gather(first, *fitting)
    assert [len(ids) for ids, _, _ in queue.calls] == [1, 2]  # 3 of 5 used
    queue.gate.clear()
    head = submit_writer.add([job()], quota=quota)
    await asyncio.sleep(0)
    rest = [submit_writer.add([job()], quota=quota), submit_writer.add([job(), job()], quota=quota),
            submit_writer.add([job()], quota=quota)]
    queue.gate.set()
    results = await asyncio.gather(head, *rest, return_exceptions=True)
    # head fits (4 of 5); the next three together do not: the refusal says 4 of 5 are live, so the
    # first (1 job) goes in one more call and the others fail without a call of their own
    assert [len(ids) for ids, _, _ in queue.calls][2:] == [1, 4, 1]
    assert queue.calls[-1][0] == queue.calls[-2][0][:1]
    assert results[:2] == [None, None]
    assert all(isinstance(result, QuotaExceeded) for result in results[2:])
    assert queue.live["ci"] == 5


async def test_when_the_count_moved_after_a_refusal_each_submission_goes_alone(writer: Any) -> None:
    """The refusal's live count is already old when the writer acts on it (another node's jobs): if the
    call of the submissions that seemed to fit is refused too, each goes alone, in order."""
    submit_writer, queue, _ = writer
    quota = Quota(key_name="ci", max_pending=3)
    queue.live["ci"], queue.stale_by = 2, 1  # 2 live, refusals say 1
    queue.gate.clear()
    head = submit_writer.add([job()])  # no quota: holds the writer while the others queue up
    await asyncio.sleep(0)
    rest = [submit_writer.add([job()], quota=quota) for _ in range(3)]
    queue.gate.set()
    results = await asyncio.gather(head, *rest, return_exceptions=True)
    # 3 together refused; "1 live" lets 2 try together: refused; then alone: the first fits, the second not
    assert [len(ids) for ids, _, _ in queue.calls] == [1, 3, 2, 1, 1]
    assert results[:2] == [None, None] and all(isinstance(r, QuotaExceeded) for r in results[2:])
    assert queue.live["ci"] == 3


async def test_a_submission_with_dependencies_has_a_call_of_its_own(writer: Any) -> None:
    """The submit script refuses a whole call when a dependency is unknown: a submission with
    dependencies must not share a call, or its refusal would reach the submissions beside it."""
    submit_writer, queue, _ = writer
    queue.gate.clear()
    first = submit_writer.add([job()])
    await asyncio.sleep(0)  # the first call is in flight
    dependent = job()
    dependent.depends_on, dependent.parent_list = ["job-x"], "job-x"
    before = [submit_writer.add([job()]) for _ in range(3)]
    alone = submit_writer.add([dependent])
    after = [submit_writer.add([job()]) for _ in range(2)]
    queue.gate.set()
    await asyncio.gather(first, *before, alone, *after)
    assert [len(ids) for ids, _, _ in queue.calls] == [1, 3, 1, 2]
    assert queue.calls[2][0] == [dependent.id]


async def test_a_submission_not_stored_in_time_answers_503_and_the_writer_goes_on(writer: Any) -> None:
    """store_jobs bounds the wait (AskTimeoutError: 503 with Retry-After); the writer later finds the
    request's future done and skips it, and stores what comes next."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from actors.core import AskTimeoutError
    from secauto.api.cluster import store_jobs
    from secauto.api.state import METRICS, SUBMISSIONS

    submit_writer, queue, _ = writer
    queue.gate.clear()
    app = web.Application()
    app[SUBMISSIONS] = submit_writer
    app[METRICS] = NodeMetrics("n1")
    request = make_mocked_request("POST", "/cluster/jobs", app=app)
    with pytest.raises(AskTimeoutError, match=r"not stored within 0\.05s"):
        await store_jobs(request, [job()], [0], timeout=0.05)
    queue.gate.set()
    await store_jobs(request, [job()], [0], timeout=5.0)
    assert [len(ids) for ids, _, _ in queue.calls] == [1, 1]
