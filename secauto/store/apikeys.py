"""API keys made at run time (``POST /keys``): stored as SHA-256 digests in one Redis hash, so every
node accepts them, plus the cluster-wide record of when each key (config or API) was last used.

Every change increments a version counter and publishes :data:`KEYS_CHANGED` on the control channel,
in one transaction with the change. Nodes reload on the notice and also poll the counter (see
``actors/keys.py``), so a lost notice delays a revocation by at most one poll interval.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from loguru import logger
from redis.asyncio import Redis

from secauto.config import ApiKey, RateLimit, Role
from secauto.store.keys import Keys

# On the control channel: the stored keys changed; reload them.
KEYS_CHANGED = b"keys.changed"


class StoredKey(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One API key as stored: never the key itself, only its SHA-256 digest (hex)."""

    name: str
    sha256: str
    role: Role
    created_at: str  # RFC 3339 UTC
    created_by: str | None = None  # the name of the admin key that made it
    expires_at: float | None = None  # Unix seconds; None: never
    rate_limit: RateLimit | None = None
    max_pending: int | None = None

    def as_api_key(self) -> ApiKey:
        """The usable key; raises ValueError if the stored digest is not 64 hex digits."""
        digest = bytes.fromhex(self.sha256)
        if len(digest) != 32:
            raise ValueError(f"key {self.name!r}: the stored digest is not SHA-256")
        return ApiKey(name=self.name, sha256=digest, role=self.role, source="api", expires_at=self.expires_at,
                      rate_limit=self.rate_limit, max_pending=self.max_pending)


_decoder = msgspec.json.Decoder(StoredKey)


class KeyStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def version(self) -> int:
        """The change counter (0 before the first change)."""
        raw = await self.redis.get(self.keys.api_keys_version)
        return int(raw) if raw is not None else 0

    async def load(self) -> tuple[int, list[StoredKey]]:
        """The change counter and every stored key, read in one transaction (so they agree). A record
        that does not decode is skipped with a warning (the key is then refused, never half-read)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.api_keys_version)
            pipe.hgetall(self.keys.api_keys)
            raw_version, stored = await pipe.execute()
        found = []
        for name, raw in stored.items():
            try:
                found.append(_decoder.decode(raw))
            except msgspec.ValidationError as exc:
                logger.bind(component="keys").warning("ignoring malformed stored key {!r}: {}", name, exc)
        return (int(raw_version) if raw_version is not None else 0), sorted(found, key=lambda key: key.name)

    async def create(self, key: StoredKey) -> bool:
        """Store ``key`` unless a key of that name is stored already (False then, nothing changed)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self.keys.api_keys, key.name, msgspec.json.encode(key))
            pipe.incr(self.keys.api_keys_version)
            pipe.publish(self.keys.control, KEYS_CHANGED)
            created, _, _ = await pipe.execute()
        return bool(created)

    async def delete(self, name: str) -> bool:
        """Remove a stored key and its usage record; False if there was no such key."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.api_keys, name)
            pipe.zrem(self.keys.key_usage, name)
            pipe.incr(self.keys.api_keys_version)
            pipe.publish(self.keys.control, KEYS_CHANGED)
            deleted, _, _, _ = await pipe.execute()
        return bool(deleted)

    async def record_usage(self, last_used_ms: Mapping[str, int]) -> None:
        """Record when keys were last used: one ZADD GT for the whole batch, so a node's older value
        never overwrites a newer one written by another node."""
        if last_used_ms:
            await self.redis.zadd(self.keys.key_usage, dict(last_used_ms), gt=True)

    async def usage(self) -> dict[str, int]:
        """Key name -> last use (ms) as recorded cluster-wide."""
        pairs: list[tuple[bytes, float]] = await self.redis.zrange(  # type: ignore[assignment]
            self.keys.key_usage, 0, -1, withscores=True)
        return {name.decode(): int(score) for name, score in pairs}
