"""Keys, audit and rate limits across several nodes on a real redis-server; HTTPS nodes and rediss://
to a TLS redis-server with a CA and certificates made by the test."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio
import redis.exceptions

from secauto.client import SecautoClient
from secauto.node import Node
from tests.conftest import RedisProcessFactory
from tests.support.nodes import ADMIN_KEY, OPERATOR_KEY, VIEWER_KEY, auth, node_settings, running_node
from tests.support.ports import free_port
from tests.support.tls import TestCA

CLUSTER = "sec-cluster"
JOB = {"playbook": [{"action": "log", "message": "hi"}]}


async def start_nodes(redis_url: str, count: int = 3, **sections: Any) -> tuple[AsyncExitStack, list[Node]]:
    stack = AsyncExitStack()
    nodes = []
    try:
        for index in range(1, count + 1):
            settings = node_settings(f"node-{index}", redis_url=redis_url, cluster_name=CLUSTER, **sections)
            nodes.append(await stack.enter_async_context(running_node(settings)))
    except BaseException:
        await stack.aclose()
        raise
    return stack, nodes


@pytest.fixture
async def nodes(redis_url: str) -> AsyncIterator[list[Node]]:
    stack, started = await start_nodes(redis_url)
    async with stack:
        yield started


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def status_of(http: aiohttp.ClientSession, node: Node, key: str) -> int:
    async with http.get(f"{node.url}/cluster", headers=auth(key)) as response:
        return response.status


async def create_key(http: aiohttp.ClientSession, node: Node, name: str, **extra: Any) -> str:
    async with http.post(f"{node.url}/keys", json={"name": name, "role": "operator", **extra},
                         headers=auth()) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["api_key"])


async def refused_everywhere(http: aiohttp.ClientSession, nodes: list[Node], key: str, limit: float) -> float:
    """Seconds until every node answers 401 to ``key`` (fails past ``limit``)."""
    start = time.monotonic()
    pending = list(nodes)
    async with asyncio.timeout(limit):
        while pending:
            pending = [node for node in pending if await status_of(http, node, key) != 401]
            if pending:
                await asyncio.sleep(0.01)
    return time.monotonic() - start


# ---------------------------------------------------------------------------------------------- keys


async def test_a_key_made_on_one_node_works_on_all_and_its_revocation_holds_within_a_second(
        nodes: list[Node], http: aiohttp.ClientSession) -> None:
    first, second, third = nodes
    secret = await create_key(http, first, "ci")
    assert [await status_of(http, node, secret) for node in nodes] == [200, 200, 200]

    async with http.delete(f"{second.url}/keys/ci", headers=auth()) as response:
        assert response.status == 200
    assert await status_of(http, second, secret) == 401  # the node that revoked: at once
    elapsed = await refused_everywhere(http, nodes, secret, limit=1.0)
    assert elapsed < 1.0

    async with http.get(f"{third.url}/keys", headers=auth()) as response:
        listed = [key["name"] for key in (await response.json())["keys"]]
    assert listed == ["admin", "ops", "view"]
    async with http.delete(f"{third.url}/keys/admin", headers=auth()) as response:
        assert response.status == 409  # config keys cannot be deleted through the API


async def test_expiry_holds_on_every_node_at_once(nodes: list[Node], http: aiohttp.ClientSession) -> None:
    expires = time.time() + 1.0
    moment = datetime.datetime.fromtimestamp(expires, datetime.UTC).isoformat(timespec="milliseconds")
    secret = await create_key(http, nodes[0], "brief", expires_at=moment)
    assert [await status_of(http, node, secret) for node in nodes] == [200, 200, 200]
    await asyncio.sleep(max(0.0, expires - time.time()) + 0.01)
    assert [await status_of(http, node, secret) for node in nodes] == [401, 401, 401]  # no reload needed


async def test_revocation_holds_within_a_second_even_when_the_notice_is_lost(
        nodes: list[Node], http: aiohttp.ClientSession, redis_client: redis.asyncio.Redis) -> None:
    secret = await create_key(http, nodes[0], "quiet")
    assert [await status_of(http, node, secret) for node in nodes] == [200, 200, 200]
    # What DELETE /keys does, minus the pub/sub notice: only the version counter tells the nodes.
    async with redis_client.pipeline(transaction=True) as pipe:
        pipe.hdel(f"secauto:keys:{CLUSTER}", "quiet")
        pipe.incr(f"secauto:keys-version:{CLUSTER}")
        await pipe.execute()
    assert await refused_everywhere(http, nodes, secret, limit=1.0) < 1.0


async def test_last_used_is_recorded_cluster_wide_newest_wins(nodes: list[Node], http: aiohttp.ClientSession,
                                                            redis_client: redis.asyncio.Redis) -> None:
    from actors.keys import FlushUsage

    secret = await create_key(http, nodes[0], "busy")
    assert await status_of(http, nodes[1], secret) == 200
    await nodes[1].system.get("keys").ask(FlushUsage())
    used = await redis_client.zscore(f"secauto:keys-used:{CLUSTER}", "busy")
    assert used is not None
    nodes[2].keyring.touch("busy")
    nodes[2].keyring._last_used["busy"] = used / 1000 - 60  # an older use, flushed later: must not win
    await nodes[2].system.get("keys").ask(FlushUsage())
    assert await redis_client.zscore(f"secauto:keys-used:{CLUSTER}", "busy") == used
    async with http.get(f"{nodes[0].url}/keys", headers=auth()) as response:
        listed = {key["name"]: key for key in (await response.json())["keys"]}
    assert listed["busy"]["last_used_at"] is not None and listed["busy"]["source"] == "api"


# --------------------------------------------------------------------------------------------- audit


async def test_the_audit_trail_is_cluster_wide(nodes: list[Node], http: aiohttp.ClientSession) -> None:
    first, second, third = nodes
    async with http.post(f"{first.url}/cluster/jobs", json=JOB, headers=auth(OPERATOR_KEY)) as response:
        job_id = (await response.json())["job_id"]
    async with http.post(f"{second.url}/cluster/jobs", json=JOB, headers=auth(VIEWER_KEY)) as response:
        assert response.status == 403
    async with http.get(f"{second.url}/cluster", headers={"X-API-Key": "guess-0123456789abcdef"}) as response:
        assert response.status == 401
    async with http.get(f"{first.url}/cluster/jobs/{job_id}", headers=auth()) as response:
        assert (await response.json())["job"]["submitted_by"] == "ops"
    async with asyncio.timeout(5):  # each node writes its batch within ~100 ms
        while True:
            async with http.get(f"{third.url}/audit", headers=auth()) as response:
                entries = (await response.json())["entries"]
            if len(entries) == 3:
                break
            await asyncio.sleep(0.05)
    assert sorted((e["node_id"], e["action"], e["actor"], e["status"]) for e in entries) == [
        ("node-1", "job.submit", "ops", 200), ("node-2", "GET /cluster", None, 401),
        ("node-2", "job.submit", "view", 403)]


async def test_the_audit_stream_is_bounded_in_length_and_age(redis_url: str, http: aiohttp.ClientSession,
                                                            redis_client: redis.asyncio.Redis) -> None:
    stack, (node,) = await start_nodes(redis_url, 1, security={"audit_retention": 1, "audit_max_entries": 100})
    async with stack:
        for _ in range(130):
            async with http.post(f"{node.url}/keys", json={"name": "x y", "role": "viewer"},
                                 headers=auth()) as response:
                assert response.status == 400
        async with http.get(f"{node.url}/audit?limit=500", headers=auth()) as response:
            assert len((await response.json())["entries"]) == 100
        assert await redis_client.xlen(f"secauto:audit:{CLUSTER}") == 100
        await asyncio.sleep(1.1)  # past the retention: not listed, and trimmed at the next write
        async with http.get(f"{node.url}/audit", headers=auth()) as response:
            assert (await response.json())["entries"] == []
        async with http.delete(f"{node.url}/keys/nobody", headers=auth()) as response:
            assert response.status == 404
        async with http.get(f"{node.url}/audit", headers=auth()) as response:
            assert [e["action"] for e in (await response.json())["entries"]] == ["key.delete"]
        assert await redis_client.xlen(f"secauto:audit:{CLUSTER}") == 1


# --------------------------------------------------------------------------------------- rate limits


async def test_rate_limits_are_per_node(redis_url: str, http: aiohttp.ClientSession) -> None:
    stack, (first, second) = await start_nodes(redis_url, 2, security={"rate_limit": {"per_second": 0.2, "burst": 2}})
    async with stack:
        assert [await status_of(http, first, VIEWER_KEY) for _ in range(3)] == [200, 200, 429]
        assert await status_of(http, second, VIEWER_KEY) == 200  # its own bucket (see README: per node)


async def test_max_pending_is_a_cluster_wide_quota(nodes: list[Node], http: aiohttp.ClientSession) -> None:
    first, second, third = nodes
    secret = await create_key(http, first, "bounded", max_pending=2)
    later = {**JOB, "run_at": "2999-01-01T00:00:00Z"}  # stays pending
    ids = []
    for node in (first, second):
        async with http.post(f"{node.url}/cluster/jobs", json=later, headers=auth(secret)) as response:
            assert response.status == 200
            ids.append((await response.json())["job_id"])
    for node, path, body in ((third, "/cluster/jobs", later), (first, "/cluster/jobs/batch", {"jobs": [later]})):
        async with http.post(f"{node.url}{path}", json=body, headers=auth(secret)) as response:
            assert response.status == 429
            assert response.headers["Retry-After"].isdigit()
            assert (await response.json())["error"]["code"] == "quota_exceeded"
    async with http.post(f"{third.url}/cluster/jobs", json=later, headers=auth(OPERATOR_KEY)) as response:
        assert response.status == 200  # other keys are not affected
    async with http.delete(f"{second.url}/cluster/jobs/{ids[0]}", headers=auth(OPERATOR_KEY)) as response:
        assert response.status == 200  # cancelled: its place is free again, whoever cancelled it
    async with http.post(f"{third.url}/cluster/jobs", json=JOB, headers=auth(secret)) as response:
        assert response.status == 200
        quick = (await response.json())["job_id"]
    async with asyncio.timeout(10):  # it runs and completes: its place is free again
        while True:
            async with http.post(f"{first.url}/cluster/jobs", json=later, headers=auth(secret)) as response:
                if response.status == 200:
                    break
            await asyncio.sleep(0.05)
    async with http.get(f"{first.url}/cluster/jobs/{quick}", headers=auth()) as response:
        assert (await response.json())["job"]["status"] == "completed"
    async with asyncio.timeout(5):  # the other nodes write their entries within ~100 ms
        while True:
            async with http.get(f"{first.url}/audit?actor=bounded&action=job.", headers=auth()) as response:
                statuses = [entry["status"] for entry in (await response.json())["entries"]]
            if statuses.count(200) == 4:  # 2 pending, the quick one, the last one
                break
            await asyncio.sleep(0.05)
    assert statuses.count(429) >= 2


# ----------------------------------------------------------------------------------------------- TLS


def tls_redis(factory: RedisProcessFactory, ca: TestCA, *, client_certs: bool) -> int:
    server = ca.issue("redis")
    port = free_port("127.0.0.1")
    factory(extra_args=["--tls-port", str(port), "--tls-cert-file", str(server.cert), "--tls-key-file",
                        str(server.key), "--tls-ca-cert-file", str(ca.cert),
                        "--tls-auth-clients", "yes" if client_certs else "no"])
    return port


async def test_https_node_on_a_tls_redis(tmp_path: Path, redis_process_factory: RedisProcessFactory) -> None:
    ca = TestCA(tmp_path / "ca")
    redis_port = tls_redis(redis_process_factory, ca, client_certs=False)
    web_cert = ca.issue("node")
    settings = node_settings("tls-node", redis_url=f"rediss://127.0.0.1:{redis_port}", cluster_name=CLUSTER,
                             server={"tls_cert": str(web_cert.cert), "tls_key": str(web_cert.key)},
                             cluster={"redis_ca_file": str(ca.cert)})
    trusting = ssl.create_default_context(cafile=str(ca.cert))
    async with running_node(settings) as node:
        assert node.url.startswith("https://")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{node.url}/cluster/jobs", json=JOB, headers=auth(ADMIN_KEY), ssl=trusting) as resp:
                assert resp.status == 200
                assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
                job_id = (await resp.json())["job_id"]
            async with asyncio.timeout(10):  # it ran: the node reads and writes Redis over TLS
                while True:
                    async with http.get(f"{node.url}/cluster/jobs/{job_id}", headers=auth(), ssl=trusting) as resp:
                        if (await resp.json())["job"]["status"] == "completed":
                            break
                    await asyncio.sleep(0.05)
            with pytest.raises(aiohttp.ClientConnectorCertificateError):  # not signed by a CA the client trusts
                await http.get(f"{node.url}/health", ssl=ssl.create_default_context())
            async with SecautoClient(node.url, ADMIN_KEY, ca_file=str(ca.cert)) as client:  # secauto --ca-file
                assert (await client.get_job(job_id))["status"] == "completed"
            plain = node.url.replace("https://", "http://")
            with pytest.raises(aiohttp.ClientError):  # no plain HTTP on the TLS port
                async with http.get(f"{plain}/health") as resp:
                    await resp.read()


async def test_rediss_with_a_client_certificate_and_a_checked_ca(tmp_path: Path,
                                                                 redis_process_factory: RedisProcessFactory) -> None:
    ca = TestCA(tmp_path / "ca")
    redis_port = tls_redis(redis_process_factory, ca, client_certs=True)
    client = ca.issue("secauto-client", client=True)
    url = f"rediss://127.0.0.1:{redis_port}"
    settings = node_settings("mtls-node", redis_url=url, cluster_name=CLUSTER,
                             cluster={"redis_ca_file": str(ca.cert), "redis_cert_file": str(client.cert),
                                      "redis_key_file": str(client.key)})
    async with running_node(settings) as node, aiohttp.ClientSession() as http, http.get(f"{node.url}/health") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "healthy"
    # Without the client certificate the server refuses; with another CA the node refuses the server.
    for options in ({"ssl_ca_certs": str(ca.cert)}, {"ssl_ca_certs": str(TestCA(tmp_path / "other").cert),
                                                     "ssl_certfile": str(client.cert), "ssl_keyfile": str(client.key)}):
        probe = redis.asyncio.Redis.from_url(url, socket_connect_timeout=2, **options)
        try:
            with pytest.raises((redis.exceptions.ConnectionError, ssl.SSLError)):
                await probe.ping()
        finally:
            await probe.aclose()
