"""Job dependencies through the HTTP API of a standalone node (embedded store): batch DAGs with keys,
depends_on job ids, the waiting status and view, the dependencies context, failure policies, cancel
cascades, and 400s that name the field and store nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from secauto.client import SecautoClient, SecautoError
from secauto.node import Node
from tests.support.nodes import OPERATOR_KEY, auth, node_settings, running_node

FINISHED = ("completed", "failed", "cancelled")


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with running_node(node_settings("deps-node", cluster={"max_retries": 0, "max_concurrent_jobs": 4})) as node:
        yield node


@pytest.fixture
async def http(node: Node) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=node.url) as session:
        yield session


def sets(**variables: Any) -> list[dict[str, Any]]:
    return [{"action": "set", "variables": variables}]


def sleeps(seconds: float) -> list[dict[str, Any]]:
    return [{"action": "sleep", "seconds": seconds}]


async def post(http: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    async with http.post(path, json=body, headers=auth(OPERATOR_KEY)) as response:
        return response.status, await response.json()


async def get_job(http: aiohttp.ClientSession, job_id: str) -> dict[str, Any]:
    async with http.get(f"/cluster/jobs/{job_id}", headers=auth()) as response:
        assert response.status == 200, await response.text()
        job: dict[str, Any] = (await response.json())["job"]
        return job


async def wait_status(http: aiohttp.ClientSession, job_id: str, *wanted: str, timeout: float = 20) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            job = await get_job(http, job_id)
            if job["status"] in (wanted or FINISHED):
                return job
            await asyncio.sleep(0.05)


async def job_count(http: aiohttp.ClientSession) -> int:
    async with http.get("/cluster/jobs?limit=200", headers=auth()) as response:
        return len((await response.json())["jobs"])


async def test_a_batch_dag_runs_in_order_and_dependents_read_final_contexts(http: aiohttp.ClientSession) -> None:
    status, body = await post(http, "/cluster/jobs/batch", {"jobs": [
        {"key": "report", "depends_on": ["enrich", "lookup"],
         "playbook": sets(verdict="{{dependencies.enrich.context.baseit.is_private}}",
                          owner="{{dependencies.lookup.context.owner}}",
                          enrich_id="{{dependencies.enrich.id}}", enrich_status="{{dependencies.enrich.status}}")},
        {"key": "enrich", "playbook": [{"action": "run_script", "script": "baseit.py",
                                        "parameters": {"target": "10.0.0.1"}}]},
        {"key": "lookup", "playbook": sleeps(0.2) + sets(owner="alice")},
    ]})
    assert status == 200, body
    report_id, enrich_id, lookup_id = body["job_ids"]
    report = await wait_status(http, report_id)
    enrich, lookup = await get_job(http, enrich_id), await get_job(http, lookup_id)
    assert report["status"] == "completed", report
    assert report["context"]["verdict"] is True and report["context"]["owner"] == "alice"
    assert report["context"]["enrich_id"] == enrich_id and report["context"]["enrich_status"] == "completed"
    # Not kept in the final context (the dependents of this job would nest it).
    assert "dependencies" not in report["context"]
    assert report["started_at"] >= max(enrich["completed_at"], lookup["completed_at"])
    assert report["depends_on"] == [enrich_id, lookup_id] and report["on_dependency_failure"] == "cancel"
    assert report["waiting_on"] == []
    assert report["dependencies"] == {"enrich": {"id": enrich_id, "status": "completed"},
                                      "lookup": {"id": lookup_id, "status": "completed"}}
    assert enrich["depends_on"] == [] and enrich["dependencies"] == {} and enrich["on_dependency_failure"] is None


async def test_a_waiting_job_is_shown_listed_and_cancelled_with_its_dependents(http: aiohttp.ClientSession) -> None:
    _, body = await post(http, "/cluster/jobs", {"playbook": sleeps(30)})
    parent = body["job_id"]
    _, body = await post(http, "/cluster/jobs", {"playbook": sets(x=1), "depends_on": [parent]})
    child = body["job_id"]
    _, body = await post(http, "/cluster/jobs", {"playbook": sets(x=2), "depends_on": [child]})
    grandchild = body["job_id"]
    view = await get_job(http, child)
    assert view["status"] == "waiting" and view["waiting_on"] == [parent]
    assert view["dependencies"][parent]["id"] == parent
    assert view["dependencies"][parent]["status"] in ("pending", "running")
    assert (await get_job(http, grandchild))["waiting_on"] == [child]
    async with http.get("/cluster/jobs?status=waiting", headers=auth()) as response:
        listed = [job["id"] for job in (await response.json())["jobs"]]
    assert set(listed) == {child, grandchild}
    async with http.delete(f"/cluster/jobs/{child}", headers=auth(OPERATOR_KEY)) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["previous_status"] == "waiting" and answer["status"] == "cancelled"
    cancelled = await get_job(http, grandchild)
    assert cancelled["status"] == "cancelled" and cancelled["reason"] == "dependency_failed"
    assert child in cancelled["error"]
    async with http.delete(f"/cluster/jobs/{parent}", headers=auth(OPERATOR_KEY)) as response:
        assert response.status == 200


async def test_failure_policies(http: aiohttp.ClientSession) -> None:
    status, body = await post(http, "/cluster/jobs/batch", {"jobs": [
        {"key": "scan", "playbook": [{"action": "fail", "message": "scanner down"}]},
        {"key": "notify", "depends_on": ["scan"], "playbook": sets(x=1)},
        {"key": "after-notify", "depends_on": ["notify"], "playbook": sets(x=1)},
        {"key": "cleanup", "depends_on": ["scan"], "on_dependency_failure": "run",
         "playbook": sets(scan_status="{{dependencies.scan.status}}",
                          scan_error_context="{{dependencies.scan.context}}")},
    ]})
    assert status == 200, body
    scan, notify, after, cleanup = body["job_ids"]
    assert (await wait_status(http, scan))["status"] == "failed"
    for job_id, cause in ((notify, scan), (after, notify)):
        job = await wait_status(http, job_id)
        assert (job["status"], job["reason"]) == ("cancelled", "dependency_failed")
        assert job["error"] == f"dependency {cause} ended {'failed' if cause == scan else 'cancelled'}"
    ran = await wait_status(http, cleanup)
    assert ran["status"] == "completed" and ran["context"]["scan_status"] == "failed"
    assert ran["context"]["scan_error_context"] == {}


async def test_bad_dependency_graphs_are_400_naming_the_field_and_store_nothing(http: aiohttp.ClientSession) -> None:
    _, body = await post(http, "/cluster/jobs", {"playbook": sets(x=1)})
    existing = body["job_id"]
    await wait_status(http, existing)
    before = await job_count(http)
    cases: list[tuple[str, Any, set[str]]] = [
        ("/cluster/jobs/batch", {"jobs": [{"key": "a", "depends_on": ["b"], "playbook": []},
                                          {"key": "b", "depends_on": ["a"], "playbook": []}]},
         {"jobs[0].depends_on[0]", "jobs[1].depends_on[0]"}),
        ("/cluster/jobs/batch", {"jobs": [{"key": "a", "depends_on": ["a"], "playbook": []}]},
         {"jobs[0].depends_on[0]"}),
        ("/cluster/jobs/batch", {"jobs": [{"key": "a", "playbook": []},
                                          {"depends_on": ["a", existing, "job-nope"], "playbook": []}]},
         {"jobs[1].depends_on[2]"}),
        ("/cluster/jobs/batch", {"jobs": [{"key": "x.y", "playbook": []}]}, {"jobs[0].key"}),
        ("/cluster/jobs/batch", {"jobs": [{"key": "x", "playbook": []}, {"depends_on": ["x.z"], "playbook": []}]},
         {"jobs[1].depends_on[0]"}),
        ("/cluster/jobs", {"depends_on": [existing, "job-nope"], "playbook": []}, {"depends_on[1]"}),
        ("/cluster/jobs/batch", {"jobs": [{"depends_on": ["job-nope"], "playbook": []},
                                          {"depends_on": [existing, "job-gone", "job-nope"], "playbook": []}]},
         {"jobs[0].depends_on[0]", "jobs[1].depends_on[1]", "jobs[1].depends_on[2]"}),
        ("/cluster/jobs", {"depends_on": [existing, existing], "playbook": []}, {"depends_on[1]"}),
        ("/cluster/jobs", {"depends_on": [f"job-{i}" for i in range(101)], "playbook": []}, {"depends_on"}),
        ("/cluster/jobs", {"key": "a", "playbook": []}, {"key"}),
        ("/cluster/jobs", {"on_dependency_failure": "ignore", "playbook": []}, {"on_dependency_failure"}),
    ]
    for path, request, fields in cases:
        status, answer = await post(http, path, request)
        assert status == 400, (request, answer)
        assert answer["error"]["code"] == "validation_error"
        assert {detail["field"] for detail in answer["error"]["details"]} == fields, (request, answer)
    assert await job_count(http) == before
    status, answer = await post(http, "/cluster/jobs", {"depends_on": ["job-nope"], "playbook": []})
    assert "no job 'job-nope'" in answer["error"]["details"][0]["message"]


async def test_a_dependency_that_completed_before_the_submission(http: aiohttp.ClientSession) -> None:
    _, body = await post(http, "/cluster/jobs", {"playbook": sets(answer=42)})
    parent = body["job_id"]
    await wait_status(http, parent)
    _, body = await post(http, "/cluster/jobs", {"playbook": sets(got="{{dependencies." + parent + ".context.answer}}"),
                                                 "depends_on": [parent]})
    child = await wait_status(http, body["job_id"])
    assert child["status"] == "completed" and child["context"]["got"] == 42


async def test_the_client_submits_dependencies(node: Node) -> None:
    async with SecautoClient(node.url, OPERATOR_KEY) as client:
        _, second = await client.submit_batch([
            SecautoClient.job_body(sets(n=1), key="first"),
            SecautoClient.job_body(sets(m="{{dependencies.first.context.n}}"), depends_on=["first"],
                                   on_dependency_failure="run"),
        ])
        third = await client.submit(sets(x=1), depends_on=[second])
        job = await client.wait(third, timeout=20)
        assert job["status"] == "completed" and job["dependencies"] == {second: {"id": second, "status": "completed"}}
        assert (await client.get_job(second))["context"]["m"] == 1
        with pytest.raises(SecautoError) as refused:
            await client.submit(sets(x=1), depends_on=["job-nope"])
        assert refused.value.status == 400 and refused.value.details[0]["field"] == "depends_on[0]"
    assert SecautoClient.job_body([], depends_on=["a"], key="b", on_dependency_failure="run") == {
        "playbook": [], "context": {}, "depends_on": ["a"], "key": "b", "on_dependency_failure": "run"}


async def test_the_readme_example(http: aiohttp.ClientSession) -> None:
    status, body = await post(http, "/cluster/jobs/batch", {"jobs": [
        {"key": "enrich", "playbook": [{"action": "run_script", "script": "baseit.py",
                                        "parameters": {"target": "192.168.1.1"}}]},
        {"key": "whois", "playbook": [{"action": "set", "variables": {"owner": "alice"}}]},
        {"key": "report", "depends_on": ["enrich", "whois"],
         "playbook": [{"action": "if",
                       "condition": ["==", "{{dependencies.enrich.context.baseit.is_private}}", True],
                       "then": [{"action": "log",
                                 "message": "private address, owner {{dependencies.whois.context.owner}}"}],
                       "else": [{"action": "log", "message": "public address"}]}]}]})
    assert status == 200, body
    report = await wait_status(http, body["job_ids"][2])
    branch = report["results"][0]["output"]
    assert branch["branch"] == "then" and branch["results"][0]["output"]["message"] == "private address, owner alice"


async def test_a_dependency_whose_record_is_gone_reads_as_null(http: aiohttp.ClientSession) -> None:
    status, body = await post(http, "/cluster/jobs/batch", {"jobs": [
        {"key": "broken", "playbook": [{"action": "fail", "message": "no"}]},
        {"key": "slow", "playbook": sleeps(0.5)},
        {"depends_on": ["broken", "slow"], "on_dependency_failure": "run",
         "playbook": sets(seen="{{dependencies.broken}}")},
    ]})
    assert status == 200, body
    broken, _, reader = body["job_ids"]
    await wait_status(http, broken)
    async with http.delete(f"/cluster/dlq/{broken}", headers=auth()) as response:
        assert response.status == 200
    job = await wait_status(http, reader)
    assert job["status"] == "completed"
    assert job["context"]["seen"] == {"id": broken, "status": None, "context": None}
    assert job["dependencies"]["broken"] == {"id": broken, "status": None}


async def test_a_job_has_at_most_1000_dependents(http: aiohttp.ClientSession) -> None:
    _, body = await post(http, "/cluster/jobs", {"playbook": sleeps(30)})
    parent = body["job_id"]
    status, body = await post(http, "/cluster/jobs/batch", {"jobs": [
        {"playbook": [], "depends_on": [parent]} for _ in range(1000)]})
    assert status == 200, body
    status, body = await post(http, "/cluster/jobs", {"playbook": [], "depends_on": [parent]})
    assert status == 400
    [detail] = body["error"]["details"]
    assert detail["field"] == "depends_on[0]" and "most dependents a job may have (1000)" in detail["message"]
    async with http.delete(f"/cluster/jobs/{parent}", headers=auth()) as response:
        assert response.status == 200
