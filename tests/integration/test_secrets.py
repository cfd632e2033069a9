"""Secrets with real Redis and two nodes: a stored secret is used by a script and an HTTP step that echo it
back, and then its value is searched for everywhere it could have gone: every Redis key, every log line,
the SSE stream, the webhook bodies and the API answers. It is found nowhere; ``***`` is found instead."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
import redis.asyncio
from aiohttp import web
from loguru import logger

from secauto.logs import format_record
from secauto.node import Node
from secauto.redaction import REDACTOR
from tests.support.nodes import auth, node_settings, running_node

CLUSTER = "secrets"
KEY = "integration-secret-key-0123456789abcdef"
CORE = uuid.uuid4().hex
# A quote and a backslash: the value is escaped differently in JSON, in a repr and on the command line.
VALUE = f'S3cr3t-"{CORE}"\\end'

SCRIPT = """
import base64, hashlib, json, os, sys
from urllib.parse import quote
data = json.load(sys.stdin)
token = data["token"]
print("stderr: the token is " + token + " / " + json.dumps({"t": token}), file=sys.stderr)
if not os.path.exists(data["marker"]):  # the first attempt fails, so its stderr tail lands in an error
    open(data["marker"], "w").close()
    sys.exit(1)
print(json.dumps({"echo": token, "as_json_text": json.dumps({"token": token}),
                  "as_base64": base64.b64encode(token.encode()).decode(), "as_url": quote(token, safe=""),
                  "got_it": hashlib.sha256(token.encode()).hexdigest() == data["expected_sha256"]}))
