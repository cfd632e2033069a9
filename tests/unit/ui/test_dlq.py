"""The dead-letter page: requeue (operators) and delete (admins) act only on the selected jobs, after a
confirmation page that names them and counts them."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

import pytest

from secauto.node import Node
from tests.support.nodes import ADMIN_KEY, OPERATOR_KEY, VIEWER_KEY
from tests.unit.ui.conftest import Tab, get_job, job_status, submit, wait_status

FAIL = {"playbook": [{"action": "fail", "message": "boom"}], "max_retries": 0}


async def dead_letters(node: Node, count: int) -> list[str]:
    ids = [await submit(node, FAIL) for _ in range(count)]
    for job_id in ids:
        await wait_status(node, job_id, {"failed"})
    return ids


async def test_requeue_only_the_selected_jobs_after_a_confirmation(node: Node, tab: Tab) -> None:
    ids = await dead_letters(node, 3)
    await tab.login(OPERATOR_KEY)
    status, text, _ = await tab.get("/ui/dlq")
    assert status == 200 and 'id="dlq-count">3<' in text and text.count('type="checkbox"') == 3
    assert 'id="delete-selected"' not in text  # operators do not delete
    chosen = ids[:2]
    query = urlencode([("action", "requeue"), *[("job", job_id) for job_id in chosen]])
    status, text, _ = await tab.get(f"/ui/dlq/confirm?{query}")
    assert status == 200 and "Requeue 2 dead-lettered job(s)?" in text
    assert all(job_id in text for job_id in chosen) and ids[2] not in text
    assert await job_status(node, ids[0]) == "failed"  # the confirmation page changes nothing
    status, _, response = await tab.post("/ui/dlq/requeue", [*[("job", job_id) for job_id in chosen], ("count", "2")])
    assert status == 303 and response.headers["Location"] == "/ui/dlq?done=requeue&count=2&missing=0"
    async with asyncio.timeout(10):  # requeued: they run (and fail) again; the third one stays as it was
        while [len((await get_job(node, job_id))["attempts"]) for job_id in ids] != [2, 2, 1]:
            await asyncio.sleep(0.05)
    status, text, _ = await tab.get("/ui/dlq?done=requeue&count=2&missing=0")
    assert "2 job(s) requeued." in text


async def test_delete_needs_the_admin_role_and_a_matching_count(node: Node, tab: Tab) -> None:
    ids = await dead_letters(node, 2)
    await tab.login(OPERATOR_KEY)
    query = urlencode([("action", "delete"), ("job", ids[0])])
    status, _, _ = await tab.get(f"/ui/dlq/confirm?{query}")
    assert status == 403
    status, _, _ = await tab.post("/ui/dlq/delete", [("job", ids[0]), ("count", "1")])
    assert status == 403
    await tab.login(ADMIN_KEY)
    status, text, _ = await tab.get("/ui/dlq")
    assert 'id="delete-selected"' in text
    status, text, _ = await tab.get(f"/ui/dlq/confirm?{query}")
    assert status == 200 and "Delete 1 dead-lettered job(s)?" in text and 'name="count" value="1"' in text
    status, text, _ = await tab.post("/ui/dlq/delete", [("job", ids[0]), ("job", ids[1]), ("count", "1")])
    assert status == 400 and "count" in text  # the confirmed count does not match what is posted
    assert await job_status(node, ids[1]) == "failed"
    status, _, response = await tab.post("/ui/dlq/delete", [("job", ids[0]), ("job", "job-gone"), ("count", "2")])
    assert status == 303 and response.headers["Location"] == "/ui/dlq?done=delete&count=1&missing=1"
    status, _, _ = await tab.get(f"/ui/jobs/{ids[0]}")
    assert status == 404
    _, text, _ = await tab.get(response.headers["Location"])
    assert "1 job(s) deleted. 1 were no longer in the dead-letter queue." in text
    assert 'id="dlq-count">1<' in text


@pytest.mark.parametrize(("query", "message"), [
    ("action=requeue", "Select at least one job"),
    ("action=requeue&job=not%20an%20id", "is not a job id"),
    ("action=purge&job=job-1", "action: must be requeue or delete"),
    ("action=requeue&" + "&".join(f"job=job-{i}" for i in range(101)), "at most 100"),
])
async def test_bad_selections_are_400(tab: Tab, query: str, message: str) -> None:
    await tab.login(ADMIN_KEY)
    status, text, _ = await tab.get(f"/ui/dlq/confirm?{query}")
    assert status == 400 and message in text


async def test_viewer_sees_the_queue_without_controls(node: Node, tab: Tab) -> None:
    await dead_letters(node, 1)
    await tab.login(VIEWER_KEY)
    status, text, _ = await tab.get("/ui/dlq")
    assert status == 200 and 'id="dlq-count">1<' in text
    assert 'type="checkbox"' not in text and "requeue-selected" not in text and "delete-selected" not in text
    status, _, _ = await tab.get("/ui/dlq?offset=-1")
    assert status == 400
