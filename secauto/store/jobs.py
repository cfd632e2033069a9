"""The job protocol: every state change of a job is one Lua script (one round-trip, atomic).

Every method raises redis-py's ``ConnectionError``/``TimeoutError`` when Redis cannot be reached; the
callers decide whether to retry, report 503 or back off.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError

from secauto.dependencies import MAX_DEPENDENTS
from secauto.models import Event, Job, JobStatus, job_decoder, json_encoder, utc_now
from secauto.store.keys import RECENT_MAX, Keys
from secauto.store.scripts import Scripts, lua_constants, run_pipelined, run_script

FinishOutcome = Literal["completed", "retry", "dead"]


class RetentionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How long records live and how recovery backs off (from the cluster config)."""

    job_retention_s: int = 86400
    dlq_retention_s: int = 7 * 86400
    dlq_max: int = 10_000
    backoff_base_ms: int = 1000
    backoff_cap_ms: int = 300_000
    avoid_ms: int = 5000
    poison_limit: int = 2
    # An ended job whose dependents have not all ended keeps its record (they read its final context)
    # up to this long; its usual retention starts once the last of them ended.
    dependency_hold_s: int = 30 * 86400
    # Dependents one script call settles at most (lib.lua, "Dependencies"); the leader does the rest.
    settle_budget: int = 1000


class DispatchPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How claims place jobs (from the cluster config); see ``claim.lua``."""

    placement: Literal["least_loaded", "round_robin"] = "least_loaded"
    dispatch_wait_ms: int = 250  # how long a job waits for its preferred node before any node takes it
    affinity_wait_ms: int = 5000  # the same for a job with an affinity key
    tag_limits: dict[str, int] = {}  # cluster-wide cap of running jobs per tag


class FinishRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt's end, for :meth:`JobQueue.finish_many`."""

    job: Job
    outcome: FinishOutcome
    event: Event
    backoff_ms: int = 0
    extra_event: Event | None = None
    duration_ms: int = 0


class Recovery(msgspec.Struct, frozen=True):
    """What one recovery pass did; ``oldest_deadline_ms`` is the earliest lost lease (0 if none);
    ``dependency_backlog`` the jobs whose dependents are left to settle (see :meth:`JobQueue.settle_backlog`)."""

    requeued: int
    failed: int
    quarantined: int
    oldest_deadline_ms: int
    dependency_backlog: int = 0

    @property
    def total(self) -> int:
        return self.requeued + self.failed + self.quarantined


class Quota(msgspec.Struct, frozen=True):
    """The submitting key's quota: at most ``max_pending`` of its jobs waiting, pending or running."""

    key_name: str
    max_pending: int


class QuotaExceeded(Exception):
    """A submission refused whole: the key has ``live`` jobs that have not ended, of ``max_pending``."""

    def __init__(self, live: int, max_pending: int) -> None:
        super().__init__(f"{live} jobs of this key have not ended; its max_pending is {max_pending}")
        self.live = live
        self.max_pending = max_pending

    @classmethod
    def parse(cls, error: ResponseError) -> QuotaExceeded | None:
        """The refusal that submit.lua answered as ``QUOTA_EXCEEDED <live> <max>``, or None."""
        words = str(error).split()
        if len(words) == 3 and words[0] == "QUOTA_EXCEEDED" and words[1].isdigit() and words[2].isdigit():
            return cls(int(words[1]), int(words[2]))
        return None


class DependencyRefused(Exception):
    """The store refused a submission because of dependencies: ``problem`` is ``unknown_dependency``
    (no job with that id: never submitted, or expired) or ``too_many_dependents`` (it would get more
    than MAX_DEPENDENTS); ``job_ids`` are those dependencies. Nothing of the submission was stored."""

    def __init__(self, problem: str, job_ids: Sequence[str]) -> None:
        super().__init__(f"{problem}: {', '.join(job_ids)}")
        self.problem = problem
        self.job_ids = list(job_ids)


class RequeueResult(msgspec.Struct, frozen=True):
    """What a requeue did: the status ``before`` (None: no such job; ``not_dead``: not in the DLQ when
    only dead-lettered jobs were asked for) and ``after`` (None when nothing changed; else pending,
    waiting or cancelled: a job with dependencies enters them again)."""

    before: str | None
    after: JobStatus | None


