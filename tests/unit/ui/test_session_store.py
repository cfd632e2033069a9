"""The session store and the failed-login counter with an injected clock (fakeredis, no node)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import fakeredis
import pytest
from redis.asyncio import Redis

from secauto.store.keys import Keys
from secauto.store.sessions import TOUCH_EVERY_S, LoginThrottle, SessionStore

KEYS = Keys("c")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    yield client
    await client.aclose()


def stored_key(session_id: str) -> str:
    return KEYS.session(hashlib.sha256(session_id.encode()).hexdigest())


async def test_a_session_is_stored_under_the_hash_of_its_id(redis: Redis) -> None:
    store = SessionStore(redis, KEYS, idle_s=600, max_s=3600, clock=Clock())
    digest = hashlib.sha256(b"the-api-key").digest()
    session_id, record = await store.create(digest)
    assert len(session_id) >= 43  # 256 random bits
    keys = [key.decode() for key in await redis.keys("*")]
    assert keys == [stored_key(session_id)] and session_id not in keys[0]
    raw = await redis.get(keys[0])
    assert session_id.encode() not in raw and b"the-api-key" not in raw
    assert record.key_sha256 == digest.hex() and record.csrf != session_id
    assert 599_000 <= await redis.pttl(keys[0]) <= 600_000
    assert await store.load(session_id) == record
    assert await store.load("forged-" + session_id) is None


async def test_idle_timeout_and_touch_at_most_once_a_minute(redis: Redis) -> None:
    clock = Clock()
    store = SessionStore(redis, KEYS, idle_s=600, max_s=3600, clock=clock)
    session_id, record = await store.create(b"k" * 32)
    clock.now += TOUCH_EVERY_S - 1
    assert (await store.load(session_id)) == record  # no write: last_seen unchanged
    clock.now += 2
    touched = await store.load(session_id)
    assert touched is not None and touched.last_seen == clock.now
    clock.now += 599
    assert await store.load(session_id) is not None  # 599 s idle: still alive, and touched again
    clock.now += 600
    assert await store.load(session_id) is None  # 600 s idle: over
    assert not await redis.exists(stored_key(session_id))


async def test_absolute_timeout_even_when_used(redis: Redis) -> None:
    clock = Clock()
    store = SessionStore(redis, KEYS, idle_s=600, max_s=1000, clock=clock)
    session_id, _ = await store.create(b"k" * 32)
    for _ in range(9):
        clock.now += 100
        assert await store.load(session_id) is not None
    assert await redis.pttl(stored_key(session_id)) <= 200_000  # the TTL never outlives session_max
    clock.now += 100
    assert await store.load(session_id) is None


async def test_a_touch_never_recreates_a_deleted_session(redis: Redis) -> None:
    clock = Clock()
    store = SessionStore(redis, KEYS, idle_s=600, max_s=3600, clock=clock)
    session_id, _ = await store.create(b"k" * 32)
    raw = await redis.get(stored_key(session_id))
    clock.now += TOUCH_EVERY_S + 1

    real_get = redis.get

    async def get_then_logout(key: str) -> bytes | None:  # a logout lands between the read and the touch
        await redis.delete(key)
        return raw

    redis.get = get_then_logout  # type: ignore[method-assign]
    assert await store.load(session_id) is not None
    redis.get = real_get  # type: ignore[method-assign]
    assert not await redis.exists(stored_key(session_id))


async def test_an_unreadable_record_is_no_session(redis: Redis) -> None:
    store = SessionStore(redis, KEYS, idle_s=600, max_s=3600, clock=Clock())
    await redis.set(stored_key("abc"), b"{not json")
    assert await store.load("abc") is None
    assert not await redis.exists(stored_key("abc"))


async def test_login_throttle_counts_failures_per_address_in_a_window(redis: Redis) -> None:
    throttle = LoginThrottle(redis, KEYS, attempts=3, window_s=60)
    for _ in range(2):
        await throttle.record_failure("10.0.0.1")
    assert await throttle.retry_after("10.0.0.1") is None
    await throttle.record_failure("10.0.0.1")
    assert await throttle.retry_after("10.0.0.1") == 60
    assert await throttle.retry_after("10.0.0.2") is None  # per address
    assert 59_000 <= await redis.pttl(KEYS.login_failures("10.0.0.1")) <= 60_000  # from the first failure
    await throttle.clear("10.0.0.1")
    assert await throttle.retry_after("10.0.0.1") is None
