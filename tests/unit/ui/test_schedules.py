"""The dashboard's schedule pages: the list, the detail, the jobs filter by schedule, and the operator
actions (pause with a note, resume, trigger) with their role, CSRF and same-origin checks."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest

from secauto.node import Node
from tests.support.nodes import ADMIN_KEY, OPERATOR_KEY, VIEWER_KEY, auth
from tests.unit.ui.conftest import FORGERIES, Tab, forged_post, new_tab, submit, wait_status
from tests.unit.ui.test_live import stream
from tests.unit.ui.test_pages import assert_protected

LOG = [{"action": "log", "message": "sweep"}]
BUTTONS = ('id="trigger-schedule"', 'id="pause-schedule"', 'id="resume-schedule"', 'name="note"')


async def api(node: Node, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession(base_url=node.url) as http, \
            http.request(method, path, json=body, headers=auth(ADMIN_KEY)) as response:
        return response.status, await response.json()


async def define(node: Node, body: dict[str, Any]) -> None:
    status, answer = await api(node, "POST", "/schedules", {"playbook": LOG, **body})
    assert status == 200, answer


async def schedule(node: Node, name: str) -> dict[str, Any]:
    status, answer = await api(node, "GET", f"/schedules/{name}")
    assert status == 200, answer
    found: dict[str, Any] = answer["schedule"]
    return found


def row(text: str, name: str) -> str:
    """The list page's table row of one schedule."""
    match = re.search(rf'<tr data-schedule="{re.escape(name)}">(.*?)</tr>', text, re.DOTALL)
    assert match, f"no row for {name}"
    return match.group(1)


@pytest.mark.parametrize(("key", "role"), [(VIEWER_KEY, "viewer"), (OPERATOR_KEY, "operator"), (ADMIN_KEY, "admin")])
async def test_schedule_pages_for_every_role(node: Node, key: str, role: str) -> None:
    await define(node, {"name": "sweep", "cron": "0 2 * * *", "timezone": "Europe/Berlin"})
    tab = await new_tab(node)
    try:
        await tab.login(key)
        for path in ("/ui/schedules", "/ui/schedules/sweep"):
            status, text, response = await tab.get(path)
            assert status == 200, (path, text[:500])
            assert_protected(response)
            assert response.headers["Cache-Control"] == "no-store"
            assert 'sse-connect="/ui/live"' in text and 'hx-trigger="sse:changed, resume"' in text
            assert '<a href="/ui/schedules" class="current" aria-current="page">Schedules</a>' in text
            assert "<script>" not in text and "style=" not in text and " on" + "click" not in text
            assert key not in text
            status, fragment, response = await tab.get(path, headers={"HX-Request": "true"})
            assert status == 200 and "<html" not in fragment and "sweep" in fragment
            assert_protected(response)
            if path.endswith("sweep"):
                shown = {button for button in BUTTONS if button in text}
                assert not any(button in fragment for button in BUTTONS)  # the actions are not in the live part
    finally:
        await tab.http.close()
    expected = set() if role == "viewer" else {'id="trigger-schedule"', 'id="pause-schedule"', 'name="note"'}
    assert shown == expected


async def test_the_list_shows_timing_state_next_fire_and_the_latest_outcome(node: Node, tab: Tab) -> None:
    await define(node, {"name": "intel", "every": 900, "jitter": 30, "timezone": "Asia/Tokyo"})
    await define(node, {"name": "sweep", "cron": "0 2 * * *", "timezone": "Europe/Berlin"})
    await define(node, {"name": "off", "every": 60, "enabled": False})
    await api(node, "POST", "/schedules/sweep/pause", {"note": "freeze"})
    status, answer = await api(node, "POST", "/schedules/intel/trigger")
    job_id = answer["job_id"]
    await tab.login(VIEWER_KEY)
    status, text, _ = await tab.get("/ui/schedules")
    assert status == 200 and "1-3 of 3" in text
    assert re.findall(r'<tr data-schedule="([^"]+)">', text) == ["intel", "off", "sweep"]
    intel, sweep, off = row(text, "intel"), row(text, "sweep"), row(text, "off")
    assert '<a href="/ui/schedules/intel">intel</a>' in intel
    assert "every 15 min" in intel and "(jitter up to 30 s)" in intel
    assert "Asia/Tokyo" not in intel  # every is elapsed time
    assert "<code>0 2 * * *</code>" in sweep and "Europe/Berlin" in sweep and ">api<" in sweep
    assert "status-active" in intel and 'title="freeze">paused<' in sweep and "status-disabled" in off
    first = (await schedule(node, "intel"))["next_fires"][0]
    assert f'<time datetime="{first}"' in intel
    assert 'class="next-fire"><span class="muted">-</span>' in sweep  # paused: no next fire
    assert "status-triggered" in intel and f'href="/ui/jobs/{job_id}"' in intel
    assert "none yet" in sweep
    status, text, _ = await tab.get("/ui/schedules?offset=100")
    assert status == 200 and "No schedules past 100" in text and "Previous" in text


