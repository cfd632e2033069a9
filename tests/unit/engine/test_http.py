"""http_request against a local aiohttp server on 127.0.0.1 (never the external network)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from secauto.engine import EngineSettings
from tests.support.web import serving
from tests.unit.engine.conftest import run


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {"method": request.method, "path": request.path, "query": dict(request.query),
         "headers": {"x-token": request.headers.get("X-Token")}, "body": body.decode()},
        headers={"X-Served-By": "test"},
    )  # fmt: skip


async def _text(request: web.Request) -> web.Response:
    return web.Response(text="plain text", status=int(request.query.get("status", "200")))


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(10)
    return web.Response(text="late")


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * 200_000, content_type="application/octet-stream")


async def _bad_json(request: web.Request) -> web.Response:
    return web.Response(text="{not json", content_type="application/json")


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/echo", _echo)
    app.router.add_get("/text", _text)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/big", _big)
    app.router.add_get("/bad_json", _bad_json)
    async with serving(app) as url:
        yield url


async def request(settings: EngineSettings, step: dict[str, Any], context: dict[str, Any] | None = None) -> Any:
    return await run([{"action": "http_request", **step}], settings, context)


async def test_get_json(settings: EngineSettings, server: str) -> None:
    result = await request(settings, {"url": "{{base}}/echo?q={{q}}", "headers": {"X-Token": "{{token}}"}},
                           {"base": server, "q": "1.2.3.4", "token": "t0k"})  # fmt: skip
    assert result.success, result.error
    output = result.results[0].output
    assert output["status"] == 200
    assert output["headers"]["X-Served-By"] == "test"
    assert output["json"]["method"] == "GET"
    assert output["json"]["query"] == {"q": "1.2.3.4"}
    assert output["json"]["headers"] == {"x-token": "t0k"}


async def test_post_json_and_body(settings: EngineSettings, server: str) -> None:
    posted = await request(settings, {"url": f"{server}/echo", "method": "POST", "json": {"ip": "{{ip}}"}}, {"ip": "x"})
    assert json.loads(posted.results[0].output["json"]["body"]) == {"ip": "x"}
    raw = await request(settings, {"url": f"{server}/echo", "method": "PUT", "body": "hello {{ip}}"}, {"ip": "y"})
    assert raw.results[0].output["json"]["body"] == "hello y"
    both = await request(settings, {"url": f"{server}/echo", "method": "POST", "json": {}, "body": "x"})
    assert "either 'json' or 'body'" in (both.error or "")


async def test_text_response(settings: EngineSettings, server: str) -> None:
    result = await request(settings, {"url": f"{server}/text", "output": "page"})
    assert result.context["page"] == {"status": 200, "headers": result.context["page"]["headers"], "text": "plain text"}


async def test_bad_json_falls_back_to_text(settings: EngineSettings, server: str) -> None:
    result = await request(settings, {"url": f"{server}/bad_json"})
    assert result.results[0].output["text"] == "{not json"


async def test_error_status_fails_unless_expected(settings: EngineSettings, server: str) -> None:
    failed = await request(settings, {"url": f"{server}/text?status=503"})
    assert not failed.success and "answered 503 (expected < 400)" in (failed.error or "")
    assert failed.results[0].output["status"] == 503
    expected = await request(settings, {"url": f"{server}/text?status=404", "expect_status": [200, 404]})
    assert expected.success and expected.results[0].output["status"] == 404
    strict = await request(settings, {"url": f"{server}/text", "expect_status": 201})
    assert "answered 200 (expected 201)" in (strict.error or "")


async def test_timeout(settings: EngineSettings, server: str) -> None:
    result = await request(settings, {"url": f"{server}/slow", "timeout": 0.3})
    assert not result.success and "timed out after 0.3s" in (result.error or "")


async def test_body_cap(settings: EngineSettings, server: str) -> None:
    result = await request(settings, {"url": f"{server}/big"})
    assert "response body exceeded 65536 bytes" in (result.error or "")


async def test_connection_error(settings: EngineSettings, unused_tcp_port: int) -> None:
    result = await request(settings, {"url": f"http://127.0.0.1:{unused_tcp_port}/x", "retry": {"attempts": 2}})
    assert not result.success and "GET http://127.0.0.1" in (result.error or "") and "failed" in (result.error or "")


async def test_rendered_url_must_be_http(settings: EngineSettings) -> None:
    result = await request(settings, {"url": "{{u}}"}, {"u": "file:///etc/passwd"})
    assert "not an http(s) URL" in (result.error or "")


async def test_cancellation(settings: EngineSettings, server: str) -> None:
    task = asyncio.create_task(request(settings, {"url": f"{server}/slow"}))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
