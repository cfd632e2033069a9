"""Webhooks added through the API (a hash every node reads) and the per-event delivery claim that
makes exactly one node deliver each event to each webhook."""

from __future__ import annotations

import hashlib

import msgspec
from loguru import logger
from redis.asyncio import Redis

from secauto.store.keys import Keys

CLAIM_TTL_S = 3600


class WebhookSpec(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A webhook: where events go and how. ``secret`` signs deliveries; it is never shown back."""

    id: str
    url: str
    events: list[str] = []  # empty: every event
    secret: str = ""
    timeout: float = 10.0
    retries: int = 3
    source: str = "api"  # api (stored in Redis) or config (config.yaml)
    created_at: str | None = None


_decoder = msgspec.json.Decoder(WebhookSpec)


class WebhookStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def add(self, spec: WebhookSpec) -> None:
        await self.redis.hset(self.keys.webhooks, spec.id, msgspec.json.encode(spec))

    async def delete(self, webhook_id: str) -> bool:
        return bool(await self.redis.hdel(self.keys.webhooks, webhook_id))

    async def all(self) -> list[WebhookSpec]:
        """The stored webhooks; a record that does not decode is skipped with a warning."""
        stored = await self.redis.hgetall(self.keys.webhooks)
        specs = []
        for webhook_id, raw in stored.items():
            try:
                specs.append(_decoder.decode(raw))
            except msgspec.ValidationError as exc:
                logger.bind(component="webhooks").warning("ignoring malformed webhook {}: {}", webhook_id, exc)
        return sorted(specs, key=lambda spec: spec.id)

    async def claim_delivery(self, webhook_id: str, payload: bytes, node_id: str) -> bool:
        """True for exactly one caller per (webhook, event payload) within CLAIM_TTL_S."""
        digest = hashlib.sha1(payload, usedforsecurity=False).hexdigest()
        key = f"{self.keys.webhook_claim_prefix}{webhook_id}:{digest}"
        return bool(await self.redis.set(key, node_id, nx=True, ex=CLAIM_TTL_S))