async def test_the_detail_shows_definition_next_fires_history_and_its_jobs(node: Node, tab: Tab) -> None:
    await define(node, {"name": "intel", "every": 3600, "tags": ["intel"], "priority": 5, "max_retries": 0,
                        "context": {"feed": "<script>alert(1)</script>"}})
    _, answer = await api(node, "POST", "/schedules/intel/trigger")
    triggered = answer["job_id"]
    await wait_status(node, triggered, {"completed"})
    other = await submit(node, {"playbook": LOG})
    await tab.login(VIEWER_KEY)
    status, text, _ = await tab.get("/ui/schedules/intel")
    assert status == 200 and 'class="status status-active"' in text
    view = await schedule(node, "intel")
    assert re.findall(r'<li><time datetime="([^"]+)"', text) == view["next_fires"] and len(view["next_fires"]) == 5
    history = text.split('id="history"')[1].split("</table>")[0]
    assert "status-triggered" in history and f'href="/ui/jobs/{triggered}"' in history
    last_fire = text.split('id="last-fire">')[1].split("</dd>")[0]
    assert f'href="/ui/jobs/{triggered}"' in last_fire and "status-completed" in last_fire
    assert "every 1 h" in text and "priority 5, 0 retries" in text and ">intel</a>" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>alert(1)" not in text
    assert 'href="/ui/jobs?schedule=intel"' in text
    # the jobs page filtered by schedule lists its jobs only; a job's page links back to its schedule
    status, text, _ = await tab.get("/ui/jobs?schedule=intel")
    assert status == 200 and f'data-job-id="{triggered}"' in text and f'data-job-id="{other}"' not in text
    assert 'name="schedule" value="intel"' in text
    status, text, _ = await tab.get(f"/ui/jobs/{triggered}")
    assert '<a href="/ui/schedules/intel" id="job-schedule">intel</a>' in text
    status, text, _ = await tab.get("/ui/jobs?schedule=nothing-like-it")
    assert "No job matches" in text


async def test_operator_pauses_with_a_note_resumes_and_triggers(node: Node, tab: Tab) -> None:
    await define(node, {"name": "sweep", "cron": "0 2 * * *"})
    await tab.login(OPERATOR_KEY)
    status, text, _ = await tab.get("/ui/schedules/sweep")
    assert status == 200 and 'id="pause-schedule"' in text
    status, _, response = await tab.post("/ui/schedules/sweep/pause", {"note": "  change <b>freeze</b>  "})
    assert status == 303 and response.headers["Location"] == "/ui/schedules/sweep?notice=paused"
    view = await schedule(node, "sweep")
    assert view["paused"] is True and view["pause_note"] == "change <b>freeze</b>" and view["next_fires"] == []
    status, text, _ = await tab.get(response.headers["Location"])
    assert "Paused: its slots are recorded as paused" in text and 'id="resume-schedule"' in text
    assert 'id="pause-schedule"' not in text and "change &lt;b&gt;freeze&lt;/b&gt;" in text
    assert "None: the schedule is paused." in text
    status, _, response = await tab.post("/ui/schedules/sweep/resume", {})
    assert status == 303 and response.headers["Location"].endswith("notice=resumed")
    view = await schedule(node, "sweep")
    assert view["paused"] is False and len(view["next_fires"]) == 5
    status, _, response = await tab.post("/ui/schedules/sweep/resume", {})  # not paused: nothing done
    assert status == 303 and response.headers["Location"].endswith("notice=not_paused")
    status, _, response = await tab.post("/ui/schedules/sweep/trigger", {})
    assert status == 303
    location = response.headers["Location"]
    job_id = location.split("job=")[1]
    assert location == f"/ui/schedules/sweep?notice=triggered&job={job_id}"
    _, answer = await api(node, "GET", f"/cluster/jobs/{job_id}")
    assert answer["job"]["schedule"] == "sweep" and answer["job"]["submitted_by"] == "ops"
    status, text, _ = await tab.get(location)
    assert f'id="triggered">Triggered: job <a class="mono" href="/ui/jobs/{job_id}">' in text
    assert (await schedule(node, "sweep"))["history"][0] == {"slot": answer["job"]["scheduled_for"],
                                                            "outcome": "triggered", "job_id": job_id}
    # audited under the API's action names, with the key behind the session
    async with tab.http.get("/audit?limit=50", headers=auth(ADMIN_KEY)) as response:
        entries = [(entry["action"], entry["actor"], entry["target"], entry["status"])
                   for entry in (await response.json())["entries"] if entry["action"].startswith("schedule.")]
    assert entries[::-1] == [("schedule.create", "admin", "sweep", 200), ("schedule.pause", "ops", "sweep", 303),
                             ("schedule.resume", "ops", "sweep", 303), ("schedule.resume", "ops", "sweep", 303),
                             ("schedule.trigger", "ops", "sweep", 303)]


