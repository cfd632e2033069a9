"""DispatcherActor: accepts submissions and claims work for this node while it has free slots.

Submissions do not pass through the mailbox: the API hands them to the dispatcher's
:class:`~actors.submit_writer.SubmitWriter` (``submissions``, run as a tracked task of this actor)
directly, so they never queue behind a claim, and concurrent ones share one script call.

It wakes on the control channel's ``wake`` (published when jobs are submitted, retried or requeued),
when the executor frees slots, and on a slow poll that only covers lost notifications. It never claims
more jobs than free slots, so no job waits behind a busy node (no prefetch). Redis errors during a
claim are logged and retried on the next wake-up or poll; they never crash the actor. It also forwards
``job.cancelled`` events that name this node to the executor, which stops that attempt, and
membership events to discovery and ``keys.changed`` notices to the keys actor: a node keeps one
subscription to the control channel, however many actors care. (The public event channel carries 3
events per job; with every node decoding all of them, nodes would spend their CPU on other nodes' jobs.)
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from loguru import logger

from actors.context import NodeContext
from actors.core import Actor, ActorDeadError
from actors.keys import ReloadKeys
from actors.messages import (
    CancelJob,
    ForgetJob,
    GetDependencyState,
    GetJob,
    JobsFinished,
    ListDeadLetters,
    ListJobs,
    MembershipEvent,
    RecentEnds,
    RequeueJob,
    RunJobs,
    StopAttempts,
    StopClaiming,
    Wake,
)
from actors.submit_writer import SubmitWriter
from secauto.models import event_decoder
from secauto.store.apikeys import KEYS_CHANGED
from secauto.store.connection import REDIS_UNAVAILABLE
from secauto.store.events import RESUBSCRIBED, event_prefix, subscribe

WAKE = b"wake"  # on the control channel: jobs became claimable (see store/lua/lib.lua)
_CANCELLED = event_prefix("job.cancelled")
_MEMBERSHIP_PREFIXES = (event_prefix("node."), event_prefix("leader."))


class DueWake(msgspec.Struct, frozen=True):
    """Timer: a delayed job is due."""


class DispatcherActor(Actor):
    # Unbounded: every JobsFinished must arrive (slot accounting), and Wake is coalesced anyway.
    mailbox_size = 0

    def __init__(self, ctx: NodeContext, executor_name: str = "executor", discovery_name: str = "discovery",
                 keys_name: str = "keys") -> None:
        self.ctx = ctx
        self.executor_name = executor_name
        self.discovery_name = discovery_name
        self.keys_name = keys_name
        self.in_flight = 0  # claimed and not yet finished on this node
        self.claiming = True
        self._wake_queued = False
        self._due_wake: float | None = None  # loop time of the planned wake-up for a delayed job
        cluster = ctx.settings.config.cluster
        self.submissions = SubmitWriter(ctx.queue, ctx.node_id, ctx.metrics,
                                        durable_replicas=cluster.durable_replicas if cluster.durable_submit else 0,
                                        durable_timeout_ms=int(cluster.durable_timeout * 1000))
        self.log = logger.bind(component="dispatcher", node_id=ctx.node_id)

    @property
    def free_slots(self) -> int:
        return self.ctx.capacity - self.in_flight if self.claiming else 0

    async def on_start(self) -> None:
        self.run_task(self.submissions.run(), name="submit-writer")
        self.run_task(self._listen(), name="dispatcher-events")
        poll = self.ctx.settings.config.cluster.poll_interval
        self.start_timer("poll", poll, Wake(), initial_delay=0.0)

    async def receive(self, message: Any) -> Any:
        match message:
            case Wake():
                self._wake_queued = False
                await self._claim()
            case DueWake():
                self._due_wake = None
                await self._claim()
            case JobsFinished(count=count):
                # Freed slots are refilled by one claim for all the jobs that ended meanwhile.
                self.in_flight -= count
                self._request_wake()
            case GetJob(job_id=job_id):
                return await self.ctx.queue.get_raw(job_id)
            case GetDependencyState(job_id=job_id, depends_on=depends_on):
                return await self.ctx.queue.dependency_state(job_id, depends_on)
            case CancelJob(job_id=job_id):
                before = await self.ctx.queue.cancel(job_id)
                if before in ("waiting", "pending", "running"):
                    self.log.bind(job_id=job_id).info("Job cancelled (was {})", before)
                return before
            case RequeueJob(job_id=job_id, only_dead=only_dead):
                requeued = await self.ctx.queue.requeue(job_id, only_dead=only_dead)
                if requeued.after is not None:
                    self.log.bind(job_id=job_id).info("Job requeued (was {}, now {})", requeued.before, requeued.after)
                return requeued
            case ForgetJob(job_id=job_id):
                return await self.ctx.queue.forget(job_id)
            case ListDeadLetters(offset=offset, limit=limit):
                return await self.ctx.queue.dead_letters(offset=offset, limit=limit)
            case ListJobs(before=before, scan=scan):
                return await self.ctx.queue.list_jobs(before=before, scan=scan)
            case RecentEnds():
                return await self.ctx.queue.recent_ends()
            case StopClaiming():
                self.claiming = False
                self.cancel_timer("poll")
                return self.in_flight
            case _:
                raise TypeError(f"dispatcher got an unexpected message {message!r}")
        return None

    def _request_wake(self) -> None:
        # Coalesce a burst of notifications into one claim.
        if not self._wake_queued and self.claiming:
            self._wake_queued = True
            self.ref.tell(Wake())

    async def _listen(self) -> None:
        channel = self.ctx.queue.keys.control
        async for payload in subscribe(self.ctx.queue.redis, channel, component="dispatcher"):
            if payload in (RESUBSCRIBED, WAKE):
                self._request_wake()
            elif payload.startswith(_CANCELLED):
                event = event_decoder.decode(payload)
                if event.node_id == self.ctx.node_id and event.job_id:
                    self.system.get(self.executor_name).tell(StopAttempts([event.job_id], "job cancelled"))
            elif payload == KEYS_CHANGED:
                self._tell_quietly(self.keys_name, ReloadKeys())
            if payload == RESUBSCRIBED or payload.startswith(_MEMBERSHIP_PREFIXES):
                self._forward_membership(payload)

    def _forward_membership(self, payload: bytes) -> None:
        """The node's one subscription also feeds discovery (membership and leadership events)."""
        # Before discovery is spawned, or once it stopped (shutdown), there is nobody to tell; it reads the
        # registry when it starts.
        self._tell_quietly(self.discovery_name, MembershipEvent(payload))

    def _tell_quietly(self, name: str, message: Any) -> None:
        """Tell actor ``name`` if it runs (it reads the store itself when it starts, and the keys actor
        also polls, so a notice it misses is not lost for good)."""
        with contextlib.suppress(KeyError, ActorDeadError):
            self.system.get(name).tell(message)

    async def _claim(self) -> None:
        """Claim while there are free slots and the queue gives jobs; hand them to the executor."""
        while (wanted := self.free_slots) > 0:
            try:
                jobs, recheck_ms = await self.ctx.queue.claim_with_recheck(
                    self.ctx.node_id, wanted, self.ctx.lease_ms, capacity=self.ctx.capacity, running=self.in_flight)
            except REDIS_UNAVAILABLE as exc:
                self.log.warning("claim failed, will retry on the next wake-up: {}", exc)
                return
            if jobs:
                self.in_flight += len(jobs)
                self.system.get(self.executor_name).tell(RunJobs(jobs))
            if recheck_ms is not None:
                self._wake_at(recheck_ms / 1000)
            if len(jobs) < wanted:  # the queue is empty for now
                return

    def _wake_at(self, delay: float) -> None:
        """Claim again when a skipped job may be taken after all (it waited long enough for its
        preferred node) or a delayed one is due, unless a wake-up is planned before that."""
        loop_time = asyncio.get_running_loop().time()
        if self._due_wake is not None and self._due_wake <= loop_time + delay:
            return
        self._due_wake = loop_time + delay
        self.start_timer("due", delay + 0.005, DueWake(), repeat=False)
