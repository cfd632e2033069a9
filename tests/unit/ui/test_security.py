"""The dashboard's request checks: CSRF token and same origin on POSTs, roles on actions (the server
answers 403 whatever the page showed), sessions that end (logout elsewhere, idle, absolute, revoked
key), and the failed-login limit."""

from __future__ import annotations

import hashlib
import time

import msgspec
import pytest

from secauto.node import Node
from secauto.store.keys import Keys
from secauto.store.sessions import SessionRecord
from tests.support.nodes import ADMIN_KEY, OPERATOR_KEY, VIEWER_KEY, auth
from tests.unit.ui.conftest import FORGERIES, Tab, forged_post, submit, wait_status

SLEEP = {"playbook": [{"action": "sleep", "seconds": 30}]}


def session_key(tab: Tab) -> str:
    return Keys("test-cluster").session(hashlib.sha256(tab.session_id().encode()).hexdigest())


async def test_operator_cancels_a_running_job_and_retries_it(node: Node, tab: Tab) -> None:
    job_id = await submit(node, SLEEP)
    await wait_status(node, job_id, {"running"})
    await tab.login(OPERATOR_KEY)
    status, text, _ = await tab.get(f"/ui/jobs/{job_id}")
    assert 'id="cancel-job"' in text and 'id="retry-job"' not in text
    status, _, response = await tab.post(f"/ui/jobs/{job_id}/cancel", {})
    assert status == 303 and response.headers["Location"] == f"/ui/jobs/{job_id}?notice=cancelled"
    assert await wait_status(node, job_id, {"cancelled"}) == "cancelled"
    status, text, _ = await tab.get(f"/ui/jobs/{job_id}?notice=cancelled")
    assert "Cancel requested" in text and 'id="retry-job"' in text and 'id="cancel-job"' not in text
    status, _, response = await tab.post(f"/ui/jobs/{job_id}/cancel", {})  # already ended: nothing done
    assert status == 303 and response.headers["Location"].endswith("notice=not_cancellable")
    status, _, response = await tab.post(f"/ui/jobs/{job_id}/retry", {})
    assert status == 303 and response.headers["Location"].endswith("notice=retried")
    await wait_status(node, job_id, {"running"})
    status, text, _ = await tab.post("/ui/jobs/job-unknown/cancel", {})
    assert status == 404 and "No such job" in text


async def test_viewer_has_no_buttons_and_its_action_posts_are_refused(node: Node, tab: Tab) -> None:
    job_id = await submit(node, SLEEP)
    await wait_status(node, job_id, {"running"})
    await tab.login(VIEWER_KEY)
    status, text, _ = await tab.get(f"/ui/jobs/{job_id}")
    assert status == 200 and "cancel-job" not in text and "/cancel" not in text
    for path, data in ((f"/ui/jobs/{job_id}/cancel", {}), (f"/ui/jobs/{job_id}/retry", {}),
                       ("/ui/dlq/requeue", {"job": job_id, "count": "1"}),
                       ("/ui/dlq/delete", {"job": job_id, "count": "1"})):
        status, text, response = await tab.post(path, data)
        assert status == 403 and "needs the" in text and response.content_type == "text/html", path
    status, _, _ = await tab.get(f"/ui/dlq/confirm?action=requeue&job={job_id}")
    assert status == 403
    assert await wait_status(node, job_id, {"running"}) == "running"


@pytest.mark.parametrize("case", FORGERIES)
async def test_forged_posts_are_refused(node: Node, tab: Tab, case: str) -> None:
    job_id = await submit(node, SLEEP)
    await wait_status(node, job_id, {"running"})
    await tab.login(OPERATOR_KEY)
    status, text, response = await forged_post(tab, f"/ui/jobs/{job_id}/cancel", case)
    assert status == 403 and response.content_type == "text/html"
    assert "CSRF" in text or "Cross-origin" in text
    assert await wait_status(node, job_id, {"running"}) == "running"


async def test_same_origin_without_an_origin_header_is_accepted(node: Node, tab: Tab) -> None:
    await tab.login(OPERATOR_KEY)
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Referer": f"{node.url}/ui/jobs"}):
        job_id = await submit(node, SLEEP)
        await wait_status(node, job_id, {"running"})
        status, _, _ = await tab.post(f"/ui/jobs/{job_id}/cancel", {}, origin=None, headers=headers)
        assert status == 303
        await wait_status(node, job_id, {"cancelled"})
    # the token may also come as a header (htmx requests)
    job_id = await submit(node, SLEEP)
    await wait_status(node, job_id, {"running"})
    status, _, _ = await tab.post(f"/ui/jobs/{job_id}/cancel", {}, csrf=False, headers={"X-CSRF-Token": tab.csrf})
    assert status == 303