async def test_viewer_has_no_schedule_buttons_and_its_posts_are_refused(node: Node, tab: Tab) -> None:
    await define(node, {"name": "sweep", "cron": "0 2 * * *"})
    await tab.login(VIEWER_KEY)
    status, text, _ = await tab.get("/ui/schedules/sweep")
    assert status == 200 and not any(button in text for button in BUTTONS) and "/trigger" not in text
    for action in ("pause", "resume", "trigger"):
        status, text, response = await tab.post(f"/ui/schedules/sweep/{action}", {"note": "x"})
        assert status == 403 and "needs the operator role" in text and response.content_type == "text/html"
    view = await schedule(node, "sweep")
    assert view["paused"] is False and view["history"] == [] and view["last_fire"] is None


@pytest.mark.parametrize("case", FORGERIES)
async def test_forged_schedule_posts_are_refused(node: Node, tab: Tab, case: str) -> None:
    await define(node, {"name": "sweep", "cron": "0 2 * * *"})
    await tab.login(OPERATOR_KEY)
    for action in ("pause", "trigger"):
        status, text, response = await forged_post(tab, f"/ui/schedules/sweep/{action}", case)
        assert status == 403 and response.content_type == "text/html"
        assert "CSRF" in text or "Cross-origin" in text, (action, text[:300])
    view = await schedule(node, "sweep")
    assert view["paused"] is False and view["history"] == []


async def test_bad_schedule_requests_are_html_errors(node: Node, tab: Tab) -> None:
    await define(node, {"name": "sweep", "cron": "0 2 * * *"})
    await tab.login(OPERATOR_KEY)
    for path in ("/ui/schedules/nothing", "/ui/schedules/bad%20name"):
        status, text, response = await tab.get(path)
        assert status == 404 and "No such schedule" in text and response.content_type == "text/html"
    for action in ("pause", "resume", "trigger"):
        status, text, _ = await tab.post(f"/ui/schedules/nothing/{action}", {})
        assert status == 404 and "No such schedule" in text
    status, text, _ = await tab.post("/ui/schedules/sweep/pause", {"note": "x" * 501})
    assert status == 400 and "note: at most 500 characters" in text
    assert (await schedule(node, "sweep"))["paused"] is False
    for query, field in (("/ui/schedules?offset=-1", "offset"), ("/ui/schedules?colour=red", "colour"),
                         ("/ui/schedules/sweep?notice=hacked", "notice"),
                         ("/ui/schedules/sweep?notice=triggered&job=%3Cscript%3E", "job"),
                         ("/ui/jobs?schedule=bad%20name", "schedule")):
        status, text, response = await tab.get(query)
        assert status == 400 and field in text and response.content_type == "text/html", query
        assert "<script>" not in text


async def test_schedule_pages_follow_fires_live(node: Node, tab: Tab) -> None:
    """A schedule that fires sends its schedule.* and job events: an open tab's one SSE stream says
    ``changed``, and the fragments it then fetches show the new fire."""
    await tab.login(VIEWER_KEY)
    async with stream(tab) as signals:
        await define(node, {"name": "tick", "every": 1})
        async with asyncio.timeout(15):
            while not (await schedule(node, "tick"))["history"]:
                await asyncio.sleep(0.1)
            while not signals.changed:
                await asyncio.sleep(0.05)
    status, fragment, _ = await tab.get("/ui/schedules", headers={"HX-Request": "true"})
    assert status == 200 and "status-fired" in row(fragment, "tick")
    status, fragment, _ = await tab.get("/ui/schedules/tick", headers={"HX-Request": "true"})
    assert status == 200 and "status-fired" in fragment.split('id="history"')[1]
