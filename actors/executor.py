"""ExecutorActor: runs claimed jobs, keeps their leases alive and records their results.

Each job runs as an aiojobs job under its timeout (the job's ``timeout`` or ``cluster.job_timeout``).
Leases of all running jobs are renewed in one batched call every ``lease_timeout / 3``; a job whose
lease was lost (taken over after this node was presumed dead, or cancelled) is stopped at once and its
result is not written. Results are written by a fenced Lua script, so a stale attempt can never
overwrite the outcome of a newer one. If Redis is unreachable when a job ends, the write is retried
with backoff for as long as the attempt may still own the job.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiojobs
from loguru import logger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actors.context import NodeContext
from actors.core import Actor
from actors.messages import Drain, ExecutorStats, GetStats, JobDone, JobsFinished, RenewLeases, RunJobs
from secauto.engine import PlaybookInvalid, run_playbook
from secauto.models import Job, make_event, utc_now


class ExecutorActor(Actor):
    def __init__(self, ctx: NodeContext, dispatcher_name: str = "dispatcher") -> None:
        self.ctx = ctx
        self.dispatcher_name = dispatcher_name
        self.running: dict[str, tuple[Job, aiojobs.Job[None]]] = {}
        self.completed = 0
        self.failed = 0
        self._scheduler: aiojobs.Scheduler | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.log = logger.bind(component="executor", node_id=ctx.node_id)

    async def on_start(self) -> None:
        # The dispatcher enforces capacity; the scheduler only tracks and closes the job tasks.
        self._scheduler = aiojobs.Scheduler(limit=None, pending_limit=0, close_timeout=1.0)
        interval = self.ctx.settings.config.cluster.lease_timeout / 3
        self.start_timer("renew", interval, RenewLeases())

    async def on_stop(self) -> None:
        if self._scheduler is not None:
            # Cancels what still runs; their leases expire and the leader requeues them.
            await self._scheduler.close()
            self._scheduler = None

    def stats(self) -> ExecutorStats:
        return ExecutorStats(running=len(self.running), completed=self.completed, failed=self.failed,
                             capacity=self.ctx.capacity)

    async def receive(self, message: Any) -> Any:
        match message:
            case RunJobs(jobs=jobs):
                for job in jobs:
                    await self._start(job)
            case JobDone(job_id=job_id, status=status):
                self.running.pop(job_id, None)
                if status == "completed":
                    self.completed += 1
                elif status == "failed":
                    self.failed += 1
                if not self.running:
                    self._idle.set()
                self.system.get(self.dispatcher_name).tell(JobsFinished(1))
            case RenewLeases():
                await self._renew()
            case GetStats():
                return self.stats()
            case Drain(grace=grace):
                return await self._drain(grace)
            case _:
                raise TypeError(f"executor got an unexpected message {message!r}")
        return None

    async def _start(self, job: Job) -> None:
        assert self._scheduler is not None
        self._idle.clear()
        task = await self._scheduler.spawn(self._run(job))
        self.running[job.id] = (job, task)

    async def _renew(self) -> None:
        if not self.running:
            return
        attempts = {job_id: job.attempt for job_id, (job, _) in self.running.items()}
        try:
            lost = await self.ctx.queue.renew(self.ctx.node_id, attempts, self.ctx.lease_ms)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self.log.warning("lease renewal failed, retrying on the next tick: {}", exc)
            return
        for job_id in lost:
            entry = self.running.get(job_id)
            if entry is not None:
                self.log.bind(job_id=job_id).warning("lease lost (job finished, cancelled or taken over); "
                                                     "stopping this attempt")
                await entry[1].close()

    async def _drain(self, grace: float) -> int:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace)
        except TimeoutError:
            self.log.warning("{} job(s) still running after the {:.0f}s grace period", len(self.running), grace)
        return len(self.running)

    async def _run(self, job: Job) -> None:
        """One attempt of ``job``: run the playbook, then write the outcome (fenced).

        Cancellation (lease lost, shutdown) propagates without writing anything: the job's lease runs
        out and the leader requeues it.
        """
        log = self.log.bind(job_id=job.id)
        timeout = job.timeout or self.ctx.settings.config.cluster.job_timeout
        started = time.monotonic()
        status = "abandoned"
        try:
            log.info("Job started (attempt {})", job.attempt)
            try:
                outcome = await asyncio.wait_for(
                    run_playbook(job.playbook, job.context, self.ctx.engine, job_id=job.id), timeout=timeout)
            except TimeoutError:
                job.status, job.error = "failed", f"job timed out after {timeout:g}s"
            except PlaybookInvalid as exc:
                job.status, job.error = "failed", f"invalid playbook: {exc}"
            else:
                job.status = "completed" if outcome.success else "failed"
                job.error = outcome.error
                job.results = list(outcome.results)
                job.context = outcome.context
            job.completed_at = utc_now()
            written = await self._record(job)
            status = job.status if written else "abandoned"
            duration = time.monotonic() - started
            if written:
                log.info("Job {} in {:.3f}s", job.status, duration)
            else:
                log.warning("result refused: this node no longer holds attempt {}", job.attempt)
        except Exception:
            log.exception("job attempt crashed; its lease will expire and the leader will retry it")
        finally:
            if self.ref.is_alive:
                self.ref.tell(JobDone(job.id, status))

    async def _record(self, job: Job) -> bool:
        """Write the final record, retrying through Redis outages while the lease may still be ours."""
        event = make_event(f"job.{job.status}", job_id=job.id, node_id=self.ctx.node_id, status=job.status,
                           attempt=job.attempt, error=job.error)
        delay = 0.1
        while True:
            try:
                return await self.ctx.queue.complete(job, self.ctx.node_id, self.ctx.retention_s, event)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                self.log.bind(job_id=job.id).warning("cannot record result yet ({}); retrying in {:.1f}s",
                                                     exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
