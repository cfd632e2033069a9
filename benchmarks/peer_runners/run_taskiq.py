"""taskiq runner: ``RedisStreamBroker`` with ``RedisAsyncResultBackend`` (taskiq-redis), ``task.kiq()``
(no batch API: 50 in flight), then the receiver that ``taskiq worker`` runs (``Receiver`` with
``max_async_tasks=concurrency``, its default thread pool) in this process until every task returned."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from _common import TRACKER, bounded_gather, emit, measure, parse_args, version
from taskiq.receiver import Receiver
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

ARGS = parse_args("taskiq")
broker = RedisStreamBroker(ARGS.redis_url).with_result_backend(
    RedisAsyncResultBackend(ARGS.redis_url, result_ex_time=3600))


@broker.task
async def noop() -> None:
    await TRACKER.body("noop")


@broker.task
async def sleep() -> None:
    await TRACKER.body("sleep")


@broker.task
async def script() -> None:
    await TRACKER.body("script")


async def main() -> None:
    task = {"noop": noop, "sleep": sleep, "script": script}[ARGS.task]
    await broker.startup()  # creates the consumer group before anything is enqueued
    pool = ThreadPoolExecutor()

    async def enqueue(jobs: int) -> None:
        await bounded_gather(jobs, task.kiq)

    async def start_worker() -> tuple[asyncio.Event, asyncio.Task[None]]:
        broker.is_worker_process = True
        receiver = Receiver(broker, executor=pool, max_async_tasks=ARGS.concurrency, run_startup=False)
        finish = asyncio.Event()
        return finish, asyncio.create_task(receiver.listen(finish))

    async def stop_worker(handle: tuple[asyncio.Event, asyncio.Task[None]]) -> None:
        finish, running = handle
        finish.set()
        try:
            await asyncio.wait_for(running, 5)
        except TimeoutError:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    try:
        result = await measure("taskiq", args=ARGS, versions=version("taskiq", "taskiq-redis", "redis"),
                               enqueue_method="task.kiq(), 50 concurrent", enqueue=enqueue,
                               start_worker=start_worker, stop_worker=stop_worker)
    finally:
        await broker.shutdown()
        pool.shutdown(wait=False, cancel_futures=True)
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
