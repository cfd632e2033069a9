"""The HTTP API on a standalone node (embedded store, no Redis anywhere): auth, roles, bad input,
the document's bodies, and a job that runs end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from secauto.node import Node
from tests.support.nodes import ADMIN_KEY, OPERATOR_KEY, VIEWER_KEY, auth, node_settings, running_node

JOB = {
    "playbook": [{"action": "run_script", "script": "baseit.py", "parameters": {"target": "192.168.1.1"}}],
    "context": {"environment": "production"},
}


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with running_node(node_settings("solo", server={"max_body_bytes": 4096})) as node:
        yield node


@pytest.fixture
async def http(node: Node) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=node.url) as session:
        yield session


async def wait_job(http: aiohttp.ClientSession, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            async with http.get(f"/cluster/jobs/{job_id}", headers=auth()) as response:
                body = await response.json()
            if body["job"]["status"] in ("completed", "failed", "cancelled"):
                return body["job"]  # type: ignore[no-any-return]
            await asyncio.sleep(0.05)


def assert_error(body: dict[str, Any], code: str) -> None:
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], list)
    assert body["timestamp"].endswith("Z")


async def test_standalone_node_runs_the_documents_job_without_redis(http: aiohttp.ClientSession) -> None:
    async with http.post("/cluster/jobs", json=JOB, headers=auth()) as response:
        assert response.status == 200
        body = await response.json()
    assert set(body) == {"success", "job_id", "status", "timestamp"}
    assert body["success"] is True and body["status"] == "submitted"
    job = await wait_job(http, body["job_id"])
    assert job["status"] == "completed", job
    for field in ("id", "playbook", "context", "status", "submitted_at", "started_at", "completed_at",
                  "assigned_to", "results", "retry_count", "priority", "tags"):
        assert field in job
    assert job["assigned_to"] == "solo" and job["retry_count"] == 0 and job["tags"] == []
    assert job["context"]["baseit"]["target"] == "192.168.1.1"
    assert job["results"][0]["status"] == "completed"


async def test_cluster_view_of_a_standalone_node(http: aiohttp.ClientSession) -> None:
    async with http.get("/cluster", headers=auth()) as response:
        assert response.status == 200
        body = await response.json()
    cluster = body["cluster"]
    assert body["success"] is True and cluster["node_id"] == "solo" and cluster["total_nodes"] == 1
    assert cluster["queue_size"] == 0 and cluster["cluster_name"] == "test-cluster"
    node = cluster["nodes"][0]
    for field in ("id", "host", "port", "status", "started_at", "last_seen", "capabilities", "load",
                  "jobs_running", "jobs_completed", "jobs_failed"):
        assert field in node
    assert node["status"] == "active" and node["capabilities"] == ["playbook_execution", "job_processing"]


async def test_health_needs_no_key(http: aiohttp.ClientSession) -> None:
    async with http.get("/health") as response:
        body = await response.json()
        assert response.status == 200
    assert body["status"] == "healthy" and body["node_id"] == "solo" and body["version"]
    async with http.get("/health/live") as response:
        assert response.status == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key-0123456789"},
                                     {"X-API-Key": "nope"}, {"Authorization": "Basic " + ADMIN_KEY},
                                     {"Authorization": "Bearer"}])
async def test_missing_or_wrong_key_is_401(http: aiohttp.ClientSession, headers: dict[str, str]) -> None:
    for method, path in (("GET", "/cluster"), ("POST", "/cluster/jobs"), ("GET", "/cluster/jobs/job-1")):
        async with http.request(method, path, headers=headers, json=JOB) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert_error(await response.json(), "unauthorized")


async def test_x_api_key_header_and_roles(http: aiohttp.ClientSession) -> None:
    async with http.get("/cluster", headers={"X-API-Key": VIEWER_KEY}) as response:
        assert response.status == 200
    async with http.post("/cluster/jobs", json=JOB, headers={"X-API-Key": VIEWER_KEY}) as response:
        assert response.status == 403
        assert_error(await response.json(), "forbidden")
    async with http.post("/cluster/jobs", json=JOB, headers={"X-API-Key": OPERATOR_KEY}) as response:
        assert response.status == 200


async def queue_size(http: aiohttp.ClientSession) -> int:
    async with http.get("/cluster", headers=auth()) as response:
        return int((await response.json())["cluster"]["queue_size"])


@pytest.mark.parametrize(("body", "field"), [
    ({**JOB, "priority": "high"}, "priority"),
    ({**JOB, "priority": 10_000}, "priority"),
    ({**JOB, "context": []}, "context"),
    ({**JOB, "tags": "scan"}, "tags"),
    ({**JOB, "tags": ["ok", 5]}, "tags[1]"),
    ({**JOB, "timeout": -1}, "timeout"),
    ({**JOB, "colour": "red"}, "colour"),
    ({"context": {}}, "playbook"),
    ([1, 2], "$"),
    ({**JOB, "playbook": "not a list"}, "playbook"),
])
async def test_wrong_types_are_400_naming_the_field(http: aiohttp.ClientSession, body: Any, field: str) -> None:
    async with http.post("/cluster/jobs", json=body, headers=auth()) as response:
        assert response.status == 400
        error = await response.json()
    assert_error(error, "validation_error")
    assert field in [detail["field"] for detail in error["error"]["details"]], error
    assert await queue_size(http) == 0


async def test_invalid_playbook_is_400_with_paths(http: aiohttp.ClientSession) -> None:
    body = {"playbook": [{"action": "run_script", "script": "baseit.py"}, {"action": "no_such_action"}]}
    async with http.post("/cluster/jobs", json=body, headers=auth()) as response:
        assert response.status == 400
        error = await response.json()
    assert_error(error, "validation_error")
    paths = [detail["path"] for detail in error["error"]["details"]]
    assert any(path.startswith("$[1]") for path in paths), error


@pytest.mark.parametrize("payload", [b"{", b"{\"playbook\": [}", b"\xff\xfe", b"", b"null"])
async def test_malformed_json_is_400(http: aiohttp.ClientSession, payload: bytes) -> None:
    headers = {**auth(), "Content-Type": "application/json"}
    async with http.post("/cluster/jobs", data=payload, headers=headers) as response:
        assert response.status == 400
        assert_error(await response.json(), "validation_error")


async def test_oversized_body_is_413(http: aiohttp.ClientSession) -> None:
    big = {**JOB, "context": {"blob": "x" * 10_000}}
    async with http.post("/cluster/jobs", json=big, headers=auth()) as response:
        assert response.status == 413
        assert_error(await response.json(), "payload_too_large")
    assert await queue_size(http) == 0


async def test_non_json_content_type_is_415(http: aiohttp.ClientSession) -> None:
    headers = {**auth(), "Content-Type": "text/plain"}
    async with http.post("/cluster/jobs", data=b"{}", headers=headers) as response:
        assert response.status == 415
        assert_error(await response.json(), "unsupported_media_type")


async def test_unknown_route_and_method(http: aiohttp.ClientSession) -> None:
    async with http.get("/nope", headers=auth()) as response:
        assert response.status == 404
        assert_error(await response.json(), "not_found")
    async with http.delete("/cluster", headers=auth()) as response:
        assert response.status == 405
        assert_error(await response.json(), "method_not_allowed")
    async with http.get("/cluster/jobs/job-doesnotexist", headers=auth()) as response:
        assert response.status == 404
        assert_error(await response.json(), "not_found")
    async with http.get("/cluster/jobs/..%2F..%2Fetc", headers=auth()) as response:
        assert response.status == 404


def test_every_route_declares_a_role() -> None:
    from secauto.api import cluster, health
    from secauto.api.app import declared_role

    for module in (cluster, health):
        for method, path, handler in module.ROUTES:
            assert declared_role(handler) in ("public", "viewer", "operator", "admin"), (method, path)


async def test_batch_submit_runs_every_job(http: aiohttp.ClientSession) -> None:
    body = {"jobs": [{**JOB, "context": {"n": n}} for n in range(3)]}
    async with http.post("/cluster/jobs/batch", json=body, headers=auth()) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["success"] is True and answer["status"] == "submitted" and len(set(answer["job_ids"])) == 3
    for job_id in answer["job_ids"]:
        assert (await wait_job(http, job_id))["status"] == "completed"


async def test_batch_with_one_bad_job_stores_nothing(http: aiohttp.ClientSession) -> None:
    body = {"jobs": [JOB, {**JOB, "priority": "urgent"}]}
    async with http.post("/cluster/jobs/batch", json=body, headers=auth()) as response:
        assert response.status == 400
        error = await response.json()
    assert error["error"]["details"][0]["field"] == "jobs[1].priority"
    body = {"jobs": [JOB, {"playbook": [{"action": "nope"}]}]}
    async with http.post("/cluster/jobs/batch", json=body, headers=auth()) as response:
        assert response.status == 400
        error = await response.json()
    assert error["error"]["details"][0]["field"] == "jobs[1].playbook"
    async with http.post("/cluster/jobs/batch", json={"jobs": []}, headers=auth()) as response:
        assert response.status == 400
    assert await queue_size(http) == 0