class DurabilityError(RedisConnectionError):
    """A durable submission was not acknowledged by enough replicas in time (or reached a primary
    that is being demoted). A subclass of redis-py's ConnectionError: callers treat it as Redis being
    unavailable (the API answers 503 with Retry-After)."""


class JobQueue:
    """The cluster's job queue and job records in Redis (or the embedded store)."""

    def __init__(self, redis: Redis, keys: Keys, policy: RetentionPolicy | None = None,
                 dispatch: DispatchPolicy | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.policy = policy or RetentionPolicy()
        self.dispatch = dispatch or DispatchPolicy()
        self._tag_args = [item for tag, limit in self.dispatch.tag_limits.items() for item in (tag, limit)]
        # The dependency settings D of lib.lua, compiled into this queue's scripts (they would otherwise
        # travel with every attempt's end).
        policy = self.policy
        self._scripts = Scripts(redis, lua_constants("dependency_settings", {
            "job": keys.job_prefix, "dependents": keys.dependents_prefix, "waiting": keys.waiting_prefix,
            "refs": keys.dependency_refs, "pins": keys.dependency_pins, "backlog": keys.dependency_backlog,
            "queue": keys.queue, "delayed": keys.delayed, "sequence": keys.sequence, "channel": keys.channel,
            "control": keys.control, "quota_pending": keys.quota_pending, "quota_owner": keys.quota_owner,
            "retention": policy.job_retention_s, "dlq_retention": policy.dlq_retention_s,
            "hold": policy.dependency_hold_s, "budget": policy.settle_budget,
        }))

    async def submit(self, jobs: Sequence[Job], events: Sequence[Event], *, delays_ms: Sequence[int] | None = None,
                     durable_replicas: int = 0, durable_timeout_ms: int = 0, quota: Quota | None = None) -> int:
        """Store, queue and announce ``jobs`` in one script call. Returns how many were new.

        ``delays_ms`` (0 = now) parks a job in the delayed set for that long (Redis clock). A job with
        dependencies (``parent_list``) is stored ``waiting`` until they completed, and must come after
        those of its dependencies that are in ``jobs``; a dependency that is not in ``jobs`` and has no
        record, or one that would get too many dependents, refuses the whole call with
        :class:`DependencyRefused` (nothing stored). With ``durable_replicas``, the call also waits
        (Redis WAIT, same connection) until that many replicas acknowledged the write, and raises
        :class:`DurabilityError` if they did not in time. With a ``quota``, the jobs count against the
        key's max_pending until they end for good, and the call raises :class:`QuotaExceeded` (storing
        nothing) when they would not fit.
        """
        if not jobs:
            return 0
        delays = delays_ms or [0] * len(jobs)
        keys = [self.keys.queue, self.keys.sequence, self.keys.delayed, self.keys.capacity, self.keys.round_robin,
                self.keys.job_index, self.keys.quota_pending, self.keys.quota_owner,
                *(self.keys.job(job.id) for job in jobs)]
        index_ms = 1000 * max(self.policy.job_retention_s, self.policy.dlq_retention_s)
        args: list[Any] = [self.keys.channel, self.keys.node_prefix, self.dispatch.placement, index_ms,
                           self.keys.control, quota.key_name if quota else "", quota.max_pending if quota else 0,
                           utc_now(), MAX_DEPENDENTS]
        for job, event, delay in zip(jobs, events, delays, strict=True):
            args += [job.id, json_encoder.encode(job), json_encoder.encode(event), max(0, delay)]
        try:
            return await self._submit(keys, args, durable_replicas, durable_timeout_ms)
        except ResponseError as exc:
            refused = QuotaExceeded.parse(exc)
            if refused is None:
                raise
            raise refused from None

    async def _submit(self, keys: list[Any], args: list[Any], durable_replicas: int, durable_timeout_ms: int) -> int:
        if not durable_replicas:
            return _stored(await run_script(self.redis, self._scripts.submit, keys, args))
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._scripts.submit(keys=keys, args=args, client=pipe)
                pipe.execute_command("WAIT", durable_replicas, durable_timeout_ms)
                stored, acked = await pipe.execute()
        except (ReadOnlyError, ResponseError) as exc:
            # "WAIT cannot be used with replica instances": we are talking to a demoted primary.
            if isinstance(exc, ReadOnlyError) or "replica" in str(exc).lower():
                raise DurabilityError(f"the Redis primary is changing ({exc})") from exc
            raise
        count = _stored(stored)  # a refused call wrote nothing: no need to wait for the replicas' answer
        if int(acked) < durable_replicas:
            raise DurabilityError(f"only {acked} of {durable_replicas} replica(s) acknowledged in time")
        return count

    async def claim(self, node_id: str, max_jobs: int, lease_ms: int, *, capacity: int | None = None,
                    running: int = 0) -> list[Job]:
        """Atomically move up to ``max_jobs`` pending jobs to ``running`` on ``node_id``."""
        return (await self.claim_with_recheck(node_id, max_jobs, lease_ms, capacity=capacity, running=running))[0]

    async def claim_with_recheck(self, node_id: str, max_jobs: int, lease_ms: int, *, capacity: int | None = None,
                                 running: int = 0) -> tuple[list[Job], int | None]:
        """Claim as placement allows (see ``claim.lua``): the jobs, and the ms after which skipped or
        delayed jobs should be looked at again (None: nothing to wait for).

        ``capacity`` and ``running`` are the claiming node's slots and running jobs (default: it has
        exactly ``max_jobs`` slots free).
        """
        slots = capacity if capacity is not None else running + max(0, max_jobs)
        records, recheck = await run_script(
            self.redis, self._scripts.claim,
            [self.keys.queue, self.keys.running, self.keys.delayed, self.keys.sequence, self.keys.load,
             self.keys.capacity, self.keys.tag_running],
            [node_id, max(0, max_jobs), lease_ms, utc_now(), self.keys.job_prefix, self.keys.channel,
             self.keys.node_prefix, self.dispatch.dispatch_wait_ms, self.dispatch.affinity_wait_ms, slots,
             running, *self._tag_args],
        )
        wait = int(recheck)
        return [job_decoder.decode(record) for record in records], (None if wait < 0 else wait)

    async def renew(self, node_id: str, attempts: Mapping[str, int], lease_ms: int) -> list[str]:
        """Extend the leases of all ``attempts`` (job id -> fencing token) in one call.

        Returns the ids this node no longer owns; their results would be refused anyway.
        """
        if not attempts:
            return []
        args: list[Any] = [node_id, lease_ms, self.keys.job_prefix]
        for job_id, attempt in attempts.items():
            args += [job_id, attempt]
        lost = await self._scripts.renew(keys=[self.keys.running], args=args)
        return [_text(item) for item in lost]

    async def finish(self, job: Job, node_id: str, outcome: FinishOutcome, event: Event, *,
                     backoff_ms: int = 0, extra_event: Event | None = None) -> bool:
        """End attempt ``job.attempt`` with ``job`` as the new record, if ``node_id`` still holds it.

        ``completed`` keeps the record for the retention period, ``retry`` requeues it after
        ``backoff_ms`` (preferring another node), ``dead`` dead-letters it. Returns False (and writes
        nothing) for a stale writer.
        """
        request = FinishRequest(job=job, outcome=outcome, event=event, backoff_ms=backoff_ms, extra_event=extra_event)
        keys, args = self._finish_call(node_id, request)
        return bool(await self._scripts.finish(keys=keys, args=args))

    async def finish_many(self, node_id: str, requests: Sequence[FinishRequest]) -> list[bool]:
        """:meth:`finish` for several attempts in one round-trip. Raises redis-py's connection errors;
        a script error for one request raises it too (nothing is silently dropped)."""
        calls = [(self._scripts.finish, *self._finish_call(node_id, request)) for request in requests]
        results = await run_pipelined(self.redis, calls)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return [bool(result) for result in results]

    def _finish_call(self, node_id: str, request: FinishRequest) -> tuple[list[Any], list[Any]]:
        policy, job = self.policy, request.job
        keys = [self.keys.job(job.id), self.keys.running, self.keys.queue, self.keys.sequence, self.keys.delayed,
                self.keys.dlq, self.keys.load, self.keys.tag_running, self.keys.recent, self.keys.quota_pending,
                self.keys.quota_owner]
        args = [job.id, node_id, job.attempt, json_encoder.encode(job), request.outcome, policy.job_retention_s,
                self.keys.channel, json_encoder.encode(request.event), request.backoff_ms, policy.dlq_max,
                policy.dlq_retention_s,
                json_encoder.encode(request.extra_event) if request.extra_event is not None else "",
                self.keys.job_prefix, policy.avoid_ms, request.duration_ms, RECENT_MAX, self.keys.control,
                utc_now()]
        return keys, args

    async def recover(self, *, leader_token: str, mode: Literal["expired", "nodes"], cause: str,
                      nodes: Sequence[str] = (), check_records: bool = True, limit: int = 500) -> Recovery | None:
        """Recover running jobs presumed lost (see ``reap.lua``). None if the leader check failed.

        In ``nodes`` mode a named node whose record still exists is skipped, unless ``check_records`` is
        False (a node restarting under its old id recovers its previous run's jobs at once).
        """
        policy = self.policy
        result = await self._scripts.reap(
            keys=[self.keys.running, self.keys.queue, self.keys.sequence, self.keys.delayed, self.keys.dlq,
                  self.keys.leader, self.keys.load, self.keys.tag_running, self.keys.quota_pending,
                  self.keys.quota_owner],
            args=[leader_token, self.keys.job_prefix, self.keys.channel, utc_now(), limit, policy.dlq_retention_s,
                  policy.dlq_max, policy.backoff_base_ms, policy.backoff_cap_ms, mode, policy.poison_limit,
                  policy.avoid_ms, cause, self.keys.node_prefix if check_records else "", self.keys.control,
                  *nodes],
        )
        if not isinstance(result, list):
            return None
        return Recovery(*(int(value) for value in result))

    async def handback(self, node_id: str, attempts: Mapping[str, int]) -> int:
        """Give unfinished jobs back to the queue (graceful stop); returns how many went back."""
        if not attempts:
            return 0
        args: list[Any] = [node_id, self.keys.job_prefix, self.keys.channel, utc_now(), self.keys.control]
        for job_id, attempt in attempts.items():
            args += [job_id, attempt]
        return int(await self._scripts.handback(
            keys=[self.keys.running, self.keys.queue, self.keys.load, self.keys.tag_running], args=args))

    async def cancel(self, job_id: str) -> str | None:
        """Cancel a waiting, pending or running job, and settle its dependents (by default they are
        cancelled too). Returns its status before the call, or None if unknown."""
        before = await self._scripts.cancel(
            keys=[self.keys.job(job_id), self.keys.queue, self.keys.delayed, self.keys.running, self.keys.load,
                  self.keys.tag_running, self.keys.quota_pending, self.keys.quota_owner],
            args=[job_id, utc_now(), self.keys.channel, self.policy.job_retention_s, self.keys.control])
        return _text(before) or None

    async def requeue(self, job_id: str, *, only_dead: bool = False) -> RequeueResult:
        """Requeue a failed or cancelled job with a fresh retry budget (a job with dependencies enters
        them again: it may wait, or be cancelled again at once). See :class:`RequeueResult`."""
        before, after = await self._scripts.requeue(
            keys=[self.keys.job(job_id), self.keys.queue, self.keys.sequence, self.keys.dlq],
            args=[job_id, utc_now(), self.keys.channel, "1" if only_dead else "0", self.keys.control])
        return RequeueResult(before=_text(before) or None, after=msgspec.convert(_text(after) or None,
                                                                                  JobStatus | None))

    async def settle_backlog(self, *, leader_token: str, entries: int = 100) -> int | None:
        """Settle the dependents that job ends left over (see ``settle.lua``), within one script's budget.
        Returns the backlog entries left, or None if the caller is not the leader."""
        left = int(await self._scripts.settle(keys=[self.keys.leader], args=[
            leader_token, utc_now(), entries]))
        return None if left < 0 else left

    async def dependency_records(self, job_ids: Sequence[str]) -> list[bytes | None]:
        """The stored JSON of each of ``job_ids`` (None where there is none), in order."""
        if not job_ids:
            return []
        records = await self.redis.mget([self.keys.job(job_id) for job_id in job_ids])
        return [record.encode() if isinstance(record, str) else record for record in records]

    async def dependency_state(self, job_id: str, depends_on: Sequence[str]) -> tuple[list[str], list[str | None]]:
        """For a job's view: the dependencies it still waits on, and the current status of each of
        ``depends_on`` (None where the record is gone), in one round-trip. Reads only the start of each
        record: the status is the header's second field."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(self.keys.waiting_prefix + job_id)
            for parent in depends_on:
                pipe.getrange(self.keys.job(parent), 0, _STATUS_WITHIN - 1)
            waiting, *heads = await pipe.execute()
        return sorted(_text(item) for item in waiting), [_status_in(head) for head in heads]

    async def forget(self, job_id: str) -> bool:
        """Delete a dead-lettered job. False if it is not in the DLQ."""
        return bool(await self._scripts.forget(keys=[self.keys.job(job_id), self.keys.dlq], args=[job_id]))

    async def dead_letters(self, *, offset: int = 0, limit: int = 100) -> tuple[int, list[bytes]]:
        """(DLQ size, the stored records of the newest entries from ``offset``)."""
        if limit <= 0:
            return int(await self.redis.zcard(self.keys.dlq)), []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.dlq)
            pipe.zrevrange(self.keys.dlq, offset, offset + limit - 1)
            size, ids = await pipe.execute()
        if not ids:
            return int(size), []
        records = await self.redis.mget([self.keys.job(_text(job_id)) for job_id in ids])
        return int(size), [record.encode() if isinstance(record, str) else record for record in records
                           if record is not None]

    async def list_jobs(self, *, before: float | None, scan: int) -> tuple[list[tuple[float, bytes]], bool]:
        """Up to ``scan`` (index score, stored record) pairs, newest first, strictly before ``before``
        (None: from the newest); records that expired are left out. The flag says whether the index
        has more entries past the ones scanned."""
        top = f"({before!r}" if before is not None else "+inf"
        entries: list[Any] = await self.redis.zrevrangebyscore(self.keys.job_index, top, "-inf", start=0,
                                                               num=scan + 1, withscores=True)
        more = len(entries) > scan
        entries = entries[:scan]
        if not entries:
            return [], False
        records = await self.redis.mget([self.keys.job(_text(job_id)) for job_id, _ in entries])
        found = [(float(score), record.encode() if isinstance(record, str) else record)
                 for (_, score), record in zip(entries, records, strict=True) if record is not None]
        return found, more

    async def recent_ends(self) -> list[str]:
        """The latest attempt ends, newest first: ``"end_ms status node duration_ms"``."""
        return [_text(item) for item in await self.redis.lrange(self.keys.recent, 0, -1)]

    async def get_raw(self, job_id: str) -> bytes | None:
        """The stored JSON of a job, or None."""
        raw = await self.redis.get(self.keys.job(job_id))
        return raw.encode() if isinstance(raw, str) else raw

    async def get(self, job_id: str) -> Job | None:
        raw = await self.get_raw(job_id)
        return None if raw is None else job_decoder.decode(raw)

    async def queue_size(self) -> int:
        """Pending jobs: queued now plus those waiting out a backoff or delay."""
        pending, _ = await self.queue_sizes()
        return pending

    async def queue_sizes(self, now_ms: int | None = None) -> tuple[int, int]:
        """(pending, ready): every pending job, and those that may start now (``now_ms``: this node's
        clock by default). Delayed jobs whose time has come count as ready although only the next
        claim moves them to the queue; jobs still held back by a delay, ``run_at`` or a retry backoff
        do not."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.queue)
            pipe.zcard(self.keys.delayed)
            pipe.zcount(self.keys.delayed, "-inf", now_ms)
            queued, delayed, delayed_due = await pipe.execute()
        return int(queued) + int(delayed), int(queued) + int(delayed_due)

    async def running_size(self) -> int:
        return int(await self.redis.zcard(self.keys.running))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stored(result: Any) -> int:
    """submit.lua's answer: the number of jobs stored, or a refusal (raised)."""
    if isinstance(result, list):
        raise DependencyRefused(_text(result[0]), [_text(item) for item in result[1:]])
    return int(result)


# A record starts {"id":"<at most 100 characters>","status":"<word>": the status lies within these bytes.
_STATUS_WITHIN = 160
_STATUS = re.compile(rb'^\{"id":"[^"]*","status":"([a-z]+)"')


def _status_in(head: Any) -> str | None:
    if not head:
        return None
    match = _STATUS.match(head if isinstance(head, bytes) else str(head).encode())
    return match.group(1).decode() if match else None
