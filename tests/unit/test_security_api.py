"""Keys, the audit trail, rate limits and security headers through the HTTP API of a standalone node
(embedded store: the same code as in cluster mode)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from loguru import logger

from actors.keys import FlushUsage
from secauto.api.middlewares import API_CSP, security_headers
from secauto.api.spec import declared_operation
from secauto.keyring import digest_of
from secauto.node import Node
from tests.support.nodes import ADMIN_KEY, OPERATOR_KEY, VIEWER_KEY, auth, node_settings, running_node

JOB = {"playbook": [{"action": "log", "message": "hi"}]}


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with running_node(node_settings("solo")) as node:
        yield node


@pytest.fixture
async def http(node: Node) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=node.url) as session:
        yield session


async def audit_entries(http: aiohttp.ClientSession, query: str = "") -> list[dict[str, Any]]:
    async with http.get(f"/audit{query}", headers=auth()) as response:
        assert response.status == 200, await response.text()
        entries: list[dict[str, Any]] = (await response.json())["entries"]
        return entries


async def make_key(http: aiohttp.ClientSession, **body: Any) -> dict[str, Any]:
    async with http.post("/keys", json=body, headers=auth()) as response:
        assert response.status == 200, await response.text()
        made: dict[str, Any] = await response.json()
        return made


# ---------------------------------------------------------------------------------------------- keys


async def test_key_lifecycle_create_use_list_revoke(http: aiohttp.ClientSession, node: Node) -> None:
    made = await make_key(http, name="ci-bot", role="operator")
    secret = made["api_key"]
    assert secret.startswith("secauto_") and len(secret) > 40
    assert made["key"]["source"] == "api" and made["key"]["created_by"] == "admin"
    stored = await node.redis.hgetall("secauto:keys:test-cluster")
    assert secret.encode() not in b"".join(stored.values())  # only the digest is stored

    async with http.post("/cluster/jobs", json=JOB, headers=auth(secret)) as response:
        assert response.status == 200
        job_id = (await response.json())["job_id"]
    async with http.get(f"/cluster/jobs/{job_id}", headers=auth()) as response:
        assert (await response.json())["job"]["submitted_by"] == "ci-bot"

    async with http.get("/keys", headers=auth()) as response:
        listed = {key["name"]: key for key in (await response.json())["keys"]}
    assert secret not in json.dumps(listed)
    assert [listed[name]["source"] for name in ("admin", "ops", "view", "ci-bot")] == ["config"] * 3 + ["api"]
    assert listed["ci-bot"]["last_used_at"] is not None and listed["ops"]["last_used_at"] is None

    async with http.delete("/keys/ci-bot", headers=auth()) as response:
        assert response.status == 200
    async with http.get("/cluster", headers=auth(secret)) as response:
        assert response.status == 401  # revoked on this node by the time DELETE answered


async def test_a_new_key_and_its_digest_never_reach_the_logs(http: aiohttp.ClientSession, node: Node) -> None:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message.record["message"]) + repr(message.record["extra"])),
                      level="TRACE")
    try:
        made = await make_key(http, name="quiet", role="operator")
        async with http.post("/cluster/jobs", json=JOB, headers=auth(made["api_key"])) as response:
            assert response.status == 200
        await node.system.get("keys").ask(FlushUsage())
        await audit_entries(http)
    finally:
        logger.remove(sink)
    text = "\n".join(lines)
    assert "quiet" in text  # the key's name is logged (audit lines) ...
    secret = made["api_key"]
    assert secret not in text and secret[8:30] not in text  # ... never the key ...
    assert digest_of(secret).hex() not in text  # ... nor its digest


async def test_last_used_is_flushed_in_one_batch(http: aiohttp.ClientSession, node: Node) -> None:
    for _ in range(20):
        async with http.get("/cluster", headers=auth(VIEWER_KEY)) as response:
            assert response.status == 200
    assert await node.redis.zrange("secauto:keys-used:test-cluster", 0, -1) == []  # nothing written per request
    await node.system.get("keys").ask(FlushUsage())
    used = dict(await node.redis.zrange("secauto:keys-used:test-cluster", 0, -1, withscores=True))
    assert list(used) == [b"view"]  # 20 uses, one write


async def test_key_mistakes_are_4xx_and_change_nothing(http: aiohttp.ClientSession, node: Node) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"name": "bad name", "role": "viewer"}, 400, "name"),
        ({"name": "x\n", "role": "viewer"}, 400, "name"),
        ({"name": "ok", "role": "root"}, 400, "role"),
        ({"name": "ok", "role": "viewer", "key": "mine"}, 400, "key"),
        ({"name": "ok", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}, 400, "expires_at"),
        ({"name": "ok", "role": "viewer", "expires_at": "2999-01-01T00:00:00"}, 400, "expires_at"),
        ({"name": "ok", "role": "viewer", "max_pending": 0}, 400, "max_pending"),
        ({"name": "ok", "role": "viewer", "rate_limit": {"per_second": 1}}, 400, "rate_limit.burst"),
        ({"name": "admin", "role": "viewer"}, 409, ""),  # a config key's name
    ]
    for body, status, field in cases:
        async with http.post("/keys", json=body, headers=auth()) as response:
            assert response.status == status, (body, await response.text())
            error = (await response.json())["error"]
            if field:
                assert error["details"][0]["field"] == field
    assert await node.redis.hlen("secauto:keys:test-cluster") == 0
    async with http.post("/keys", json={"name": "ok", "role": "viewer"}, headers=auth(OPERATOR_KEY)) as response:
        assert response.status == 403
    async with http.delete("/keys/admin", headers=auth()) as response:
        assert response.status == 409  # config keys stay
    async with http.delete("/keys/nobody", headers=auth()) as response:
        assert response.status == 404
    async with http.get("/cluster", headers=auth()) as response:
        assert response.status == 200


async def test_expired_key_is_refused_without_a_reload(http: aiohttp.ClientSession, node: Node) -> None:
    made = await make_key(http, name="temp", role="viewer", expires_at="2999-01-01T00:00:00Z")
    async with http.get("/cluster", headers=auth(made["api_key"])) as response:
        assert response.status == 200
    node.keyring.clock = lambda: 32_503_680_000.0 + 1  # 2999-01-01 plus a second
    async with http.get("/cluster", headers=auth(made["api_key"])) as response:
        assert response.status == 401
        assert "expired" in (await response.json())["error"]["message"]


# --------------------------------------------------------------------------------------------- audit


async def test_state_changes_and_refusals_are_audited_reads_are_not(http: aiohttp.ClientSession) -> None:
    async with http.post("/cluster/jobs", json=JOB, headers=auth(OPERATOR_KEY)) as response:
        job_id = (await response.json())["job_id"]
    async with http.delete(f"/cluster/jobs/{job_id}", headers=auth(OPERATOR_KEY)) as response:
        assert response.status in (200, 409)
    async with http.get(f"/cluster/jobs/{job_id}", headers=auth(VIEWER_KEY)) as response:
        assert response.status == 200  # a read: not audited
    async with http.post("/validate", json=JOB["playbook"], headers=auth(VIEWER_KEY)) as response:
        assert response.status == 200  # declared audit=False: changes nothing
    async with http.post("/cluster/jobs", json=JOB) as response:
        assert response.status == 401
    async with http.get("/cluster", headers=auth("not-a-key-at-all")) as response:
        assert response.status == 401  # a refused read is audited
    async with http.delete("/cluster/dlq/job-x", headers=auth(OPERATOR_KEY)) as response:
        assert response.status == 403
    async with http.post("/cluster/jobs", json={"playbook": "nope"}, headers=auth(OPERATOR_KEY)) as response:
        assert response.status == 400  # a failed state change is audited as a failure

    entries = await audit_entries(http)
    assert [(e["action"], e["actor"], e["role"], e["status"], e["outcome"]) for e in entries] == [
        ("job.submit", "ops", "operator", 400, "failure"),
        ("dlq.delete", "ops", "operator", 403, "failure"),
        ("GET /cluster", None, None, 401, "failure"),
        ("job.submit", None, None, 401, "failure"),
        ("job.cancel", "ops", "operator", entries[4]["status"], entries[4]["outcome"]),
        ("job.submit", "ops", "operator", 200, "success"),
    ]
    assert entries[5]["target"] == job_id and entries[4]["target"] == job_id
    assert entries[1]["target"] == "job-x" and entries[2]["target"] is None
    assert all(e["source_ip"] == "127.0.0.1" and e["node_id"] == "solo" and e["timestamp"].endswith("Z")
               for e in entries)


async def test_secret_and_schedule_changes_are_audited_by_name_never_by_value() -> None:
    value = "tok-0123456789abcdef-unique"
    settings = node_settings("vaulted", security={"secret_key": "k" * 40, "api_keys": [
        {"name": "admin", "key": ADMIN_KEY, "role": "admin"},
        {"name": "ops", "key": OPERATOR_KEY, "role": "operator"}]})
    async with running_node(settings) as node, aiohttp.ClientSession(base_url=node.url) as http:
        async with http.post("/secrets", json={"name": "vt_token", "value": value}, headers=auth()) as response:
            assert response.status == 200
        schedule = {"name": "nightly", "cron": "30 2 * * *", "playbook": JOB["playbook"]}
        async with http.post("/schedules", json=schedule, headers=auth(OPERATOR_KEY)) as response:
            assert response.status == 200
        async with http.post("/schedules/nightly/pause", headers=auth(OPERATOR_KEY)) as response:
            assert response.status == 200
        async with http.delete("/secrets/vt_token", headers=auth()) as response:
            assert response.status == 200
        entries = await audit_entries(http)
    assert [(e["action"], e["target"], e["actor"]) for e in entries] == [
        ("secret.delete", "vt_token", "admin"), ("schedule.pause", "nightly", "ops"),
        ("schedule.create", "nightly", "ops"), ("secret.put", "vt_token", "admin")]
    assert value not in json.dumps(entries)


async def test_audit_filters_and_cursor_pages(http: aiohttp.ClientSession) -> None:
    for key in (OPERATOR_KEY, OPERATOR_KEY, ADMIN_KEY):
        async with http.post("/cluster/jobs", json=JOB, headers=auth(key)) as response:
            assert response.status == 200
    async with http.post("/keys", json={"name": "k1", "role": "viewer"}, headers=auth()) as response:
        assert response.status == 200
    assert [e["action"] for e in await audit_entries(http, "?actor=ops")] == ["job.submit", "job.submit"]
    assert [e["action"] for e in await audit_entries(http, "?action=key.")] == ["key.create"]
    assert len(await audit_entries(http, "?action=job.submit")) == 3
    assert await audit_entries(http, "?since=2999-01-01T00:00:00Z") == []
    assert len(await audit_entries(http, "?since=2000-01-01T00:00:00.5%2B02:00")) == 4
    seen: list[str] = []
    cursor = ""
    while True:
        async with http.get(f"/audit?limit=1{cursor}", headers=auth()) as response:
            page = await response.json()
        seen += [entry["id"] for entry in page["entries"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    everything = [entry["id"] for entry in await audit_entries(http)]
    assert seen == everything and len(everything) == 4 and everything == sorted(everything, reverse=True)
    for bad in ("?limit=0", "?limit=501", "?cursor=12", "?since=yesterday", "?since=0.5", "?actor=", "?colour=red",
                "?since=2024-02-30T00:00:00Z", "?since=2024-01-01T00:00:00"):
        async with http.get(f"/audit{bad}", headers=auth()) as response:
            assert response.status == 400, bad


async def test_a_route_without_an_audit_name_is_audited_by_method_and_route(
        http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch) -> None:
    from secauto.api import dlq

    unnamed = msgspec.structs.replace(declared_operation(dlq.delete_dead_letter), audit=None)  # type: ignore[arg-type]
    monkeypatch.setattr(dlq.delete_dead_letter, "__secauto_operation__", unnamed)
    async with http.delete("/cluster/dlq/job-gone", headers=auth()) as response:
        assert response.status == 404
    [entry] = await audit_entries(http)
    assert entry["action"] == "DELETE /cluster/dlq/{job_id}" and entry["target"] == "job-gone"


async def test_every_audit_entry_is_a_component_audit_log_line(http: aiohttp.ClientSession) -> None:
    lines: list[dict[str, Any]] = []
    sink = logger.add(lambda message: lines.append(message.record["extra"] | {"text": message.record["message"]}),
                      filter=lambda record: record["extra"].get("component") == "audit", level="INFO")
    try:
        async with http.post("/cluster/jobs", json=JOB, headers=auth(OPERATOR_KEY)) as response:
            job_id = (await response.json())["job_id"]
        async with http.post("/cluster/jobs", json=JOB, headers=auth("wrong-key-0123456789")) as response:
            assert response.status == 401
        async with asyncio.timeout(5):
            while len(lines) < 2:
                await asyncio.sleep(0.01)
    finally:
        logger.remove(sink)
    assert lines[0]["action"] == "job.submit" and lines[0]["target"] == job_id and lines[0]["actor"] == "ops"
    assert lines[1]["status"] == 401 and lines[1]["actor"] is None
    assert "wrong-key-0123456789" not in json.dumps(lines)  # a presented key is never logged


async def test_source_ip_comes_from_forwarded_for_only_behind_a_trusted_proxy() -> None:
    forged = {"X-Forwarded-For": "6.6.6.6", **auth(OPERATOR_KEY)}
    async with running_node(node_settings("direct")) as node, aiohttp.ClientSession(base_url=node.url) as http:
        async with http.post("/cluster/jobs", json=JOB, headers=forged) as response:
            assert response.status == 200
        assert [e["source_ip"] for e in await audit_entries(http)] == ["127.0.0.1"]  # not forgeable
    trusting = node_settings("proxied", server={"trusted_proxies": ["127.0.0.0/8"]})
    async with running_node(trusting) as node, aiohttp.ClientSession(base_url=node.url) as http:
        proxied = {"X-Forwarded-For": "6.6.6.6, 198.51.100.7", **auth(OPERATOR_KEY)}
        async with http.post("/cluster/jobs", json=JOB, headers=proxied) as response:
            assert response.status == 200
        assert [e["source_ip"] for e in await audit_entries(http)] == ["198.51.100.7"]


# -------------------------------------------------------------------------------------- rate limits


async def test_rate_limit_answers_429_with_retry_after_and_is_audited() -> None:
    settings = node_settings("limited", security={"rate_limit": {"per_second": 0.5, "burst": 2}, "api_keys": [
        {"name": "admin", "key": ADMIN_KEY, "role": "admin", "rate_limit": {"per_second": 1000, "burst": 1000}},
        {"name": "view", "key": VIEWER_KEY, "role": "viewer"},
        {"name": "ops", "key": OPERATOR_KEY, "role": "operator"}]})
    async with running_node(settings) as node, aiohttp.ClientSession(base_url=node.url) as http:
        statuses = []
        for _ in range(3):
            async with http.get("/cluster", headers=auth(VIEWER_KEY)) as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert response.headers["Retry-After"] == "2"
                    assert (await response.json())["error"]["code"] == "rate_limited"
        assert statuses == [200, 200, 429]
        async with http.get("/cluster", headers=auth(OPERATOR_KEY)) as response:
            assert response.status == 200  # another key has its own bucket
        async with http.get("/health", headers=auth(VIEWER_KEY)) as response:
            assert response.status == 200  # public routes take no token
        entries = await audit_entries(http)
        assert [(e["action"], e["actor"], e["status"]) for e in entries] == [("GET /cluster", "view", 429)]


# ----------------------------------------------------------------------------------- security headers


def assert_security_headers(headers: Any, csp: str = API_CSP) -> None:
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Content-Security-Policy"] == csp
    assert "Cache-Control" in headers
    assert "Strict-Transport-Security" not in headers  # plain HTTP


async def test_every_answer_carries_the_security_headers(http: aiohttp.ClientSession) -> None:
    for method, path, key in [("GET", "/health", None), ("GET", "/cluster", VIEWER_KEY), ("GET", "/cluster", None),
                              ("GET", "/nope", VIEWER_KEY), ("PATCH", "/cluster", VIEWER_KEY),
                              ("POST", "/cluster/jobs", "bad-key"), ("GET", "/metrics", VIEWER_KEY),
                              ("GET", "/openapi.json", None)]:
        async with http.request(method, path, headers=auth(key) if key else {}) as response:
            assert_security_headers(response.headers)
            if response.content_type == "application/json":
                assert response.headers["Cache-Control"] == "no-store"


async def test_a_handlers_own_csp_is_kept_and_streamed_answers_are_covered() -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<p>hi</p>", content_type="text/html",
                            headers={"Content-Security-Policy": "default-src 'self'"})

    async def stream(request: web.Request) -> web.StreamResponse:  # as GET /cluster/events does
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(b": connected\n\n")
        return response

    app = web.Application()
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/ui", page)
    app.router.add_get("/stream", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/ui") as resp:
                assert_security_headers(resp.headers, csp="default-src 'self'")
            async with http.get(f"{base}/stream") as resp:
                assert_security_headers(resp.headers)
                assert resp.headers["Cache-Control"] == "no-cache"
    finally:
        await runner.cleanup()
