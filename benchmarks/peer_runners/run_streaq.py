"""streaQ runner: ``Worker`` + ``@worker.task()``, ``worker.enqueue_many`` (its pipelined batch
enqueue, 1000 per call), then ``worker.run_async()`` with ``concurrency=...`` until every task returned."""

from __future__ import annotations

import asyncio

from _common import TRACKER, emit, measure, parse_args, version
from streaq import Worker

ARGS = parse_args("streaq")
worker = Worker(redis_url=ARGS.redis_url, concurrency=ARGS.concurrency, handle_signals=False)


@worker.task()
async def noop() -> None:
    await TRACKER.body("noop")


@worker.task()
async def sleep() -> None:
    await TRACKER.body("sleep")


@worker.task()
async def script() -> None:
    await TRACKER.body("script")


async def main() -> None:
    task = {"noop": noop, "sleep": sleep, "script": script}[ARGS.task]

    async def enqueue(jobs: int) -> None:
        async with worker:
            for start in range(0, jobs, 1000):
                await worker.enqueue_many([task.enqueue() for _ in range(min(1000, jobs - start))])

    async def start_worker() -> asyncio.Task[None]:
        return asyncio.create_task(worker.run_async())

    async def stop_worker(running: asyncio.Task[None]) -> None:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    result = await measure("streaq", args=ARGS, versions=version("streaq", "coredis"),
                           enqueue_method="enqueue_many (pipelined), 1000 per call", enqueue=enqueue,
                           start_worker=start_worker, stop_worker=stop_worker)
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
