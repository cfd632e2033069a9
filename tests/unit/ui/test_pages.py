"""Every dashboard page and its access rules, without a browser: status codes per role, redirects to
the login page, security headers on every response, HTML errors, and no secret in any page."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from secauto.config import UiConfig
from secauto.node import Node
from secauto.store.keys import Keys
from secauto.store.sessions import LoginThrottle, SessionStore
from secauto.ui import app as ui_app
from secauto.ui.access import PUBLIC, declared_access
from secauto.ui.app import create_ui_app, route_table
from secauto.ui.security import CSP
from tests.support.nodes import ADMIN_KEY, OPERATOR_KEY, VIEWER_KEY, auth, node_settings
from tests.unit.ui.conftest import Tab, new_tab, submit, wait_status

PAGES = ["/ui", "/ui/nodes", "/ui/jobs", "/ui/schedules", "/ui/dlq", "/ui/events"]
ACTION_MARKERS = ('id="cancel-job"', 'id="retry-job"', 'id="requeue-selected"', 'id="delete-selected"',
                  'type="checkbox"')


def assert_protected(response: aiohttp.ClientResponse) -> None:
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_every_route_declares_its_access() -> None:
    table = route_table()
    assert all(declared_access(handler) is not None for _, _, handler in table)
    public = {(method, path) for method, path, handler in table if declared_access(handler) == PUBLIC}
    assert public == {("GET", "/login"), ("POST", "/login"), ("GET", "/"), ("GET", "/static/{name:.+}")}
    roles = {(method, path): declared_access(handler) for method, path, handler in table}
    assert roles[("POST", "/jobs/{job_id}/cancel")] == "operator"
    assert roles[("POST", "/dlq/requeue")] == "operator" and roles[("POST", "/dlq/delete")] == "admin"
    assert roles[("GET", "/live")] == "viewer" and roles[("POST", "/logout")] == "viewer"
    assert roles[("GET", "/schedules")] == "viewer" and roles[("GET", "/schedules/{name}")] == "viewer"
    for action in ("pause", "resume", "trigger"):
        assert roles[("POST", f"/schedules/{{name}}/{action}")] == "operator"


def test_a_route_without_an_access_decision_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def undeclared(request: web.Request) -> web.StreamResponse:
        return web.Response(text="open")

    monkeypatch.setattr(ui_app.events, "ROUTES", [*ui_app.events.ROUTES, ("GET", "/open", undeclared)])
    fake: Any = None
    with pytest.raises(RuntimeError, match="GET /ui/open declares no access"):
        create_ui_app(UiConfig(), SessionStore(fake, Keys("c"), idle_s=1, max_s=1),
                      LoginThrottle(fake, Keys("c"), attempts=1, window_s=1), fake)


async def test_every_mounted_ui_route_has_an_access_decision(node: Node) -> None:
    # What the node really serves, not just the table: a route added any other way would show here.
    assert node._runner is not None
    routes = [route for route in node._runner.app.router.routes()
              if route.resource is not None and route.resource.canonical.startswith("/ui")]
    assert len(routes) >= 12
    assert all(declared_access(route.handler) is not None for route in routes)


async def test_root_redirects_to_the_overview_and_pages_need_a_session(tab: Tab) -> None:
    for path in ("/", "/ui/"):
        status, _, response = await tab.get(path)
        assert status == 303 and response.headers["Location"] == "/ui"
    for path in [*PAGES, "/ui/jobs/job-1", "/ui/dlq/confirm?action=requeue&job=job-1"]:
        status, _, response = await tab.get(path)
        assert status == 303, path
        assert response.headers["Location"].startswith("/ui/login?next=%2Fui")
    # htmx fragments and the event stream cannot follow a redirect to a form: 401 and HX-Redirect
    status, _, response = await tab.get("/ui/jobs", headers={"HX-Request": "true"})
    assert status == 401 and response.headers["HX-Redirect"].startswith("/ui/login?next=")
    status, _, response = await tab.get("/ui/live")
    assert status == 401
    status, _, _ = await tab.post("/ui/jobs/job-1/cancel", {}, csrf=False)
    assert status == 401


async def test_login_page_and_login(tab: Tab) -> None:
    status, text, response = await tab.get("/ui/login")
    assert status == 200 and 'name="api_key"' in text and 'type="password"' in text
    assert response.content_type == "text/html"
    assert_protected(response)
    status, text, _ = await tab.post("/ui/login", {"api_key": "wrong-key-0123456789abcdef"}, csrf=False)
    assert status == 401 and "Invalid API key" in text and "wrong-key" not in text
    status, _, response = await tab.post("/ui/login", {"api_key": OPERATOR_KEY, "next": "/ui/jobs?status=failed"},
                                         csrf=False)
    assert status == 303 and response.headers["Location"] == "/ui/jobs?status=failed"
    cookie = response.cookies["secauto_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/ui"
    assert not cookie["secure"]  # plain HTTP here; Secure under TLS or ui.secure_cookie
    status, _, response = await tab.get("/ui/login?next=/ui/nodes")
    assert status == 303 and response.headers["Location"] == "/ui/nodes"  # already logged in


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/ui", "/cluster/jobs", "/ui\\..\\x",
                                    "/ui/logout", "javascript:alert(1)"])
async def test_login_never_redirects_off_the_dashboard(tab: Tab, target: str) -> None:
    status, _, response = await tab.post("/ui/login", {"api_key": VIEWER_KEY, "next": target}, csrf=False)
    assert status == 303 and response.headers["Location"] == "/ui"


@pytest.mark.parametrize(("key", "role"), [(VIEWER_KEY, "viewer"), (OPERATOR_KEY, "operator"), (ADMIN_KEY, "admin")])
async def test_every_page_for_every_role(node: Node, key: str, role: str) -> None:
    failed = await submit(node, {"playbook": [{"action": "fail", "message": "boom"}], "max_retries": 0})
    await wait_status(node, failed, {"failed"})
    tab = await new_tab(node)
    try:
        await tab.login(key)
        for path in [*PAGES, f"/ui/jobs/{failed}"]:
            status, text, response = await tab.get(path)
            assert status == 200, (path, text[:500])
            assert_protected(response)
            assert response.headers["Cache-Control"] == "no-store"
            assert f'class="role role-{role}"' in text and 'sse-connect="/ui/live"' in text
            assert "<script>" not in text and "style=" not in text and " on" + "click" not in text
            # the key never appears in a page, nor the session id (HttpOnly cookie only)
            assert key not in text and tab.session_id() not in text
            # fragments are the live part alone
            status, fragment, response = await tab.get(path, headers={"HX-Request": "true"})
            assert status == 200 and "<html" not in fragment
            assert_protected(response)
        _, job_page, _ = await tab.get(f"/ui/jobs/{failed}")
        _, dlq_page, _ = await tab.get("/ui/dlq")
        shown = {marker for marker in ACTION_MARKERS if marker in job_page + dlq_page}
    finally:
        await tab.http.close()
    expected = {"viewer": set(),
                "operator": {'id="retry-job"', 'id="requeue-selected"', 'type="checkbox"'},
                "admin": {'id="retry-job"', 'id="requeue-selected"', 'id="delete-selected"', 'type="checkbox"'}}
    assert shown == expected[role]


async def test_overview_shows_the_cluster_at_a_glance(node: Node, tab: Tab) -> None:
    done = await submit(node, {"playbook": [{"action": "log", "message": "ok"}]})
    failed = await submit(node, {"playbook": [{"action": "fail", "message": "boom"}], "max_retries": 0})
    await wait_status(node, done, {"completed"})
    await wait_status(node, failed, {"failed"})
    await tab.login()
    status, text, _ = await tab.get("/ui")
    assert status == 200
    assert 'id="nodes-up">1<' in text and 'id="leader">solo<' in text
    assert 'id="dlq-size">1<' in text and 'id="success-rate">50.0 %<' in text and 'id="queue-size">0<' in text
    assert "<svg" in text and "<polyline points=" in text and "2 in all" in text
    status, text, _ = await tab.get("/ui/nodes")
    assert "solo" in text and ">leader<" in text and "status-active" in text


async def test_job_pages_show_status_steps_attempts_context_and_error(node: Node, tab: Tab) -> None:
    body = {"playbook": [{"action": "set", "variables": {"verdict": "<b>bad</b>"}},
                         {"action": "fail", "message": "stop <here>"}],
            "context": {"alert": "<script>alert(1)</script>"}, "max_retries": 0, "tags": ["phish"]}
    job_id = await submit(node, body)
    await wait_status(node, job_id, {"failed"})
    await tab.login(VIEWER_KEY)
    status, text, _ = await tab.get(f"/ui/jobs/{job_id}")
    assert status == 200
    assert 'class="status status-failed"' in text and 'id="steps"' in text and 'id="attempts"' in text
    assert ">set<" in text and "step-completed" in text and "step-failed" in text
    # every value is escaped: job data cannot inject markup
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "stop &lt;here&gt;" in text and "<b>bad</b>" not in text
    assert "<time datetime=" in text and " UTC</time>" in text
    status, text, _ = await tab.get("/ui/jobs/job-does-not-exist")
    assert status == 404 and "No such job" in text
    status, text, _ = await tab.get("/ui/jobs/not%20an%20id")
    assert status == 404


async def test_jobs_page_filters_search_and_cursor_pages(node: Node, tab: Tab) -> None:
    async with aiohttp.ClientSession(base_url=node.url) as http, http.post(
            "/cluster/jobs/batch", headers=auth(),
            json={"jobs": [{"playbook": [{"action": "log", "message": str(i)}], "tags": ["even" if i % 2 else "odd"]}
                           for i in range(60)]}) as response:
        ids = (await response.json())["job_ids"]
    for job_id in ids[-3:]:
        await wait_status(node, job_id, {"completed"})
    await tab.login(VIEWER_KEY)
    status, text, _ = await tab.get("/ui/jobs")
    assert status == 200 and text.count("data-job-id=") == 50 and 'id="older"' in text
    older = text.split('id="older"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    status, text, _ = await tab.get(older)
    assert status == 200 and text.count("data-job-id=") == 10 and "Newest" in text
    status, text, _ = await tab.get("/ui/jobs?tag=odd")
    assert text.count("data-job-id=") == 30
    status, text, _ = await tab.get("/ui/jobs?status=failed&node=solo&tag=")
    assert status == 200 and "No job matches" in text
    status, _, response = await tab.get(f"/ui/jobs?id={ids[5]}")
    assert status == 303 and response.headers["Location"] == f"/ui/jobs/{ids[5]}"
    status, text, _ = await tab.get("/ui/jobs?id=job-nothing")
    assert status == 200 and "No job with that id" in text
    for bad, field in (("status=bogus", "status"), ("cursor=abc", "cursor"), ("limit=5", "limit"),
                       ("tag=" + "x" * 65, "tag")):
        status, text, response = await tab.get(f"/ui/jobs?{bad}")
        assert status == 400 and response.content_type == "text/html" and field in text, bad


async def test_errors_under_ui_are_html_pages(tab: Tab) -> None:
    await tab.login(VIEWER_KEY)
    status, text, response = await tab.get("/ui/no-such-page")
    assert status == 404 and response.content_type == "text/html" and "Not found" in text
    assert_protected(response)
    status, text, response = await tab.post("/ui/jobs", {})
    assert status == 405 and response.content_type == "text/html" and response.headers["Allow"] == "GET"
    status, text, response = await tab.get("/ui/static/../app.py")
    assert status == 404
    # the API keeps its JSON errors
    async with tab.http.get("/cluster/jobs/job-x", headers=auth()) as api_response:
        assert api_response.status == 404 and api_response.content_type == "application/json"


async def test_openapi_lists_no_dashboard_route(tab: Tab) -> None:
    async with tab.http.get("/openapi.json") as response:
        paths = (await response.json())["paths"]
    assert paths and not any(path == "/" or path.startswith("/ui") for path in paths)


async def test_logout_ends_the_session_on_every_node(node: Node, tab: Tab) -> None:
    await tab.login()
    session_id = tab.session_id()
    key = Keys("test-cluster").session(hashlib.sha256(session_id.encode()).hexdigest())
    assert await node.redis.exists(key)
    assert session_id.encode() not in await node.redis.get(key)  # the store keeps neither id nor key
    assert ADMIN_KEY.encode() not in await node.redis.get(key)
    status, _, response = await tab.post("/ui/logout", {})
    assert status == 303 and response.headers["Location"] == "/ui/login?bye=1"
    assert not await node.redis.exists(key)
    # the old cookie, replayed, is worthless
    other = await new_tab(node)
    try:
        other.http.cookie_jar.update_cookies({"secauto_session": session_id}, response.url)
        status, _, response = await other.get("/ui")
        assert status == 303 and response.headers["Location"].startswith("/ui/login")
    finally:
        await other.http.close()


async def test_secure_cookie_behind_a_tls_proxy() -> None:
    node = Node(node_settings("tls", ui={"secure_cookie": True}))
    await node.start()
    try:
        tab = await new_tab(node)
        try:
            status, _, response = await tab.post("/ui/login", {"api_key": VIEWER_KEY}, csrf=False)
        finally:
            await tab.http.close()
    finally:
        await node.stop(grace=0)
    assert status == 303
    cookie = response.cookies["secauto_session"]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
    assert VIEWER_KEY not in response.headers["Location"]  # the key never goes into a URL


async def test_job_page_shows_what_a_waiting_job_waits_on(node: Node, tab: Tab) -> None:
    parent = await submit(node, {"playbook": [{"action": "log", "message": "later"}], "delay": 3600})
    child = await submit(node, {"playbook": [{"action": "log", "message": "after"}], "depends_on": [parent]})
    await wait_status(node, child, {"waiting"})
    await tab.login(VIEWER_KEY)
    status, text, _ = await tab.get(f"/ui/jobs/{child}")
    assert status == 200 and 'class="status status-waiting"' in text
    assert 'id="job-dependencies"' in text and f'href="/ui/jobs/{parent}"' in text and "status-pending" in text
    assert 'id="job-waiting-on"' in text
    status, text, _ = await tab.get(f"/ui/jobs/{parent}")
    assert status == 200 and 'id="job-dependencies"' not in text and 'id="job-waiting-on"' not in text
