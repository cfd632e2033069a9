"""Opens the Redis client a node uses: a real server in any accepted URL form, or the embedded store.

The embedded store (``cluster.enabled: false``) is an in-process fakeredis server with Lua support, so
a standalone node runs exactly the same scripts and actors as a cluster node, with no Redis anywhere.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from secauto.config import RedisTarget

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


def open_redis(target: RedisTarget, *, password: str = "", db: int = 0) -> Redis:
    """A client for ``target``. Connects lazily: nothing is sent until the first command."""
    if target.sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels), sentinel_kwargs={"socket_connect_timeout": 2.0},
                            password=password or None, db=db, **_CLIENT_OPTIONS)
        client: Redis = sentinel.master_for(target.service_name)
        return client
    return Redis.from_url(target.url, **_CLIENT_OPTIONS)


def open_embedded() -> Redis:
    """An in-process Redis (fakeredis with Lua) private to this node."""
    import fakeredis

    client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), lua_modules=set())
    return client
