"""A dashboard action is attributed to the key behind the session: the request's IDENTITY, which the
parent app's middlewares (logs, audit) read, names that key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import fakeredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from secauto.api.state import IDENTITY, KEYRING, SETTINGS, EventSource
from secauto.config import ApiKey
from secauto.keyring import KeyRing
from secauto.store.keys import Keys
from secauto.store.sessions import LoginThrottle, SessionStore
from secauto.ui.app import create_ui_app, mount_ui
from tests.support.nodes import OPERATOR_KEY, node_settings
from tests.unit.ui.conftest import CSRF_RE


async def test_the_identity_of_a_session_request_is_its_key() -> None:
    settings = node_settings("solo")
    seen: list[tuple[str, ApiKey | None]] = []

    @web.middleware
    async def recorder(request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        response = await handler(request)
        seen.append((f"{request.method} {request.path}", request.get(IDENTITY)))
        return response

    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    keys = Keys("c")
    app = web.Application(middlewares=[recorder])
    app[SETTINGS] = settings
    app[KEYRING] = KeyRing(settings.api_keys)
    ui = settings.config.ui
    mount_ui(app, create_ui_app(ui, SessionStore(redis, keys, idle_s=60, max_s=600),
                                LoginThrottle(redis, keys, attempts=3, window_s=60), EventSource(redis, keys.channel)))
    async with TestClient(TestServer(app)) as client:
        origin = str(client.make_url("")).rstrip("/")
        response = await client.post("/ui/login", data={"api_key": OPERATOR_KEY}, headers={"Origin": origin},
                                     allow_redirects=False)
        assert response.status == 303
        # the logout form of every page carries the token; this error page needs no actor
        page = await (await client.get("/ui/dlq/confirm?action=bogus")).text()
        match = CSRF_RE.search(page)
        assert match is not None
        response = await client.post("/ui/logout", data={"csrf_token": match.group(1)}, headers={"Origin": origin},
                                     allow_redirects=False)
        assert response.status == 303
    await redis.aclose()
    identities = dict(seen)
    assert identities["POST /ui/login"] is None  # not logged in yet when it was called
    assert identities["POST /ui/logout"] is not None and identities["POST /ui/logout"].name == "ops"
