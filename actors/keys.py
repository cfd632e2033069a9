"""KeysActor: keeps the node's :class:`~secauto.keyring.KeyRing` in step with the API keys in Redis.

Reloads when the dispatcher forwards a ``keys.changed`` notice from the control channel (published
with every change), when a handler on this node changed the keys (it asks, so its answer is sent only
once this node applies the change), and when the version counter it reads every
:data:`CHECK_INTERVAL_S` seconds moved: a notice lost to a pub/sub reconnect delays a revocation by
at most that interval plus one load, so every node applies a revocation within a second.

It also flushes the keyring's ``last_used_at`` records every :data:`USAGE_FLUSH_S` seconds (one
``ZADD GT`` per flush, whatever the number of requests) and once more when it stops.

Redis errors are logged and retried at the next check or flush; the keys loaded last stay in force
meanwhile (a revocation made while this node cannot reach Redis applies once it can again).
"""

from __future__ import annotations

from typing import Any

import msgspec
from loguru import logger

from actors.core import Actor
from secauto.keyring import KeyRing
from secauto.store.apikeys import KeyStore
from secauto.store.connection import REDIS_UNAVAILABLE

CHECK_INTERVAL_S = 0.5
USAGE_FLUSH_S = 5.0


class CheckKeys(msgspec.Struct, frozen=True):
    """Timer: reload if the version counter moved."""


class ReloadKeys(msgspec.Struct, frozen=True):
    """Tell or ask: reload the API keys now (answers the loaded version; raises on a Redis error)."""


class FlushUsage(msgspec.Struct, frozen=True):
    """Timer: write the recorded key uses."""


class KeysActor(Actor):
    def __init__(self, node_id: str, store: KeyStore, keyring: KeyRing, *, check_interval: float = CHECK_INTERVAL_S,
                 flush_interval: float = USAGE_FLUSH_S) -> None:
        self.store = store
        self.keyring = keyring
        self.check_interval = check_interval
        self.flush_interval = flush_interval
        self.log = logger.bind(component="keys", node_id=node_id)

    async def on_start(self) -> None:
        try:
            await self._reload()
        except REDIS_UNAVAILABLE as exc:
            self.log.warning("cannot load the API keys yet ({}); only config keys work until Redis answers", exc)
        self.start_timer("check", self.check_interval, CheckKeys())
        self.start_timer("flush", self.flush_interval, FlushUsage())

    async def on_stop(self) -> None:
        await self._flush()

    async def receive(self, message: Any) -> Any:
        match message:
            case CheckKeys():
                try:
                    if await self.store.version() != self.keyring.version:
                        await self._reload()
                except REDIS_UNAVAILABLE as exc:
                    self.log.warning("cannot check the API keys ({}); retrying", exc)
            case ReloadKeys():
                return await self._reload()
            case FlushUsage():
                await self._flush()
            case _:
                raise TypeError(f"keys got an unexpected message {message!r}")
        return None

    async def _reload(self) -> int:
        version, stored = await self.store.load()
        keys = []
        for item in stored:
            try:
                keys.append(item.as_api_key())
            except ValueError as exc:
                self.log.warning("ignoring stored key: {}", exc)
        shadowed = self.keyring.replace_api_keys(keys, version)
        if shadowed:
            self.log.warning("stored API keys {} are ignored: config keys have the same names", shadowed)
        return version

    async def _flush(self) -> None:
        usage = self.keyring.take_usage()
        if not usage:
            return
        try:
            await self.store.record_usage({name: int(when * 1000) for name, when in usage.items()})
        except REDIS_UNAVAILABLE as exc:
            self.keyring.restore_usage(usage)
            self.log.warning("cannot record key usage ({}); retrying at the next flush", exc)
