"""ExecutorActor: runs claimed jobs, keeps their leases alive and records how each attempt ended.

Each attempt runs as an aiojobs job under its timeout (the job's ``timeout`` or ``cluster.job_timeout``).
A tracked task renews the leases of all running jobs in one batched call every ``lease_timeout / 3``;
it does not go through the mailbox, so a busy actor never delays it. An attempt whose lease was lost
(taken over after this node was presumed dead) or whose job was cancelled is stopped at once, scripts
included, and writes nothing. Every write is a fenced Lua script, so a stale attempt can never change a
job that moved on.

A job with dependencies runs with ``dependencies`` in its context: for each dependency (by batch key,
else id) ``{"id", "status", "context"}`` with that job's final context, read from the store when the
attempt starts (the store keeps those records while dependents may need them; status and context are
null for one whose record is gone). It is not kept in the final context: a dependent's dependents would
otherwise get every ancestor's context nested in it.

How an attempt ends: success -> ``completed``; playbook error or timeout -> retried after an
exponential backoff (preferring another node) while retries remain, else ``failed`` and dead-lettered.
Secret values are masked (``***``) in the attempt's record (results, context, errors) before it is
built into events or written, so neither Redis nor the event channel ever holds one.
Attempt ends are written by one tracked task that sends everything pending in one pipelined
round-trip, so a busy node writes many results per round-trip and an idle one writes each at once. If
Redis is unreachable, the batch is retried with backoff until it lands; an attempt stopped meanwhile
drops out of it.

Job tasks update the executor's bookkeeping (running set, counters) directly when they end: they run
on the actor's event loop, so this is race-free, and the counters are current whenever they are asked
for. Nothing here waits inside ``receive`` for jobs to end: the mailbox stays responsive during a
graceful stop (the heartbeat keeps asking for stats), and the node polls the stats to drain.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiojobs
import msgspec
from loguru import logger

from actors.context import NodeContext
from actors.core import Actor, ActorDeadError
from actors.messages import ExecutorStats, GetStats, HandBack, JobsFinished, RunJobs, StopAttempts
from secauto.engine import PlaybookInvalid, run_playbook
from secauto.logs import LineLogger
from secauto.models import Attempt, Job, dependency_outcome_decoder, json_encoder, make_event, utc_now
from secauto.redaction import MASK, REDACTOR, Redactor
from secauto.store.connection import REDIS_UNAVAILABLE
from secauto.store.jobs import FinishOutcome, FinishRequest


def retry_backoff_ms(retry_number: int, base_s: float, cap_s: float) -> int:
    """Backoff before retry ``retry_number`` (1-based): base * 2^(n-1), capped (jitter is the caller's)."""
    return int(min(cap_s, base_s * 2 ** (retry_number - 1)) * 1000)


def redact_run(results: list[Any], context: dict[str, Any], error: str | None,
               redactor: Redactor = REDACTOR) -> tuple[list[Any], dict[str, Any], str | None]:
    """What a run produced, with secret values masked (the same objects when there is nothing to mask)."""
    if not redactor.active:
        return results, context, error
    parts = {"results": results, "context": context, "error": error}
    if not redactor.found_in_json(json_encoder.encode(parts)):
        return results, context, error
    clean = redactor.value(msgspec.to_builtins(parts))
    if not isinstance(clean, dict):  # nested too deeply to walk: mask all of it
        return [], {}, MASK
    return clean["results"], clean["context"], clean["error"]


class _Running(msgspec.Struct):
    job: Job
    task: aiojobs.Job[None]


class ExecutorActor(Actor):
    def __init__(self, ctx: NodeContext, dispatcher_name: str = "dispatcher") -> None:
        self.ctx = ctx
        self.dispatcher_name = dispatcher_name
        self.running: dict[str, _Running] = {}
        self.completed = 0
        self.failed = 0
        self._scheduler: aiojobs.Scheduler | None = None
        self._finishes: asyncio.Queue[tuple[FinishRequest, asyncio.Future[bool]]] = asyncio.Queue()
        self._finishing: set[str] = set()  # attempts whose end is being written (their lease may be gone)
        self._recovered_previous_run = False
        self.log = logger.bind(component="executor", node_id=ctx.node_id)
        self.lines = LineLogger(component="executor", node_id=ctx.node_id)  # a job's start and end

    async def on_start(self) -> None:
        await self._recover_previous_incarnation()
        # The dispatcher enforces capacity; the scheduler only tracks and closes the job tasks.
        self._scheduler = aiojobs.Scheduler(limit=None, pending_limit=0, close_timeout=1.0)
        self._finishes = asyncio.Queue()
        self.run_task(self._renew_forever(), name="lease-renewal")
        self.run_task(self._write_finishes(), name="finish-writer")

    async def on_stop(self) -> None:
        if self._scheduler is not None:
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
            case StopAttempts(job_ids=job_ids, reason=reason):
                await self._stop_attempts(job_ids, reason)
            case GetStats():
                return self.stats()
            case HandBack():
                return await self._hand_back()
            case _:
                raise TypeError(f"executor got an unexpected message {message!r}")
        return None

    async def _recover_previous_incarnation(self) -> None:
        """A node restarting under the same id takes its previous incarnation's jobs off at once
        (they count as lost with their node) instead of leaving them to wait for lease expiry.

        Only at the node's start: after a supervised restart of this actor, the jobs assigned to this
        node are its own running ones, not a previous run's."""
        if self._recovered_previous_run:
            return
        self._recovered_previous_run = True
        try:
            recovery = await self.ctx.queue.recover(leader_token="", mode="nodes", cause="node restarted",
                                                    nodes=[self.ctx.node_id], check_records=False)
        except REDIS_UNAVAILABLE as exc:
            self.log.warning("could not check for jobs of a previous run ({}); their leases will expire", exc)
            return
        if recovery is not None and recovery.total:
            self.log.warning("recovered {} job(s) left running by this node's previous run", recovery.total)

    async def _start(self, job: Job) -> None:
        assert self._scheduler is not None
        task = await self._scheduler.spawn(self._run(job))
        self.running[job.id] = _Running(job, task)
        self.ctx.metrics.jobs_running.set(len(self.running))
        self.ctx.metrics.node_load.set(self.stats().load)

    async def _stop_attempts(self, job_ids: list[str], reason: str) -> None:
        for job_id in job_ids:
            entry = self.running.get(job_id)
            if entry is not None:
                self.log.bind(job_id=job_id).warning("stopping attempt {}: {}", entry.job.attempt, reason)
                await entry.task.close()

    async def _renew_forever(self) -> None:
        """Renew every running job's lease each lease_timeout / 3, whatever the mailbox is doing."""
        interval = self.ctx.settings.config.cluster.lease_timeout / 3
        while True:
            await asyncio.sleep(interval)
            if not self.running:
                continue
            attempts = {job_id: entry.job.attempt for job_id, entry in self.running.items()}
            try:
                lost = await self.ctx.queue.renew(self.ctx.node_id, attempts, self.ctx.lease_ms)
            except REDIS_UNAVAILABLE as exc:
                self.log.warning("lease renewal failed, retrying on the next tick: {}", exc)
                continue
            # An attempt whose end is being written has left the running set in Redis already.
            lost = [job_id for job_id in lost if job_id not in self._finishing]
            if lost:
                self.ref.tell(StopAttempts(lost, "lease lost (cancelled or taken over elsewhere)"))

    async def _hand_back(self) -> int:
        """Stop what still runs and give those jobs back to the queue (not counted as failed attempts)."""
        leftover = {job_id: entry.job.attempt for job_id, entry in self.running.items()
                    if job_id not in self._finishing}
        for job_id in leftover:
            await self.running[job_id].task.close()
        if not leftover:
            return 0
        try:
            return await self.ctx.queue.handback(self.ctx.node_id, leftover)
        except REDIS_UNAVAILABLE as exc:
            self.log.error("could not hand back {} job(s) ({}); their leases will expire", len(leftover), exc)
            return 0

    async def _run(self, job: Job) -> None:
        """One attempt of ``job``: run the playbook, then record how it ended (fenced).

        Cancellation (lease lost, job cancelled, shutdown) propagates without writing anything.
        """
        log = self.log.bind(job_id=job.id)
        timeout = job.timeout or self.ctx.settings.config.cluster.job_timeout
        started = time.monotonic()
        outcome: str | None = None
        try:
            self.lines.info("Job started (attempt {})", job.attempt, job_id=job.id)
            self.ctx.metrics.queue_wait.observe(max(0.0, time.time() - job.enqueued_at / 1000))
            dependencies = await self._dependencies(job) if job.depends_on else None
            final, result = await self._execute(job, seconds=timeout, dependencies=dependencies)
            written = await self._record(job, final, result, time.monotonic() - started)
            outcome = final.status if written else None
            if written:
                self._count(final, result, time.monotonic() - started)
                ended = {"completed": "completed", "retry": "failed, retry scheduled", "dead": "failed"}[result]
                self.lines.info("Job {} in {:.3f}s{}", ended, time.monotonic() - started,
                                f" ({final.error})" if final.error else "", job_id=job.id)
            else:
                log.warning("result refused: this node no longer holds attempt {}", job.attempt)
        except Exception:
            log.exception("attempt crashed while recording its result; the leader will recover the job")
        finally:
            self._finished(job.id, outcome)

    async def _dependencies(self, job: Job) -> dict[str, Any]:
        """The ``dependencies`` context entry of ``job`` (see the module docstring). Retries through Redis
        outages; a lost lease stops the attempt (cancellation) meanwhile."""
        parents, keys = job.depends_on or [], job.dependency_keys or {}
        delay = 0.1
        while True:
            try:
                records = await self.ctx.queue.dependency_records(parents)
                break
            except REDIS_UNAVAILABLE as exc:
                self.log.bind(job_id=job.id).warning("cannot read the job's dependencies yet ({}); retrying in "
                                                     "{:.1f}s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        entries: dict[str, Any] = {}
        for job_id, record in zip(parents, records, strict=True):
            name = keys.get(job_id, job_id)
            if record is None:
                entries[name] = {"id": job_id, "status": None, "context": None}
            else:
                outcome = dependency_outcome_decoder.decode(record)
                entries[name] = {"id": job_id, "status": outcome.status, "context": outcome.context}
        return entries

    async def _execute(self, job: Job, *, seconds: float,
                       dependencies: dict[str, Any] | None = None) -> tuple[Job, FinishOutcome]:
        """Run the playbook (with ``dependencies`` in its context, if given) and build the job's next
        record. Never raises but for cancellation."""
        error: str | None
        reason: str | None = None
        results: list[Any] = job.results
        context = job.context
        start = job.context if dependencies is None else {**job.context, "dependencies": dependencies}
        try:
            outcome = await asyncio.wait_for(
                run_playbook(job.playbook, start, self.ctx.engine, job_id=job.id, secrets=self.ctx.vault),
                timeout=seconds)
        except TimeoutError:
            error, reason = f"job timed out after {seconds:g}s", "timeout"
        except PlaybookInvalid as exc:
            error, reason = f"invalid playbook: {exc}", "invalid_playbook"
        else:
            results, context = list(outcome.results), outcome.context
            if dependencies is not None:  # not kept (see the module docstring); a submitted value is
                context = {key: value for key, value in context.items() if key != "dependencies"}
                if "dependencies" in job.context:
                    context["dependencies"] = job.context["dependencies"]
            error = outcome.error
            if not outcome.success:
                reason = "playbook_error"
        results, context, error = redact_run(results, context, error)
        now = utc_now()
        attempt = Attempt(attempt=job.attempt, node=self.ctx.node_id, started_at=job.started_at, ended_at=now,
                          outcome="completed" if reason is None else ("timeout" if reason == "timeout" else "failed"),
                          error=error)
        attempts = [*job.attempts, attempt]
        if reason is None:
            return msgspec.structs.replace(job, status="completed", completed_at=now, error=None, reason=None,
                                           results=results, context=context, attempts=attempts), "completed"
        retryable = reason != "invalid_playbook" and job.retry_count < job.max_retries
        if retryable:
            # The retry starts again from the submitted context; this attempt's results stay visible.
            return msgspec.structs.replace(job, status="pending", assigned_to=None, retry_count=job.retry_count + 1,
                                           error=error, reason=reason, results=results, attempts=attempts), "retry"
        return msgspec.structs.replace(job, status="failed", completed_at=now, error=error, reason=reason,
                                       results=results, context=context, attempts=attempts), "dead"

    async def _record(self, job: Job, final: Job, outcome: FinishOutcome, duration: float) -> bool:
        """Write the attempt's end, retrying through Redis outages while the attempt may still own it."""
        node = self.ctx.node_id
        fields: dict[str, Any] = {"job_id": job.id, "node_id": node, "attempt": job.attempt}
        extra = None
        backoff = 0
        if outcome == "completed":
            event = make_event("job.completed", status="completed", **fields)
        elif outcome == "retry":
            cluster = self.ctx.settings.config.cluster
            backoff = retry_backoff_ms(final.retry_count, cluster.retry_backoff, cluster.retry_backoff_max)
            backoff = int(backoff * (0.5 + 0.5 * random.random()))
            event = make_event("job.retrying", status="pending", error=final.error, reason=final.reason, **fields)
        else:
            event = make_event("job.failed", status="failed", error=final.error, reason=final.reason, **fields)
            extra = make_event("job.dead_lettered", status="failed", error=final.error, reason=final.reason,
                               **fields)
        request = FinishRequest(job=final, outcome=outcome, event=event, backoff_ms=backoff, extra_event=extra,
                                duration_ms=int(duration * 1000))
        written: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._finishing.add(job.id)
        self._finishes.put_nowait((request, written))
        return await written

    async def _write_finishes(self) -> None:
        """Write every pending attempt end in one round-trip, again and again; retry through outages."""
        node = self.ctx.node_id
        while True:
            batch = [await self._finishes.get()]
            while not self._finishes.empty():
                batch.append(self._finishes.get_nowait())
            delay = 0.1
            while batch := [(request, done) for request, done in batch if not done.done()]:
                try:
                    outcomes = await self.ctx.queue.finish_many(node, [request for request, _ in batch])
                except REDIS_UNAVAILABLE as exc:
                    self.log.warning("cannot record {} attempt end(s) yet ({}); retrying in {:.1f}s",
                                     len(batch), exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                except Exception as exc:
                    for _, done in batch:  # a script error: each waiting attempt sees it
                        if not done.done():
                            done.set_exception(exc)
                    break
                for (_, done), written in zip(batch, outcomes, strict=True):
                    if not done.done():  # its attempt may have been stopped while the batch was in flight
                        done.set_result(written)
                break

    def _count(self, final: Job, outcome: FinishOutcome, duration: float) -> None:
        metrics = self.ctx.metrics
        metrics.job_duration.labels(status="completed" if outcome == "completed" else "failed").observe(duration)
        if outcome == "completed":
            metrics.jobs_completed.inc()
            return
        reason = final.reason or "unknown"
        metrics.jobs_failed.labels(reason=reason).inc()
        if outcome == "retry":
            metrics.jobs_retried.labels(reason=reason).inc()
        else:
            metrics.jobs_dead_lettered.labels(reason=reason).inc()

    def _finished(self, job_id: str, outcome: str | None) -> None:
        self.running.pop(job_id, None)
        self._finishing.discard(job_id)
        if outcome == "completed":
            self.completed += 1
        elif outcome in ("failed", "pending"):  # pending: failed attempt, retry scheduled
            self.failed += 1
        self.ctx.metrics.jobs_running.set(len(self.running))
        self.ctx.metrics.node_load.set(self.stats().load)
        try:
            self.system.get(self.dispatcher_name).tell(JobsFinished(1))
        except (ActorDeadError, KeyError):  # the dispatcher stops before us at shutdown: no slots to free
            self.log.debug("dispatcher gone; freed slot not reported")