"""


class Echo:
    """An HTTP server that reflects what it receives (and remembers it, to show the real value was sent)."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.hooks: list[bytes] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def echo(self, request: web.Request) -> web.Response:
        got = {"header": request.headers.get("X-Token", ""), "body": (await request.read()).decode()}
        self.received.append(got)
        return web.json_response(got)

    async def hook(self, request: web.Request) -> web.Response:
        self.hooks.append(await request.read())
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/echo", self.echo)
        app.router.add_post("/hook", self.hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    server = Echo()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def redis_dump(client: redis.asyncio.Redis) -> bytes:
    """Every key of the database and everything it holds, whatever its type."""
    parts: list[bytes] = []
    async for key in client.scan_iter(count=500):
        kind = (await client.type(key)).decode()
        parts.append(key)
        if kind == "string":
            parts.append(await client.get(key) or b"")
        elif kind == "hash":
            for field, value in (await client.hgetall(key)).items():
                parts += [field, value]
        elif kind == "list":
            parts += await client.lrange(key, 0, -1)
        elif kind == "set":
            parts += list(await client.smembers(key))
        elif kind == "zset":
            parts += [member for member, _ in await client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for entry_id, fields in await client.xrange(key):
                parts.append(entry_id)
                for field, value in fields.items():
                    parts += [field, value]
        else:
            raise AssertionError(f"{key!r} has a type the dump does not know: {kind}")
    return b"\n".join(parts)


def leaks(text: str) -> list[str]:
    """The forms of the value found in ``text`` (the unique core catches raw, escaped and URL forms)."""
    forms = {"core": CORE, "base64": base64.b64encode(VALUE.encode()).decode().rstrip("="),
             "url": quote(VALUE, safe="")}
    return [name for name, form in forms.items() if form in text]


async def test_a_secret_value_never_leaves_a_node(redis_url: str, redis_client: redis.asyncio.Redis,
                                                  echo: Echo, tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "echo_secret.py").write_text(SCRIPT)
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(format_record(message.record)), level="DEBUG")
    sse_text: list[str] = []
    stack = AsyncExitStack()
    try:
        nodes: list[Node] = [await stack.enter_async_context(running_node(node_settings(
            f"node-{i}", redis_url=redis_url, cluster_name=CLUSTER, security={"secret_key": KEY},
            engine={"scripts_dir": str(scripts)}, webhooks=[{"url": f"{echo.url}/hook"}]))) for i in (1, 2)]
        async with stack, aiohttp.ClientSession() as http:
            async def read_sse() -> None:
                async with http.get(f"{nodes[0].url}/cluster/events", headers=auth()) as response:
                    async for raw in response.content:
                        sse_text.append(raw.decode())

            reader = asyncio.create_task(read_sse())
            async with asyncio.timeout(5):
                while not sse_text:
                    await asyncio.sleep(0.02)
            async with http.post(f"{nodes[0].url}/secrets", headers=auth(),
                                 json={"name": "api_token", "value": VALUE}) as response:
                assert response.status == 200, await response.text()
            REDACTOR.clear()  # the nodes must learn the value by themselves (reveal, refresh), not from the POST

            playbook = [
                {"run": "echo_secret", "token": "{{secrets.api_token}}", "marker": str(tmp_path / "marker"),
                 "expected_sha256": hashlib.sha256(VALUE.encode()).hexdigest()},
                {"action": "http_request", "method": "POST", "url": f"{echo.url}/echo", "output": "reflected",
                 "headers": {"X-Token": "{{secrets.api_token}}"}, "json": {"token": "{{secrets.api_token}}"}},
                {"action": "log", "message": "the script echoed {{echo}} and the server {{reflected}}"},
            ]
            async with http.post(f"{nodes[1].url}/cluster/jobs", headers=auth(),
                                 json={"playbook": playbook, "max_retries": 2}) as response:
                job_id = (await response.json())["job_id"]
            answers: list[str] = []
            async with asyncio.timeout(30):
                while True:
                    async with http.get(f"{nodes[0].url}/cluster/jobs/{job_id}", headers=auth()) as response:
                        text = await response.text()
                    if json.loads(text)["job"]["status"] in ("completed", "failed"):
                        break
                    await asyncio.sleep(0.05)
                while not any(b'"job.completed"' in body for body in echo.hooks):
                    await asyncio.sleep(0.05)
            answers.append(text)
            job = json.loads(text)["job"]
            async with http.post(f"{nodes[1].url}/playbook", headers=auth(), json={"playbook": playbook}) as response:
                answers.append(await response.text())  # a synchronous run answers on the fly
            for path in ("/cluster/jobs", f"/cluster/jobs/{job_id}", "/secrets", "/cluster/dlq"):
                for node in nodes:
                    async with http.get(f"{node.url}{path}", headers=auth()) as response:
                        answers.append(await response.text())
            await asyncio.sleep(0.3)  # let the last events reach the SSE reader
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        stored = (await redis_dump(redis_client)).decode(errors="replace")
    finally:
        logger.remove(sink)

    # The value was used: the script and the HTTP server got it for real.
    assert job["status"] == "completed", job
    assert len(job["attempts"]) == 2 and job["attempts"][0]["outcome"] == "failed"
    assert job["context"]["got_it"] is True
    assert echo.received and all(got["header"] == VALUE and json.loads(got["body"]) == {"token": VALUE}
                                 for got in echo.received)
    # The job keeps the reference, never the value.
    assert job["playbook"][0]["token"] == "{{secrets.api_token}}"
    # Where it would have shown, *** is shown.
    assert job["context"]["echo"] == "***" and job["context"]["reflected"]["json"]["header"] == "***"
    assert job["context"]["as_base64"] == "***" and job["context"]["as_url"] == "***"
    assert json.loads(job["context"]["as_json_text"]) == {"token": "***"}
    assert "the token is ***" in job["attempts"][0]["error"]
    assert "***" in "".join(sse_text) and any(b"the token is ***" in body for body in echo.hooks)
    assert any("the script echoed *** and the server" in line for line in lines)
    # ... and the value is found nowhere.
    assert leaks(stored) == [], "Redis"
    assert [line for line in lines if leaks(line)] == [], "log lines"
    assert leaks("".join(sse_text)) == [], "SSE stream"
    assert [body for body in echo.hooks if leaks(body.decode())] == [], "webhook bodies"
    assert [answer for answer in answers if leaks(answer)] == [], "API answers"
    assert any('"job.retrying"' in chunk for chunk in sse_text)  # the failed attempt's event was seen too
