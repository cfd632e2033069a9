"""The Sentinel pool never hands out a connection to a primary that was replaced (the e2e failover test
shows what happens otherwise: heartbeats and leader leases written to the demoted primary)."""

from __future__ import annotations

from typing import Any

from secauto.config import RedisTarget
from secauto.store.connection import FollowingSentinelPool, open_redis


class _Manager:
    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        return self.address


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.is_connected = host, port, True

    async def disconnect(self, nowait: bool = False) -> None:
        self.is_connected = False

    def should_reconnect(self) -> bool:
        return False

    async def re_auth(self) -> None:  # redis-py's listener after every release
        return None


async def _pool_with(connections: list[Any], manager: _Manager) -> FollowingSentinelPool:
    pool = FollowingSentinelPool("mymaster", manager)
    await pool.get_master_address()
    pool._in_use_connections.update(connections)
    return pool


async def test_a_connection_in_use_when_the_primary_moved_is_disconnected_on_release() -> None:
    manager = _Manager(("127.0.0.1", 7000))
    old, other = _Connection("127.0.0.1", 7000), _Connection("127.0.0.1", 7000)
    pool = await _pool_with([old, other], manager)
    await pool.release(other)  # the primary has not moved: kept as it is
    assert other.is_connected
    manager.address = ("127.0.0.1", 7001)
    await pool.get_master_address()  # the failover is noticed while `old` is in use
    await pool.release(old)
    assert not old.is_connected, "a connection to the old primary went back to the pool connected"
    assert old in pool._available_connections  # reusable: it connects to the new primary when next used


def test_sentinel_clients_use_the_following_pool() -> None:
    target = RedisTarget(url="", display="sentinel", sentinels=(("127.0.0.1", 26379),), service_name="mymaster")
    client = open_redis(target)
    assert isinstance(client.connection_pool, FollowingSentinelPool)
