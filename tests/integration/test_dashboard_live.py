"""The dashboard's live hub against a real Redis (cluster mode): one subscription to the event
channel per node whatever the number of open tabs, none while no tab is open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from secauto.node import Node
from secauto.ui import live
from tests.support.nodes import node_settings
from tests.unit.ui.conftest import new_tab, submit, wait_status
from tests.unit.ui.test_live import stream, subscribers


@pytest.fixture
async def node(redis_url: str) -> AsyncIterator[Node]:
    node = Node(node_settings("ui-node", redis_url=redis_url, ui={"live_interval": 0.2}))
    await node.start()
    try:
        yield node
    finally:
        await node.stop(grace=0)


async def test_one_subscription_per_node_whatever_the_number_of_tabs(node: Node,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "KEEPALIVE_S", 0.2)  # a closed tab is noticed at the next write
    tabs = [await new_tab(node) for _ in range(3)]
    try:
        for tab in tabs:
            await tab.login()
        assert await subscribers(node) == 0  # nobody watching: the node stays off the channel
        async with stream(tabs[0]) as first, stream(tabs[1]), stream(tabs[2]):
            async with asyncio.timeout(5):
                while await subscribers(node) < 1:
                    await asyncio.sleep(0.01)
            assert await subscribers(node) == 1
            job_id = await submit(node, {"playbook": [{"action": "log", "message": "x"}]})
            await wait_status(node, job_id, {"completed"})
            async with asyncio.timeout(5):
                while not first.changed:
                    await asyncio.sleep(0.01)
            status, text, _ = await tabs[0].get("/ui/events")
            assert status == 200 and job_id in text and "job.completed" in text and "job.submitted" in text
            status, text, _ = await tabs[0].get("/ui/events?type=node.")
            assert status == 200 and job_id not in text
            status, _, _ = await tabs[0].get("/ui/events?type=bogus")
            assert status == 400
        async with asyncio.timeout(5):
            while await subscribers(node) != 0:  # the last tab left: unsubscribed
                await asyncio.sleep(0.01)
    finally:
        for tab in tabs:
            await tab.http.close()
