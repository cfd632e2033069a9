"""SAQ runner: ``Queue.from_url`` + ``queue.enqueue`` (no batch API: 50 in flight), then one
``Worker(queue, functions, concurrency=...)`` until every task returned."""

from __future__ import annotations

import asyncio
from typing import Any

from _common import TRACKER, bounded_gather, emit, measure, parse_args, version
from saq import Queue, Worker


async def noop(ctx: dict[str, Any]) -> None:
    await TRACKER.body("noop")


async def sleep(ctx: dict[str, Any]) -> None:
    await TRACKER.body("sleep")


async def script(ctx: dict[str, Any]) -> None:
    await TRACKER.body("script")


async def main() -> None:
    args = parse_args("saq")
    queue = Queue.from_url(args.redis_url)
    await queue.connect()

    async def enqueue(jobs: int) -> None:
        await bounded_gather(jobs, lambda: queue.enqueue(args.task))

    async def start_worker() -> tuple[Worker, asyncio.Task[None]]:
        worker = Worker(queue, functions=[noop, sleep, script], concurrency=args.concurrency)
        return worker, asyncio.create_task(worker.start())

    async def stop_worker(handle: tuple[Worker, asyncio.Task[None]]) -> None:
        worker, task = handle
        await worker.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    try:
        result = await measure("saq", args, versions=version("saq", "redis"),
                               enqueue_method="queue.enqueue, 50 concurrent", enqueue=enqueue,
                               start_worker=start_worker, stop_worker=stop_worker)
    finally:
        await queue.disconnect()
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