async def test_api_key_header_requests_need_no_csrf_token(node: Node, tab: Tab) -> None:
    job_id = await submit(node, SLEEP)
    await wait_status(node, job_id, {"running"})
    status, _, _ = await tab.post(f"/ui/jobs/{job_id}/cancel", {}, csrf=False, origin=None,
                                  headers={"X-API-Key": VIEWER_KEY})
    assert status == 403  # the role still applies
    status, _, _ = await tab.post(f"/ui/jobs/{job_id}/cancel", {}, csrf=False, origin=None,
                                  headers={"Authorization": f"Bearer {OPERATOR_KEY}"})
    assert status == 303
    await wait_status(node, job_id, {"cancelled"})
    status, _, response = await tab.get("/ui/jobs", headers={"X-API-Key": "not-a-key-0123456789"})
    assert status == 401 and response.content_type == "text/html"


async def test_login_and_logout_posts_are_checked_too(tab: Tab) -> None:
    status, _, _ = await tab.post("/ui/login", {"api_key": ADMIN_KEY}, csrf=False, origin="http://evil.example")
    assert status == 403
    await tab.login()
    status, _, _ = await tab.post("/ui/logout", {}, csrf=False)
    assert status == 403
    status, _, _ = await tab.get("/ui")
    assert status == 200  # still logged in


async def make_key(tab: Tab, name: str, role: str) -> str:
    async with tab.http.post("/keys", json={"name": name, "role": role}, headers=auth(ADMIN_KEY)) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["api_key"])


async def test_revoked_key_ends_its_sessions(node: Node, tab: Tab) -> None:
    secret = await make_key(tab, "temp", "operator")
    await tab.login(secret)
    key = session_key(tab)
    async with tab.http.delete("/keys/temp", headers=auth(ADMIN_KEY)) as response:  # revoked (on every node)
        assert response.status == 200
    status, _, response = await tab.get("/ui/jobs")
    assert status == 303 and response.headers["Location"] == "/ui/login?next=%2Fui%2Fjobs&ended=1"
    assert not await node.redis.exists(key)
    status, text, _ = await tab.get(response.headers["Location"])
    assert status == 200 and "Your session ended" in text
    # a key of that name issued again with another role: a new login gets the new role, not a stale one
    await tab.login(await make_key(tab, "temp", "viewer"))
    _, text, _ = await tab.get("/ui")
    assert 'class="role role-viewer"' in text


@pytest.mark.parametrize("field", ["last_seen", "created_at"])
async def test_idle_and_absolute_timeouts_end_a_session(node: Node, tab: Tab, field: str) -> None:
    await tab.login()
    key = session_key(tab)
    record = msgspec.json.decode(await node.redis.get(key), type=SessionRecord)
    limit = node.settings.config.ui.session_idle if field == "last_seen" else node.settings.config.ui.session_max
    aged = msgspec.structs.replace(record, **{field: time.time() - limit - 1})
    if field == "created_at":
        aged = msgspec.structs.replace(aged, last_seen=time.time())
    await node.redis.set(key, msgspec.json.encode(aged))
    status, _, response = await tab.get("/ui")
    assert status == 303 and "ended=1" in response.headers["Location"]
    assert not await node.redis.exists(key)


async def test_failed_logins_are_limited_per_address(node: Node, tab: Tab) -> None:
    for _ in range(3):  # ui.login_attempts is 3 in these tests
        status, _, _ = await tab.post("/ui/login", {"api_key": "guess-0123456789abcdef"}, csrf=False)
        assert status == 401
    status, text, response = await tab.post("/ui/login", {"api_key": ADMIN_KEY}, csrf=False)
    assert status == 429 and "Too many failed logins" in text
    assert 50 <= int(response.headers["Retry-After"]) <= 60
    assert "secauto_session" not in response.cookies
    counter = Keys("test-cluster").login_failures("127.0.0.1")
    assert int(await node.redis.get(counter)) == 3  # in the store: every node shares the count
    await node.redis.delete(counter)  # the window passed
    await tab.login()


async def test_a_good_login_clears_the_failures(node: Node, tab: Tab) -> None:
    for _ in range(2):
        await tab.post("/ui/login", {"api_key": "guess-0123456789abcdef"}, csrf=False)
    await tab.login()
    assert not await node.redis.exists(Keys("test-cluster").login_failures("127.0.0.1"))


async def test_a_new_login_replaces_the_previous_session(node: Node, tab: Tab) -> None:
    await tab.login(VIEWER_KEY)
    first = session_key(tab)
    await tab.login(ADMIN_KEY)
    assert not await node.redis.exists(first) and await node.redis.exists(session_key(tab))
