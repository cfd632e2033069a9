"""Subscription to the cluster's event channel that survives Redis reconnects.

Subscribers get raw JSON payloads (bytes) and route on their prefix (every event starts with
``{"type":"...``), so a node does not decode events it does not care about.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Yielded after every (re)subscription: events may have been missed while unsubscribed.
RESUBSCRIBED = b""


def event_prefix(kind: str) -> bytes:
    """The byte prefix of every event of type ``kind`` (or of a family, e.g. ``node.``)."""
    return b'{"type":"' + kind.encode()


async def subscribe(redis: Redis, channel: str, *, component: str) -> AsyncIterator[bytes]:
    """Yield payloads published on ``channel`` forever, resubscribing with backoff after a failure.

    Yields :data:`RESUBSCRIBED` once subscribed (and again after each reconnect). Cancellation closes
    the subscription and propagates.
    """
    log = logger.bind(component=component)
    backoff = 0.1
    while True:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(channel)
            if backoff > 0.1:
                log.info("resubscribed to {}", channel)
            backoff = 0.1
            yield RESUBSCRIBED
            while True:
                # Blocks without a read timeout (redis-py >= 8); a dropped connection raises.
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None and message["type"] == "message":
                    yield message["data"]
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("event subscription lost ({}); retrying in {:.1f}s", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
