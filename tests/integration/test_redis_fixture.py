"""Self-tests of the Redis fixtures in tests/conftest.py and tests/support/redis_proc.py."""

from __future__ import annotations

import signal

import redis.asyncio

from tests.conftest import RedisProcessFactory, RedisServer
from tests.support.procs import pid_exists


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _assert_empty_then_write(redis_url: str, value: bytes) -> None:
    """Both databases 0 and 1 must be empty at test start (FLUSHALL, not FLUSHDB); then dirty them."""
    for db in (0, 1):
        client = redis.asyncio.Redis.from_url(f"{redis_url}/{db}")
        try:
            assert await client.dbsize() == 0, f"db {db} not flushed before the test"
            await client.set(b"fixture:probe", value)
        finally:
            await client.aclose()


async def test_server_answers_ping(redis_client: redis.asyncio.Redis) -> None:
    assert await redis_client.ping() is True


async def test_server_is_private(redis_server: RedisServer, redis_client: redis.asyncio.Redis) -> None:
    assert redis_server.port != 6379
    assert redis_server.host == "127.0.0.1"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}"
    info = await redis_client.info("server")
    assert int(info["process_id"]) == redis_server.pid
    assert int(info["tcp_port"]) == redis_server.port
    config = {**await redis_client.config_get("save"), **await redis_client.config_get("appendonly")}
    config = {_text(k): _text(v) for k, v in config.items()}
    assert config == {"save": "", "appendonly": "no"}


async def test_db_empty_at_start_first(redis_url: str) -> None:
    await _assert_empty_then_write(redis_url, b"first")


async def test_db_empty_at_start_second(redis_url: str) -> None:
    await _assert_empty_then_write(redis_url, b"second")


async def test_redis_url_returns_same_server(redis_url: str, redis_server: RedisServer) -> None:
    assert redis_url == redis_server.url


async def test_process_survives_crash_with_aof(redis_process_factory: RedisProcessFactory) -> None:
    server = redis_process_factory(appendonly=True, appendfsync="always")
    port, first_pid = server.port, server.pid
    assert port != 6379
    client = server.client()
    try:
        await client.set(b"k", b"v")
    finally:
        await client.aclose()

    assert server.kill() == -signal.SIGKILL
    assert not pid_exists(first_pid)
    server.start()
    assert server.port == port and server.pid != first_pid

    client = server.client()
    try:
        assert await client.get(b"k") == b"v"
    finally:
        await client.aclose()
