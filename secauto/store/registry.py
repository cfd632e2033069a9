"""The node registry and the leader lease.

Node records are JSON strings with a TTL of 3 heartbeats, so a dead node's record disappears by itself.
The leader lease is a single key holding ``<node_id>:<token>``; only a holder of that exact value can
renew or release it, so a node restarted under the same id does not inherit its old lease.
"""

from __future__ import annotations

import msgspec
from loguru import logger
from redis.asyncio import Redis

from secauto.models import Event, NodeInfo, json_encoder, node_decoder
from secauto.store.keys import Keys
from secauto.store.scripts import Scripts


class NodeRegistry:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._scripts = Scripts(redis)

    async def write(self, info: NodeInfo, ttl_ms: int) -> None:
        await self.redis.set(self.keys.node(info.id), json_encoder.encode(info), px=ttl_ms)

    async def remove(self, node_id: str) -> None:
        await self.redis.delete(self.keys.node(node_id))

    async def list(self) -> list[NodeInfo]:
        """Every node record currently in Redis (records that fail to decode are skipped)."""
        names = [name async for name in self.redis.scan_iter(match=self.keys.node_pattern, count=500)]
        if not names:
            return []
        records = await self.redis.mget(names)
        nodes = []
        for name, record in zip(names, records, strict=True):
            if record is None:  # expired between SCAN and MGET
                continue
            try:
                nodes.append(node_decoder.decode(record))
            except msgspec.ValidationError as exc:
                logger.bind(component="registry").warning("ignoring malformed node record {}: {}", name, exc)
        return nodes

    async def publish(self, event: Event) -> None:
        await self.redis.publish(self.keys.channel, json_encoder.encode(event))

    async def hold_leadership(self, token: str, lease_ms: int, event: Event) -> int:
        """Acquire or renew the leader lease: 1 acquired, 2 renewed, 0 another node leads."""
        return int(await self._scripts.leader(
            keys=[self.keys.leader], args=[token, lease_ms, self.keys.channel, json_encoder.encode(event)]))

    async def release_leadership(self, token: str) -> bool:
        return bool(await self._scripts.release(keys=[self.keys.leader], args=[token]))

    async def leader(self) -> str | None:
        """The node id of the current leader, or None."""
        value = await self.redis.get(self.keys.leader)
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else str(value)
        return text.rpartition(":")[0]
