"""arq runner: ``create_pool`` + ``enqueue_job`` (no batch API: 50 in flight), then one ``Worker``
with ``max_jobs=concurrency`` (its default 0.5 s ``poll_delay``) until every task returned."""

from __future__ import annotations

import asyncio
from typing import Any

from _common import TRACKER, bounded_gather, emit, measure, parse_args, version
from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker


async def noop(ctx: dict[str, Any]) -> None:
    await TRACKER.body("noop")


async def sleep(ctx: dict[str, Any]) -> None:
    await TRACKER.body("sleep")


async def script(ctx: dict[str, Any]) -> None:
    await TRACKER.body("script")


async def main() -> None:
    args = parse_args("arq")
    settings = RedisSettings.from_dsn(args.redis_url)
    pool = await create_pool(settings)

    async def enqueue(jobs: int) -> None:
        await bounded_gather(jobs, lambda: pool.enqueue_job(args.task))

    async def start_worker() -> Worker:
        worker = Worker(functions=[noop, sleep, script], redis_settings=settings, max_jobs=args.concurrency,
                        handle_signals=False, keep_result=3600)
        worker.bench_task = asyncio.create_task(worker.async_run())  # type: ignore[attr-defined]
        return worker

    async def stop_worker(worker: Worker) -> None:
        task = worker.bench_task  # type: ignore[attr-defined]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close()

    try:
        result = await measure("arq", args, versions=version("arq", "redis"),
                               enqueue_method="enqueue_job, 50 concurrent", enqueue=enqueue,
                               start_worker=start_worker, stop_worker=stop_worker)
    finally:
        await pool.aclose()
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
