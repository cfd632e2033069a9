"""http_request's outbound policy on a two-node cluster with real Redis: jobs aimed at a metadata address
(directly, through a redirect, through a name that resolves to one) fail at once with a clear step error
on whichever node runs them; ``engine.http_allow`` / ``http_deny`` are each node's configuration."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from secauto.engine import netguard
from secauto.node import Node
from tests.support.nodes import auth, node_settings, running_node
from tests.support.web import serving

CLUSTER = "ssrf"


@pytest.fixture
async def redirector() -> AsyncIterator[str]:
    async def to(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": request.query["url"]})

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/to", to)
    app.router.add_get("/ok", ok)
    async with serving(app) as url:
        yield url


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """``metadata.test`` resolves to the metadata address, ``local.test`` to loopback (in-loop nodes share it)."""
    system = netguard.getaddrinfo
    names = {"metadata.test": "169.254.169.254", "local.test": "127.0.0.1"}

    async def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]
        return await system(host, port)

    monkeypatch.setattr(netguard, "getaddrinfo", resolve)


async def run_jobs(http: aiohttp.ClientSession, nodes: list[Node], urls: list[str]) -> list[dict[str, Any]]:
    """Submit one job per URL (alternating nodes) and wait for all; jobs carry a long timeout, so a job
    that hung would show as a timeout rather than a quick refusal."""
    ids = []
    for index, url in enumerate(urls):
        body = {"playbook": [{"action": "http_request", "url": url}], "max_retries": 0, "timeout": 60}
        async with http.post(f"{nodes[index % 2].url}/cluster/jobs", headers=auth(), json=body) as response:
            ids.append((await response.json())["job_id"])
    jobs = []
    async with asyncio.timeout(20):
        for job_id in ids:
            while True:
                async with http.get(f"{nodes[0].url}/cluster/jobs/{job_id}", headers=auth()) as response:
                    job = (await response.json())["job"]
                if job["status"] in ("completed", "failed"):
                    jobs.append(job)
                    break
                await asyncio.sleep(0.05)
    return jobs


async def test_metadata_targets_are_refused_on_every_node(redis_url: str, redirector: str, fake_dns: None) -> None:
    stack = AsyncExitStack()
    nodes = [await stack.enter_async_context(running_node(node_settings(
        f"node-{i}", redis_url=redis_url, cluster_name=CLUSTER))) for i in (1, 2)]
    urls = [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        f"{redirector}/to?url=http://169.254.169.254/latest/meta-data/",
        "http://metadata.test/computeMetadata/v1/",
        f"{redirector}/to?url=http://metadata.test/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/latest/",
    ]
    async with stack, aiohttp.ClientSession() as http:
        started = time.monotonic()
        jobs = await run_jobs(http, nodes, [*urls, f"{redirector}/ok"])
        elapsed = time.monotonic() - started
    *refused, allowed = jobs
    assert allowed["status"] == "completed"
    assert len(refused) == len(urls)
    for job in refused:
        assert job["status"] == "failed" and job["reason"] == "playbook_error", job
        assert "link-local or cloud metadata address" in job["error"] and ": refused" in job["error"], job["error"]
    assert "refused redirect 1 to http://169.254.169.254/latest/meta-data/" in refused[1]["error"]
    assert "metadata.test resolves to 169.254.169.254" in refused[2]["error"]
    assert "refused redirect 1 to http://metadata.test/: metadata.test resolves to" in refused[3]["error"]
    assert elapsed < 15, "refusals must not wait for timeouts"


async def test_each_nodes_allow_and_deny_lists(redis_url: str, redirector: str, fake_dns: None) -> None:
    port = redirector.rpartition(":")[2]
    stack = AsyncExitStack()
    # Both nodes refuse loopback reached as local.test by name; 127.0.0.1 itself stays allowed.
    nodes = [await stack.enter_async_context(running_node(node_settings(
        f"node-{i}", redis_url=redis_url, cluster_name=CLUSTER, engine={"http_deny": ["local.test"]})))
        for i in (1, 2)]
    async with stack, aiohttp.ClientSession() as http:
        denied, redirected, direct = await run_jobs(http, nodes, [
            f"http://local.test:{port}/ok", f"{redirector}/to?url=http://local.test:{port}/ok", f"{redirector}/ok"])
    assert denied["status"] == "failed" and "local.test is listed in engine.http_deny" in denied["error"]
    assert redirected["status"] == "failed" and "refused redirect 1" in redirected["error"]
    assert direct["status"] == "completed"
