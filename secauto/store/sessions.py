"""Dashboard sessions and the failed-login counter, kept in Redis so every node behind a load balancer
knows them (the embedded store when cluster mode is off).

A session id is 256 random bits, handed to the browser once, in a cookie; the store names the record by
the SHA-256 of the id, so someone who can read Redis cannot take over a session. The record keeps the
SHA-256 of the API key the session was started with, never the key: the dashboard resolves the key's
identity again on every request, so a key that is revoked or expires ends its sessions.

Timeouts: the record's TTL is the idle timeout, refreshed on use at most once a minute (not a write per
request); the absolute timeout is checked against ``created_at``. Both are also checked against the
injected clock, so an expired record is never used even before Redis drops it.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable

import msgspec
from redis.asyncio import Redis

from secauto.store.keys import Keys

# A used session's idle deadline is pushed back at most this often.
TOUCH_EVERY_S = 60.0


class SessionRecord(msgspec.Struct, kw_only=True, frozen=True):
    """What the store keeps for one session."""

    key_sha256: str  # hex SHA-256 of the API key that logged in
    csrf: str  # the token every form POST of this session must carry
    created_at: float  # epoch seconds
    last_seen: float  # epoch seconds, at most TOUCH_EVERY_S old while the session is used


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SessionRecord)


class SessionStore:
    """Create, load (and keep alive) and delete dashboard sessions."""

    def __init__(self, redis: Redis, keys: Keys, *, idle_s: float, max_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.keys = keys
        self.idle_s = idle_s
        self.max_s = max_s
        self.clock = clock

    def _key(self, session_id: str) -> str:
        return self.keys.session(hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest())

    def _ttl_ms(self, record: SessionRecord, now: float) -> int:
        remaining = min(self.idle_s, record.created_at + self.max_s - now)
        return max(1, int(remaining * 1000))

    async def create(self, key_sha256: bytes) -> tuple[str, SessionRecord]:
        """A new session for the key with this digest: (the id for the cookie, the record)."""
        now = self.clock()
        session_id = secrets.token_urlsafe(32)
        record = SessionRecord(key_sha256=key_sha256.hex(), csrf=secrets.token_urlsafe(32), created_at=now,
                               last_seen=now)
        await self.redis.set(self._key(session_id), _encoder.encode(record), px=self._ttl_ms(record, now))
        return session_id, record

    async def load(self, session_id: str) -> SessionRecord | None:
        """The live session with this id, or None (unknown, idle or past its absolute timeout; an
        expired or unreadable record is deleted). Pushes the idle deadline back when it is older than
        TOUCH_EVERY_S; the push never recreates a session deleted meanwhile (logout)."""
        key = self._key(session_id)
        raw = await self.redis.get(key)
        if raw is None:
            return None
        try:
            record = _decoder.decode(raw)
        except msgspec.DecodeError:
            await self.redis.delete(key)
            return None
        now = self.clock()
        if now - record.last_seen >= self.idle_s or now - record.created_at >= self.max_s:
            await self.redis.delete(key)
            return None
        if now - record.last_seen >= TOUCH_EVERY_S:
            record = msgspec.structs.replace(record, last_seen=now)
            await self.redis.set(key, _encoder.encode(record), px=self._ttl_ms(record, now), xx=True)
        return record

    async def delete(self, session_id: str) -> None:
        await self.redis.delete(self._key(session_id))


class LoginThrottle:
    """Failed logins per client address, shared by all nodes: after ``attempts`` failures within
    ``window_s`` seconds of the first, the address may not log in until the window ends."""

    def __init__(self, redis: Redis, keys: Keys, *, attempts: int, window_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.attempts = attempts
        self.window_ms = max(1, int(window_s * 1000))

    async def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None if it may try now."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.login_failures(address))
            pipe.pttl(self.keys.login_failures(address))
            count, ttl_ms = await pipe.execute()
        if count is None or int(count) < self.attempts:
            return None
        return max(1, math.ceil(int(ttl_ms) / 1000)) if int(ttl_ms) > 0 else 1

    async def record_failure(self, address: str) -> None:
        """Count one failed login; the first failure starts the window."""
        key = self.keys.login_failures(address)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, px=self.window_ms, nx=True)
            pipe.incr(key)
            await pipe.execute()

    async def clear(self, address: str) -> None:
        """Forget the failures of an address that logged in."""
        await self.redis.delete(self.keys.login_failures(address))
