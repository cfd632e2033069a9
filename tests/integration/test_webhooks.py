"""Webhooks with a real local HTTP receiver: signatures, retries, one delivery per event with 3 nodes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from loguru import logger

from secauto.node import Node
from tests.support.nodes import ADMIN_KEY, OPERATOR_KEY, auth, node_settings, running_node
from tests.support.web import serving

CLUSTER = "hooks"
SECRET = "hook-secret-value-5d41402abc4b2a76"


class Receiver:
    """A local webhook endpoint that records deliveries and can fail the first N of them."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.deliveries.append((dict(request.headers), await request.read()))
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=500)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def of(self, kind: str, job_id: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in self.deliveries if h["X-SecAuto-Event"] == kind and job_id.encode() in b]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def start_nodes(redis_url: str, count: int, **sections: Any) -> tuple[AsyncExitStack, list[Node]]:
    stack = AsyncExitStack()
    nodes = [await stack.enter_async_context(running_node(node_settings(
        f"node-{i}", redis_url=redis_url, cluster_name=CLUSTER, **sections))) for i in range(1, count + 1)]
    return stack, nodes


async def submit(session: aiohttp.ClientSession, node: Node, body: dict[str, Any]) -> str:
    async with session.post(f"{node.url}/cluster/jobs", json=body, headers=auth()) as response:
        assert response.status == 200
        return str((await response.json())["job_id"])


async def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_signed_deliveries_once_per_event_with_three_nodes(redis_url: str, receiver: Receiver) -> None:
    hooks = [{"url": receiver.url, "events": ["job.started", "job.completed"], "secret": SECRET, "retries": 2}]
    logs = io.StringIO()
    sink = logger.add(logs, level="DEBUG", format="{message} {extra}")
    stack, nodes = await start_nodes(redis_url, 3, webhooks=hooks)
    try:
        async with stack, aiohttp.ClientSession() as session:
            ids = [await submit(session, nodes[i % 3], {"playbook": [{"action": "log", "message": "x"}]})
                   for i in range(6)]
            await wait_for(lambda: all(receiver.of("job.completed", job_id) for job_id in ids))
            await asyncio.sleep(0.5)  # late duplicates would arrive by now
    finally:
        logger.remove(sink)
    for job_id in ids:
        for kind in ("job.started", "job.completed"):
            [(headers, body)] = receiver.of(kind, job_id)  # exactly one delivery, not one per node
            expected = hmac.new(SECRET.encode(), headers["X-SecAuto-Timestamp"].encode() + b"." + body,
                                hashlib.sha256).hexdigest()
            assert headers["X-SecAuto-Signature"] == f"sha256={expected}"
            assert headers["Content-Type"] == "application/json" and len(headers["X-SecAuto-Delivery"]) == 32
    assert not [h for h, _ in receiver.deliveries if h["X-SecAuto-Event"] == "job.submitted"]  # not subscribed
    assert SECRET not in logs.getvalue()


async def test_failed_deliveries_are_retried(redis_url: str, receiver: Receiver) -> None:
    receiver.fail_first = 2
    hooks = [{"url": receiver.url, "events": ["job.completed"], "retries": 3}]
    stack, [node] = await start_nodes(redis_url, 1, webhooks=hooks)
    async with stack, aiohttp.ClientSession() as session:
        job_id = await submit(session, node, {"playbook": [{"action": "log", "message": "x"}]})
        await wait_for(lambda: len(receiver.of("job.completed", job_id)) == 3, timeout=20)
        deliveries = receiver.of("job.completed", job_id)
        assert len({headers["X-SecAuto-Delivery"] for headers, _ in deliveries}) == 1  # one delivery, 3 tries
        assert "X-SecAuto-Signature" not in deliveries[0][0]  # no secret, no signature
        async with session.get(f"{node.url}/metrics", headers=auth()) as response:
            text = await response.text()
        assert 'secauto_webhook_deliveries_total{outcome="retried"} 2.0' in text
        assert 'secauto_webhook_deliveries_total{outcome="delivered"} 1.0' in text


