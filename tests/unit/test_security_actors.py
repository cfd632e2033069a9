"""The audit and keys actors when Redis fails: audit entries wait and are written once Redis answers
(the oldest dropped beyond the buffer, counted); the keys actor keeps the keys it has."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError

from actors.audit import FLUSH_AT, AuditActor, FlushAudit
from actors.core import ActorDeadError, ActorSystem
from actors.keys import CheckKeys, KeysActor, ReloadKeys
from secauto.config import ApiKey
from secauto.keyring import KeyRing, digest_of
from secauto.metrics import NodeMetrics
from secauto.store.apikeys import StoredKey
from secauto.store.audit import AuditEntry


def entry(n: int) -> AuditEntry:
    return AuditEntry(timestamp="2024-01-01T00:00:00.000Z", actor="ops", role="operator", action="job.submit",
                      target=f"job-{n}", source_ip="127.0.0.1", outcome="success", status=200, node_id="n")


class FlakyAuditStore:
    """Fails the first ``failures`` appends (unreachable, or read-only as a demoted primary), then stores."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or RedisConnectionError("Connection refused")
        self.calls = 0
        self.stored: list[AuditEntry] = []

    async def append(self, entries: Sequence[AuditEntry], now_ms: int) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        self.stored.extend(entries)


async def wait_for(condition: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


def written(metrics: NodeMetrics, result: str) -> float:
    return metrics.audit_entries.labels(result=result)._value.get()  # type: ignore[attr-defined,no-any-return]


async def test_audit_entries_wait_for_redis_and_are_written_once_in_order() -> None:
    store, metrics = FlakyAuditStore(failures=1_000_000), NodeMetrics("n")
    system = ActorSystem("t")
    actor = AuditActor("n", store, metrics, flush_delay=0.01, retry_delay=60)  # type: ignore[arg-type]
    ref = await system.spawn(actor, name="audit")
    try:
        for n in range(FLUSH_AT + 50):
            actor.record(entry(n))
        await wait_for(lambda: len(actor.buffer) == FLUSH_AT + 50)
        assert store.calls <= 2  # past FLUSH_AT while Redis is down: no write attempt per entry
        store.failures = 0  # Redis is back
        await ref.ask(FlushAudit())
        assert [e.target for e in store.stored] == [f"job-{n}" for n in range(FLUSH_AT + 50)]
        assert written(metrics, "written") == FLUSH_AT + 50 and written(metrics, "dropped") == 0
        actor.record(entry(999))  # and the next entries are written without waiting for a retry
        await wait_for(lambda: len(store.stored) == FLUSH_AT + 51)
    finally:
        await system.stop()


async def test_a_read_only_primary_during_a_failover_does_not_crash_the_audit_actor() -> None:
    store = FlakyAuditStore(failures=20, error=ReadOnlyError("You can't write against a read only replica."))
    system = ActorSystem("t")
    actor = AuditActor("n", store, NodeMetrics("n"), flush_delay=0.001, retry_delay=0.001)  # type: ignore[arg-type]
    ref = await system.spawn(actor, name="audit")
    try:
        actor.record(entry(1))
        await wait_for(lambda: store.stored)
        assert ref.is_alive and system.fatal is None and store.calls == 21
    finally:
        await system.stop()


async def test_audit_buffer_is_bounded_and_drops_the_oldest() -> None:
    store, metrics = FlakyAuditStore(failures=1_000_000), NodeMetrics("n")
    system = ActorSystem("t")
    actor = AuditActor("n", store, metrics, flush_delay=0.01, retry_delay=60, max_buffered=10)  # type: ignore[arg-type]
    ref = await system.spawn(actor, name="audit")
    try:
        for n in range(25):
            actor.record(entry(n))
        await wait_for(lambda: written(metrics, "dropped") == 15)
        store.failures = 0
        await ref.ask(FlushAudit())
        assert [e.target for e in store.stored] == [f"job-{n}" for n in range(15, 25)]
    finally:
        await system.stop()


async def test_record_called_directly_buffers_logs_and_flushes_at_flush_at_and_refuses_once_stopped() -> None:
    """The API's middleware calls AuditActor.record (no mailbox hop): entries are written in order, a
    full buffer is written at once (not after flush_delay), and a stopped actor refuses with
    ActorDeadError (the middleware then keeps the entry as a log line)."""
    from loguru import logger

    store, metrics = FlakyAuditStore(failures=0), NodeMetrics("n")
    system = ActorSystem("t")
    actor = AuditActor("n", store, metrics, flush_delay=60, retry_delay=60)  # type: ignore[arg-type]
    await system.spawn(actor, name="audit")
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    try:
        for n in range(FLUSH_AT):
            actor.record(entry(n))
        assert len(lines) == FLUSH_AT and lines[0] == "audit: job.submit job-0 by ops -> 200"  # logged at once
        await wait_for(lambda: len(store.stored) == FLUSH_AT)  # long before flush_delay
        assert [e.target for e in store.stored] == [f"job-{n}" for n in range(FLUSH_AT)]
        actor.record(entry(FLUSH_AT))
        await system.stop()  # a graceful stop writes what is buffered
        assert store.stored[-1].target == f"job-{FLUSH_AT}"
        with pytest.raises(ActorDeadError):
            actor.record(entry(0))
    finally:
        logger.remove(sink)
        await system.stop()


class FlakyKeyStore:
    def __init__(self) -> None:
        self.down = True
        self.keys: list[StoredKey] = []
        self.version_number = 1

    async def load(self) -> tuple[int, list[StoredKey]]:
        if self.down:
            raise RedisConnectionError("Connection refused")
        return self.version_number, list(self.keys)

    async def version(self) -> int:
        if self.down:
            raise RedisConnectionError("Connection refused")
        return self.version_number

    async def record_usage(self, usage: object) -> None:
        if self.down:
            raise RedisConnectionError("Connection refused")


async def test_keys_actor_starts_without_redis_and_loads_once_it_answers() -> None:
    config_key = ApiKey(name="admin", sha256=digest_of("config-secret"), role="admin")
    ring, store = KeyRing([config_key]), FlakyKeyStore()
    system = ActorSystem("t")
    ref = await system.spawn(KeysActor("n", store, ring, check_interval=3600, flush_interval=3600),  # type: ignore[arg-type]
                             name="keys")
    try:
        assert ring.identity_for_digest(digest_of("config-secret")) == config_key  # config keys work at once
        ring.touch("admin")
        ref.tell(CheckKeys())  # Redis still down: logged, nothing lost
        store.down = False
        store.keys = [StoredKey(name="ci", sha256=digest_of("api-secret").hex(), role="viewer",
                                created_at="2024-01-01T00:00:00.000Z")]
        ref.tell(CheckKeys())
        await wait_for(lambda: ring.identity_for_digest(digest_of("api-secret")) is not None)
        store.keys = []
        store.version_number = 2
        assert await ref.ask(ReloadKeys()) == 2
        assert ring.identity_for_digest(digest_of("api-secret")) is None
    finally:
        await system.stop()
