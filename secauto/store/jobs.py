"""The job protocol: submit, claim, renew, complete and reap, each one Lua script (one round-trip).

Every method raises redis-py's ``ConnectionError``/``TimeoutError`` when Redis cannot be reached; the
callers decide whether to retry, report 503 or back off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from secauto.models import Event, Job, job_decoder, json_encoder, utc_now
from secauto.store.keys import Keys
from secauto.store.scripts import Scripts


class JobQueue:
    """The cluster's job queue and job records in Redis (or the embedded store)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._scripts = Scripts(redis)

    async def submit(self, jobs: Sequence[Job], events: Sequence[Event]) -> int:
        """Store, queue and announce ``jobs`` atomically (one script call). Returns how many were new."""
        if not jobs:
            return 0
        keys = [self.keys.queue, self.keys.sequence, *(self.keys.job(job.id) for job in jobs)]
        args: list[Any] = [self.keys.channel]
        for job, event in zip(jobs, events, strict=True):
            args += [job.id, json_encoder.encode(job), json_encoder.encode(event)]
        return int(await self._scripts.submit(keys=keys, args=args))

    async def claim(self, node_id: str, max_jobs: int, lease_ms: int) -> list[Job]:
        """Atomically move up to ``max_jobs`` pending jobs to ``running`` on ``node_id``."""
        if max_jobs < 1:
            return []
        records = await self._scripts.claim(
            keys=[self.keys.queue, self.keys.running],
            args=[node_id, max_jobs, lease_ms, utc_now(), self.keys.job_prefix, self.keys.channel],
        )
        return [job_decoder.decode(record) for record in records]

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
        return [item.decode() if isinstance(item, bytes) else str(item) for item in lost]

    async def complete(self, job: Job, node_id: str, retention_s: int, event: Event) -> bool:
        """Write the final record of ``job`` if ``node_id`` still holds attempt ``job.attempt``.

        Returns False (and writes nothing) for a stale writer.
        """
        written = await self._scripts.complete(
            keys=[self.keys.job(job.id), self.keys.running],
            args=[job.id, node_id, job.attempt, json_encoder.encode(job), retention_s, self.keys.channel,
                  json_encoder.encode(event)],
        )
        return bool(written)

    async def reap(self, leader_token: str, *, limit: int = 100, retention_s: int) -> tuple[int, int] | None:
        """Recover jobs whose lease expired. Returns (requeued, failed), or None if not the leader."""
        result = await self._scripts.reap(
            keys=[self.keys.running, self.keys.queue, self.keys.sequence, self.keys.dlq, self.keys.leader],
            args=[leader_token, self.keys.job_prefix, self.keys.channel, utc_now(), limit, retention_s],
        )
        if not isinstance(result, list):
            return None
        return int(result[0]), int(result[1])

    async def get_raw(self, job_id: str) -> bytes | None:
        """The stored JSON of a job, or None."""
        raw = await self.redis.get(self.keys.job(job_id))
        return raw.encode() if isinstance(raw, str) else raw

    async def get(self, job_id: str) -> Job | None:
        raw = await self.get_raw(job_id)
        return None if raw is None else job_decoder.decode(raw)

    async def queue_size(self) -> int:
        return int(await self.redis.zcard(self.keys.queue))

    async def running_size(self) -> int:
        return int(await self.redis.zcard(self.keys.running))