async def test_webhooks_api_for_admins(redis_url: str, receiver: Receiver) -> None:
    stack, nodes = await start_nodes(redis_url, 2)
    async with stack, aiohttp.ClientSession() as session:
        body = {"url": receiver.url, "events": ["job.completed"], "secret": SECRET}
        async with session.post(f"{nodes[0].url}/webhooks", json=body, headers=auth(OPERATOR_KEY)) as response:
            assert response.status == 403
        for bad in ({**body, "url": "ftp://x.example/hook"}, {**body, "events": ["job.exploded"]},
                    {**body, "timeout": "soon"}):
            async with session.post(f"{nodes[0].url}/webhooks", json=bad, headers=auth(ADMIN_KEY)) as response:
                assert response.status == 400
        async with session.post(f"{nodes[0].url}/webhooks", json=body, headers=auth(ADMIN_KEY)) as response:
            assert response.status == 200
            created = (await response.json())["webhook"]
        assert created["has_secret"] is True and "secret" not in created
        async with session.get(f"{nodes[1].url}/webhooks", headers=auth(ADMIN_KEY)) as response:
            listed = await response.text()
        assert created["id"] in listed and SECRET not in listed
        # The other node learns about it within its refresh period, and one of the two delivers.
        await asyncio.sleep(5.5)
        job_id = await submit(session, nodes[1], {"playbook": [{"action": "log", "message": "x"}]})
        await wait_for(lambda: receiver.of("job.completed", job_id))
        await asyncio.sleep(0.5)
        assert len(receiver.of("job.completed", job_id)) == 1
        async with session.delete(f"{nodes[0].url}/webhooks/{created['id']}", headers=auth(ADMIN_KEY)) as response:
            assert response.status == 200
        async with session.delete(f"{nodes[0].url}/webhooks/{created['id']}", headers=auth(ADMIN_KEY)) as response:
            assert response.status == 404


async def _metric(session: aiohttp.ClientSession, node: Node, line: str) -> bool:
    async with session.get(f"{node.url}/metrics", headers=auth()) as response:
        return line in await response.text()


async def _wait_metric(session: aiohttp.ClientSession, node: Node, line: str, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await _metric(session, node, line):
            await asyncio.sleep(0.1)


async def test_webhooks_obey_the_outbound_policy(redis_url: str, receiver: Receiver) -> None:
    """A webhook to a cloud metadata address, or to a host that engine.http_deny names, is refused
    before any connection, at once and without retries, with an error naming the address."""
    hooks = [{"url": "http://169.254.169.254/latest/meta-data", "events": ["job.completed"], "retries": 3},
             {"url": receiver.url, "events": ["job.completed"], "retries": 3}]
    logs = io.StringIO()
    sink = logger.add(logs, level="ERROR", format="{message}")
    stack, [node] = await start_nodes(redis_url, 1, webhooks=hooks, engine={"http_deny": ["127.0.0.1"]})
    try:
        async with stack, aiohttp.ClientSession() as session:
            await submit(session, node, {"playbook": [{"action": "log", "message": "x"}]})
            await _wait_metric(session, node, 'secauto_webhook_deliveries_total{outcome="failed"} 2.0', timeout=10)
            assert not await _metric(session, node, 'outcome="retried"')
    finally:
        logger.remove(sink)
    assert receiver.deliveries == []
    text = logs.getvalue()
    assert "refused by the outbound policy: 169.254.169.254 is" in text
    assert "refused by the outbound policy: 127.0.0.1 is" in text


async def test_webhook_redirects_are_not_followed(redis_url: str, receiver: Receiver) -> None:
    """A 3xx answer is a failed attempt: following it would take the delivery to an address that was
    never checked."""
    moved: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        moved.append(request.path)
        raise web.HTTPTemporaryRedirect(receiver.url)

    app = web.Application()
    app.router.add_post("/moved", redirect)
    async with serving(app) as base:
        hooks = [{"url": f"{base}/moved", "events": ["job.completed"], "retries": 0}]
        stack, [node] = await start_nodes(redis_url, 1, webhooks=hooks)
        async with stack, aiohttp.ClientSession() as session:
            await submit(session, node, {"playbook": [{"action": "log", "message": "x"}]})
            await _wait_metric(session, node, 'secauto_webhook_deliveries_total{outcome="failed"} 1.0')
    assert moved == ["/moved"] and receiver.deliveries == []
