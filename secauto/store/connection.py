"""Opens the Redis client a node uses: a real server in any accepted URL form, or the embedded store.

The embedded store (``cluster.enabled: false``) is an in-process fakeredis server with Lua support, so
a standalone node runs exactly the same scripts and actors as a cluster node, with no Redis anywhere.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from secauto.config import RedisTarget, Settings

# Commands fail over to a reconnect a few times before an error reaches the caller; longer outages
# are the callers' business (they back off and report through /health).
_CLIENT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 5.0,
    "socket_timeout": 10.0,
    "socket_keepalive": True,
    "health_check_interval": 15,
    "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 2),
    "retry_on_error": [RedisConnectionError, RedisTimeoutError],
}

# Errors that mean "Redis cannot take this now, retry later": unreachable, too slow, or a primary that
# became a replica under our feet (a Sentinel failover, an operator's REPLICAOF).
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)


class FollowingSentinelPool(SentinelConnectionPool):
    """A Sentinel pool that never reuses a connection to a primary that was replaced.

    redis-py drops the *idle* connections when it learns of a new primary, but a connection that was in
    use at that moment (a command blocked by the failover's write pause, a slow script) goes back to the
    pool still connected to the old primary, and the next command on it writes there: heartbeats,
    leases and the leader lease land on a server whose writes are discarded when it resynchronises, so
    a node looks dead to the others, or two nodes both believe they lead. Here such a connection is
    disconnected as it is released; its next use connects to the current primary.
    """

    async def release(self, connection: Any) -> None:
        stale = (self.is_master and self.master_address is not None and connection.is_connected
                 and (connection.host, connection.port) != tuple(self.master_address))
        if stale:
            await connection.disconnect()
        await super().release(connection)


def redis_tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py's TLS options for a ``rediss://`` URL: the CA bundle (``cluster.redis_ca_file``, else
    the system's trust store) and the client certificate, if configured. The server's certificate and
    host name are always verified. Empty for other URLs."""
    cluster = settings.config.cluster
    if not settings.redis.url.startswith("rediss://"):
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if cluster.redis_ca_file:
        options["ssl_ca_certs"] = str(settings.file(cluster.redis_ca_file))
    if cluster.redis_cert_file:
        options["ssl_certfile"] = str(settings.file(cluster.redis_cert_file))
        options["ssl_keyfile"] = str(settings.file(cluster.redis_key_file))
    return options


def open_redis(target: RedisTarget, *, password: str = "", db: int = 0, tls: dict[str, Any] | None = None) -> Redis:
    """A client for ``target``. Connects lazily: nothing is sent until the first command. ``tls`` are
    :func:`redis_tls_options` (only for a ``rediss://`` target)."""
    if target.sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            list(target.sentinels), sentinel_kwargs={"socket_connect_timeout": 2.0},
                            password=password or None, db=db, **_CLIENT_OPTIONS)
        client: Redis = sentinel.master_for(target.service_name, connection_pool_class=FollowingSentinelPool)
        return client
    return Redis.from_url(target.url, **_CLIENT_OPTIONS, **(tls or {}))


def open_embedded() -> Redis:
    """An in-process Redis (fakeredis with Lua) private to this node."""
    import fakeredis

    client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), lua_modules=set())
    return client


async def follow_failover(redis: Redis) -> str | None:
    """With Sentinel: ask the sentinels where the primary is now and, if it moved, drop the idle
    connections so that the next commands go to the new primary. Returns ``host:port`` when it moved.

    redis-py only asks the sentinels when it opens a connection, and a demoted primary accepts writes
    until Sentinel reconfigures it (seconds later): without this, a node keeps writing to the old
    primary, and those writes are lost when it resynchronises. Raises redis-py's connection errors when
    no sentinel answers. Does nothing (None) without Sentinel.
    """
    pool = redis.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return None
    before = pool.master_address
    after = await pool.get_master_address()  # type: ignore[no-untyped-call, unused-ignore]
    if before is None or after == before:
        return None
    return f"{after[0]}:{after[1]}"
