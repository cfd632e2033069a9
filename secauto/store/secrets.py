"""Stored secrets: one hash per cluster, name -> sealed value (see :mod:`secauto.secret_cipher`).

Only sealed values go in and out of here; encryption and decryption are the vault's
(:mod:`secauto.vault`). A record that does not decode is reported as missing from :meth:`get_many`
and skipped, with a warning, by :meth:`all`. Every method raises redis-py's ``ConnectionError`` /
``TimeoutError`` when Redis cannot be reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec
from loguru import logger
from redis.asyncio import Redis

from secauto.secret_cipher import SealedSecret
from secauto.store.keys import Keys
from secauto.store.scripts import script_source

MAX_SECRETS = 1000

_decoder = msgspec.json.Decoder(SealedSecret)
PutOutcome = Literal["created", "replaced", "full"]


class SecretStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._put = redis.register_script(script_source("secret_put"))

    async def put(self, name: str, sealed: SealedSecret) -> PutOutcome:
        """Create or replace ``name``; ``full`` (nothing stored) when MAX_SECRETS names exist already."""
        outcome = int(await self._put(keys=[self.keys.secrets], args=[name, msgspec.json.encode(sealed), MAX_SECRETS]))
        return {1: "created", 0: "replaced"}.get(outcome, "full")  # type: ignore[return-value]

    async def delete(self, name: str) -> bool:
        return bool(await self.redis.hdel(self.keys.secrets, name))

    async def all(self) -> dict[str, SealedSecret]:
        """Every stored secret by name."""
        stored = await self.redis.hgetall(self.keys.secrets)
        found: dict[str, SealedSecret] = {}
        for raw_name, raw in stored.items():
            name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
            try:
                found[name] = _decoder.decode(raw)
            except msgspec.DecodeError as exc:
                logger.bind(component="secrets").warning("ignoring malformed stored secret {!r}: {}", name, exc)
        return found

    async def get_many(self, names: Sequence[str]) -> dict[str, SealedSecret]:
        """The stored secrets among ``names`` (absent or malformed ones are left out)."""
        if not names:
            return {}
        records = await self.redis.hmget(self.keys.secrets, list(names))
        found: dict[str, SealedSecret] = {}
        for name, raw in zip(names, records, strict=True):
            if raw is None:
                continue
            try:
                found[name] = _decoder.decode(raw)
            except msgspec.DecodeError as exc:
                logger.bind(component="secrets").warning("ignoring malformed stored secret {!r}: {}", name, exc)
        return found

    async def missing(self, names: Sequence[str]) -> list[str]:
        """Those of ``names`` that are not stored, in the given order."""
        if not names:
            return []
        records = await self.redis.hmget(self.keys.secrets, list(names))
        return [name for name, raw in zip(names, records, strict=True) if raw is None]
