"""Fixtures of the dashboard's server-side tests: a standalone node (embedded store) and a client that
behaves like a browser tab (cookie jar, Origin header on POSTs, the page's CSRF token)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from secauto.node import Node
from tests.support.nodes import ADMIN_KEY, OPERATOR_KEY, auth, node_settings

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


class Tab:
    """A browser tab on the dashboard: keeps cookies, sends the site's Origin on POSTs."""

    def __init__(self, node: Node, http: aiohttp.ClientSession) -> None:
        self.node = node
        self.http = http
        self.csrf = ""

    @property
    def origin(self) -> str:
        return self.node.url

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        kwargs.setdefault("allow_redirects", False)
        async with self.http.get(path, **kwargs) as response:
            text = await response.text()
        match = CSRF_RE.search(text)
        if match:
            self.csrf = match.group(1)
        return response.status, text, response

    async def post(self, path: str, data: Any = None, *, csrf: bool = True, origin: str | None = "",
                   **kwargs: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        """POST a form; ``csrf`` adds the page's token, ``origin`` "" sends this site's Origin, None none."""
        fields = list(data.items()) if isinstance(data, dict) else list(data or [])
        if csrf:
            fields.append(("csrf_token", self.csrf))
        headers = dict(kwargs.pop("headers", {}))
        if origin is not None:
            headers["Origin"] = origin or self.origin
        kwargs.setdefault("allow_redirects", False)
        async with self.http.post(path, data=fields, headers=headers, **kwargs) as response:
            return response.status, await response.text(), response

    async def login(self, key: str = ADMIN_KEY) -> None:
        status, _, response = await self.post("/ui/login", {"api_key": key}, csrf=False)
        assert status == 303, status
        assert response.headers["Location"] == "/ui"
        status, _, _ = await self.get("/ui")
        assert status == 200 and self.csrf

    def session_id(self) -> str:
        cookie = self.http.cookie_jar.filter_cookies(URL(self.node.url + "/ui")).get("secauto_session")
        assert cookie is not None
        return cookie.value


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    settings = node_settings("solo", ui={"live_interval": 0.2, "login_attempts": 3, "login_window": 60})
    node = Node(settings)
    await node.start()
    try:
        yield node
    finally:
        await node.stop(grace=0)  # jobs still sleeping are handed back at once


async def new_tab(node: Node) -> Tab:
    http = aiohttp.ClientSession(base_url=node.url, cookie_jar=aiohttp.CookieJar(unsafe=True))
    return Tab(node, http)


@pytest.fixture
async def tab(node: Node) -> AsyncIterator[Tab]:
    tab = await new_tab(node)
    try:
        yield tab
    finally:
        await tab.http.close()


FORGERIES = ("no token", "wrong token", "other session's token", "cross-origin", "no origin at all", "null origin",
             "cross-site fetch", "cross-origin referer")


async def forged_post(tab: Tab, path: str, case: str) -> tuple[int, str, aiohttp.ClientResponse]:
    """POST ``path`` from the logged-in ``tab`` the way a forged request of kind ``case`` (FORGERIES) would."""
    kwargs: dict[str, Any] = {}
    fields = {"csrf_token": tab.csrf}
    if case == "no token":
        fields = {}
    elif case == "wrong token":
        fields = {"csrf_token": "x" * 43}
    elif case == "other session's token":
        other = await new_tab(tab.node)
        try:
            await other.login(OPERATOR_KEY)
        finally:
            await other.http.close()
        fields = {"csrf_token": other.csrf}
    elif case == "cross-origin":
        kwargs["origin"] = "http://evil.example"
    elif case == "no origin at all":
        kwargs["origin"] = None
    elif case == "null origin":
        kwargs["origin"] = "null"
    elif case == "cross-site fetch":
        kwargs.update(origin=None, headers={"Sec-Fetch-Site": "cross-site"})
    elif case == "cross-origin referer":
        kwargs.update(origin=None, headers={"Referer": "http://evil.example/page"})
    else:
        raise ValueError(f"no forgery named {case!r}")
    return await tab.post(path, fields, csrf=False, **kwargs)


async def submit(node: Node, body: dict[str, Any]) -> str:
    async with aiohttp.ClientSession(base_url=node.url) as http, \
            http.post("/cluster/jobs", json=body, headers=auth()) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["job_id"])


async def get_job(node: Node, job_id: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(base_url=node.url) as http, \
            http.get(f"/cluster/jobs/{job_id}", headers=auth()) as response:
        job: dict[str, Any] = (await response.json())["job"]
        return job


async def job_status(node: Node, job_id: str) -> str:
    return str((await get_job(node, job_id))["status"])


async def wait_status(node: Node, job_id: str, wanted: set[str], timeout: float = 20.0) -> str:
    async with asyncio.timeout(timeout):
        while (status := await job_status(node, job_id)) not in wanted:
            await asyncio.sleep(0.05)
    return status
