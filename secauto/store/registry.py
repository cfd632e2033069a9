"""The node registry and the leader lease.

Node records are JSON strings with a TTL of 3 heartbeats, so a dead node's record disappears by itself.
An index ZSET (node id -> last heartbeat ms) lets readers list nodes without scanning the keyspace;
index members whose record is gone are the nodes presumed lost, and readers prune them.
The leader lease is a single key holding ``<node_id>:<token>``; only a holder of that exact value can
renew or release it, so a node restarted under the same id does not inherit its old lease.
"""

from __future__ import annotations

import time
from typing import Any

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
        """Write the record (TTL ``ttl_ms``) and index it, in one round-trip. An active node offers its
        slots to placement; a draining one withdraws them."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.node(info.id), json_encoder.encode(info), px=ttl_ms)
            pipe.zadd(self.keys.node_index, {info.id: int(time.time() * 1000)})
            if info.status == "active":
                pipe.hset(self.keys.capacity, info.id, info.capacity)
            else:
                pipe.hdel(self.keys.capacity, info.id)
            await pipe.execute()

    async def remove(self, node_id: str) -> None:
        """A node leaves: its record, index entry and placement fields go at once."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.node(node_id))
            pipe.zrem(self.keys.node_index, node_id)
            pipe.hdel(self.keys.capacity, node_id)
            pipe.hdel(self.keys.load, node_id)
            await pipe.execute()

    async def scan(self) -> tuple[list[NodeInfo], dict[str, int]]:
        """(the live node records, {node id: last heartbeat ms} of indexed nodes whose record is gone)."""
        pairs: list[Any] = await self.redis.zrange(self.keys.node_index, 0, -1, withscores=True)
        indexed = [(_text(node_id), int(score)) for node_id, score in pairs]
        if not indexed:
            return [], {}
        ids = [node_id for node_id, _ in indexed]
        records = await self.redis.mget([self.keys.node(node_id) for node_id in ids])
        nodes: list[NodeInfo] = []
        lost: dict[str, int] = {}
        for (_, last_beat), node_id, record in zip(indexed, ids, records, strict=True):
            if record is None:
                lost[node_id] = last_beat
                continue
            try:
                nodes.append(node_decoder.decode(record))
            except msgspec.ValidationError as exc:
                logger.bind(component="registry").warning("ignoring malformed node record {}: {}", node_id, exc)
        return nodes, lost

    async def live_nodes(self) -> list[NodeInfo]:
        """Every live node record."""
        nodes, _ = await self.scan()
        return nodes

    async def forget(self, node_ids: list[str] | dict[str, int]) -> None:
        """Drop lost nodes from the index and placement (their records already expired)."""
        if node_ids:
            names = list(node_ids)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.keys.node_index, *names)
                pipe.hdel(self.keys.capacity, *names)
                pipe.hdel(self.keys.load, *names)
                await pipe.execute()

    async def publish(self, event: Event) -> None:
        """Publish a membership event on the public channel and on the nodes' control channel."""
        payload = json_encoder.encode(event)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.publish(self.keys.channel, payload)
            pipe.publish(self.keys.control, payload)
            await pipe.execute()

    async def hold_leadership(self, token: str, lease_ms: int, event: Event) -> int:
        """Acquire or renew the leader lease: 1 acquired, 2 renewed, 0 another node leads."""
        return int(await self._scripts.leader(
            keys=[self.keys.leader],
            args=[token, lease_ms, self.keys.channel, json_encoder.encode(event), self.keys.control]))

    async def release_leadership(self, token: str) -> bool:
        return bool(await self._scripts.release(keys=[self.keys.leader], args=[token]))

    async def leader(self) -> str | None:
        """The node id of the current leader, or None."""
        value = await self.redis.get(self.keys.leader)
        if value is None:
            return None
        return _text(value).rpartition(":")[0]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
