"""Live pages: one SSE connection per tab used as a throttled signal, one event subscription per node."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from secauto.models import json_encoder, make_event
from secauto.node import Node
from secauto.ui import live
from tests.unit.ui.conftest import Tab

CHANNEL = "secauto:events:test-cluster"


class Stream:
    """A tab's /ui/live connection, read in the background: when each ``changed`` message came."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.changed: list[float] = []
        self.data: list[str] = []
        self.ended = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async for raw in self.response.content:
                line = raw.decode().rstrip("\n")
                if line == "event: changed":
                    self.changed.append(loop.time())
                elif line.startswith("data: "):
                    self.data.append(line[6:])
        finally:
            self.ended.set()


@contextlib.asynccontextmanager
async def stream(tab: Tab) -> AsyncIterator[Stream]:
    async with tab.http.get("/ui/live") as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        assert response.headers["Content-Security-Policy"]
        assert await response.content.readline() == b"retry: 5000\n"
        reader = Stream(response)
        try:
            yield reader
        finally:
            reader.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await reader.reader


async def subscribers(node: Node) -> int:
    counts = await node.redis.pubsub_numsub(CHANNEL)
    return int(counts[0][1])


async def test_a_burst_of_10000_events_is_a_bounded_number_of_signals(node: Node, tab: Tab) -> None:
    await tab.login()
    interval = node.settings.config.ui.live_interval  # 0.2 s in these tests (2 s by default)
    async with stream(tab) as signals:
        async with asyncio.timeout(5):
            while await subscribers(node) < 1:
                await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for chunk in range(10):
            async with node.redis.pipeline(transaction=False) as pipe:
                for index in range(chunk * 1000, chunk * 1000 + 1000):
                    pipe.publish(CHANNEL, json_encoder.encode(make_event("job.submitted", job_id=f"job-{index}")))
                await pipe.execute()
        async with asyncio.timeout(30):  # until the hub relayed the last one
            while "job-9999" not in (await tab.get("/ui/events", headers={"HX-Request": "true"}))[1]:
                await asyncio.sleep(0.05)
        await asyncio.sleep(2 * interval)  # the trailing signal
        elapsed = loop.time() - started
    count = len(signals.changed)
    print(f"10,000 events in {elapsed:.2f} s -> {count} signals (interval {interval} s)")
    assert 1 <= count <= elapsed / interval + 2
    gaps = [later - earlier for earlier, later in zip(signals.changed, signals.changed[1:], strict=False)]
    # never two signals much closer than the interval (the client reads them with some jitter)
    assert all(gap >= interval * 0.5 for gap in gaps), gaps


async def test_a_stream_ends_when_its_session_ends(node: Node, tab: Tab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "KEEPALIVE_S", 0.2)
    await tab.login()
    async with stream(tab) as signals:
        status, _, _ = await tab.post("/ui/logout", {})
        assert status == 303
        async with asyncio.timeout(5):
            await signals.ended.wait()
    assert signals.data[-1] == "ended"  # a last signal: the page refetches, gets 401 and goes to the login page
