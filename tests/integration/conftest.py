"""Fixtures shared by the integration tests of the store's Lua protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from secauto.store.connection import open_embedded


@pytest.fixture(params=["redis", "embedded"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the session's real redis-server (flushed) and, as a second run, of a fresh embedded
    store: the protocol tests run on both, since the embedded mode executes the same Lua scripts."""
    if request.param == "redis":
        conn = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_server").url)
        await conn.flushall()
    else:
        conn = open_embedded()
    try:
        yield conn
    finally:
        await conn.aclose()
