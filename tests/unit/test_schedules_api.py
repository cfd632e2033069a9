"""The schedule routes on a standalone node (embedded store): validation naming the field, conflicts,
config-managed schedules, roles, and the views."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from secauto.node import Node
from tests.support.nodes import OPERATOR_KEY, VIEWER_KEY, auth, node_settings, running_node

LOG = [{"action": "log", "message": "sweep"}]


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    settings = node_settings("sched", schedules=[{"name": "cfg", "cron": "0 2 * * *", "timezone": "Europe/Berlin",
                                                   "playbook_name": "notify_soc"}])
    async with running_node(settings) as started:
        yield started


async def call(node: Node, method: str, path: str, body: Any = None, key: str = OPERATOR_KEY) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, f"{node.url}{path}", json=body,
                                                              headers=auth(key)) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"name": "x", "cron": "61 * * * *", "playbook": LOG}, "cron", "bad minute"),
    ({"name": "x", "cron": "0 2 * * *", "timezone": "Moon/Base", "playbook": LOG}, "timezone", "unknown time zone"),
    ({"name": "x", "every": 0, "playbook": LOG}, "every", ">= 1"),
    ({"name": "x", "playbook": LOG}, "cron", "exactly one of cron or every"),
    ({"name": "x", "every": 60, "cron": "@daily", "playbook": LOG}, "cron", "exactly one of cron or every"),
    ({"name": "x", "every": 60, "playbook": LOG, "colour": "red"}, "colour", "unknown field"),
    ({"name": "x y", "every": 60, "playbook": LOG}, "name", "matching regex"),
    ({"name": "..", "every": 60, "playbook": LOG}, "name", "matching regex"),
    ({"name": ".", "every": 60, "playbook": LOG}, "name", "matching regex"),
    ({"name": "x", "every": 60, "playbook": [{"action": "nope"}]}, "playbook", "unknown action"),
    ({"name": "x", "every": 60, "playbook_name": "no-such"}, "playbook_name", "no playbook named"),
    ({"name": "x", "every": 60}, "playbook", "exactly one of playbook or playbook_name"),
    ({"name": "x", "every": 60, "playbook": LOG, "overlap": "queue"}, "overlap", "Invalid enum value"),
    ({"name": "x", "every": 60, "playbook": LOG, "jitter": 60}, "jitter", "less than every"),
])
async def test_bad_definitions_are_400_naming_the_field(node: Node, body: dict[str, Any], field: str,
                                                        message: str) -> None:
    status, answer = await call(node, "POST", "/schedules", body)
    assert status == 400, answer
    details = answer["error"]["details"]
    assert details[0]["field"] == field and message in details[0]["message"], details
    status, listing = await call(node, "GET", "/schedules")
    assert [item["name"] for item in listing["schedules"]] == ["cfg"]  # nothing stored


async def test_create_replace_view_and_delete(node: Node) -> None:
    body = {"name": "intel", "every": 900, "jitter": 30, "playbook": LOG, "tags": ["intel"], "context": {"a": []}}
    status, answer = await call(node, "POST", "/schedules", body)
    assert status == 200 and answer["created"] is True
    view = answer["schedule"]
    assert view["managed_by"] == "api" and view["overlap"] == "skip" and view["catchup"] == "latest"
    assert view["catchup_window"] == 3600 and view["history"] == [] and view["last_fire"] is None
    assert len(view["next_fires"]) == 5 and all(stamp.endswith(":00.000Z") for stamp in view["next_fires"])
    assert (await call(node, "POST", "/schedules", body))[0] == 409
    status, answer = await call(node, "PUT", "/schedules/intel", {**body, "name": None, "priority": 5})
    assert status == 200 and answer["created"] is False and answer["schedule"]["priority"] == 5
    assert answer["schedule"]["next_fires"] == view["next_fires"]  # timing unchanged: same pending slot
    status, answer = await call(node, "PUT", "/schedules/intel", {**body, "name": "other"})
    assert status == 400 and answer["error"]["details"][0]["field"] == "name"
    status, answer = await call(node, "PUT", "/schedules/fresh", {"cron": "*/5 * * * *", "playbook": LOG})
    assert status == 200 and answer["created"] is True and answer["schedule"]["name"] == "fresh"
    assert (await call(node, "GET", "/schedules/intel", key=VIEWER_KEY))[0] == 200
    assert (await call(node, "DELETE", "/schedules/intel"))[0] == 200
    assert (await call(node, "GET", "/schedules/intel"))[0] == 404
    assert (await call(node, "DELETE", "/schedules/intel"))[0] == 404
    assert (await call(node, "GET", "/schedules/no%20such"))[0] == 404


async def test_config_schedules_refuse_changes_but_pause_resume_and_trigger(node: Node) -> None:
    status, answer = await call(node, "GET", "/schedules/cfg")
    assert status == 200 and answer["schedule"]["managed_by"] == "config"
    assert answer["schedule"]["timezone"] == "Europe/Berlin" and answer["schedule"]["playbook"] is None
    for method, body in (("PUT", {"every": 60, "playbook": LOG}), ("DELETE", None)):
        status, answer = await call(node, method, "/schedules/cfg", body)
        assert status == 409 and answer["error"]["code"] == "managed_by_config"
    assert (await call(node, "POST", "/schedules", {"name": "cfg", "every": 60, "playbook": LOG}))[0] == 409
    status, answer = await call(node, "POST", "/schedules/cfg/pause")  # no body: the note is optional
    assert status == 200 and answer["schedule"]["paused"] is True
    status, answer = await call(node, "POST", "/schedules/cfg/trigger")
    assert status == 200 and answer["job_id"].startswith("job-")
    status, answer = await call(node, "POST", "/schedules/cfg/resume", {"note": "done"})
    assert status == 200 and answer["schedule"]["paused"] is False
    entry = answer["schedule"]["history"][0]
    assert entry["outcome"] == "triggered" and entry["job_id"] == answer["schedule"]["last_fire"]["job_id"]
    status, answer = await call(node, "GET", f"/cluster/jobs/{entry['job_id']}")
    assert answer["job"]["schedule"] == "cfg" and answer["job"]["scheduled_for"] == entry["slot"]
    assert answer["job"]["playbook_name"] == "notify_soc" and answer["job"]["playbook"]


async def test_roles(node: Node) -> None:
    body = {"name": "v", "every": 60, "playbook": LOG}
    assert (await call(node, "POST", "/schedules", body, key=VIEWER_KEY))[0] == 403
    assert (await call(node, "POST", "/schedules/cfg/trigger", key=VIEWER_KEY))[0] == 403
    assert (await call(node, "POST", "/schedules/cfg/pause", key=VIEWER_KEY))[0] == 403
    assert (await call(node, "GET", "/schedules", key=VIEWER_KEY))[0] == 200


async def test_a_job_not_from_a_schedule_shows_null_schedule_fields(node: Node) -> None:
    _, answer = await call(node, "POST", "/cluster/jobs", {"playbook": LOG})
    job_id = answer["job_id"]
    async with asyncio.timeout(5):
        while (await call(node, "GET", f"/cluster/jobs/{job_id}"))[1]["job"]["status"] != "completed":
            await asyncio.sleep(0.05)
    job = (await call(node, "GET", f"/cluster/jobs/{job_id}"))[1]["job"]
    assert job["schedule"] is None and job["scheduled_for"] is None
