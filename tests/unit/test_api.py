"""The HTTP API on a standalone node (embedded store, no Redis anywhere): auth, roles, bad input,
the document's bodies, and a job that runs end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from secauto.node import Node
from secauto.store.keys import Keys
from secauto.store.registry import NodeRegistry
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


async def test_cluster_view_shows_this_nodes_counters_as_they_are_now() -> None:
    """The answering node's own entry is current, not as old as its last heartbeat (issue 9, point 3)."""
    settings = node_settings("slow-beat", cluster={"heartbeat_interval": 3600})
    async with running_node(settings) as node, aiohttp.ClientSession(base_url=node.url) as http:

        async def own_entry() -> dict[str, Any]:
            async with http.get("/cluster", headers=auth(VIEWER_KEY)) as response:
                nodes = (await response.json())["cluster"]["nodes"]
            assert [entry["id"] for entry in nodes] == ["slow-beat"]
            return nodes[0]  # type: ignore[no-any-return]

        first = await own_entry()
        assert (first["jobs_completed"], first["jobs_running"], first["load"]) == (0, 0, 0.0)
        async with http.post("/cluster/jobs", json={"playbook": [{"action": "sleep", "seconds": 30}]},
                             headers=auth()) as response:
            sleeper = (await response.json())["job_id"]
        async with asyncio.timeout(5):
            while (await wait_status(http, sleeper)) != "running":
                await asyncio.sleep(0.02)
        running = await own_entry()
        capacity = running["capacity"]
        assert (running["jobs_running"], running["load"]) == (1, round(1 / capacity, 4))
        async with http.post("/cluster/jobs", json={"playbook": [{"action": "log", "message": "done"}]},
                             headers=auth()) as response:
            quick = (await response.json())["job_id"]
        assert (await wait_job(http, quick))["status"] == "completed"
        async with http.post("/cluster/jobs", json={"playbook": [{"action": "fail"}], "max_retries": 0},
                             headers=auth()) as response:
            failing = (await response.json())["job_id"]
        assert (await wait_job(http, failing))["status"] == "failed"
        async with http.delete(f"/cluster/jobs/{sleeper}", headers=auth()) as response:
            assert response.status == 200
        async with asyncio.timeout(5):  # the cancelled attempt leaves the executor within a second
            while (now := await own_entry())["jobs_running"] != 0:
                await asyncio.sleep(0.02)
        assert (now["jobs_completed"], now["jobs_failed"], now["load"]) == (1, 1, 0.0)
        # the registry itself still has the record of the start: only the answering node is current
        records = await NodeRegistry(node.redis, Keys("test-cluster")).live_nodes()
        assert [(r.jobs_completed, r.jobs_failed) for r in records] == [(0, 0)]
        assert records[0].last_seen <= first["last_seen"] < now["last_seen"]


async def test_a_job_logs_one_info_line_per_lifecycle_transition(http: aiohttp.ClientSession) -> None:
    """Submitted, started, ended: an operator follows a job in three lines (issue 9, point 4)."""
    from loguru import logger

    records: list[Any] = []
    sink = logger.add(lambda message: records.append(message.record), level="INFO")
    try:
        async with http.post("/cluster/jobs", json={"playbook": [{"action": "set", "variables": {"a": 1}}]},
                             headers=auth()) as response:
            job_id = (await response.json())["job_id"]
        assert (await wait_job(http, job_id))["status"] == "completed"
        await asyncio.sleep(0.05)  # the end is logged right after the record is written
    finally:
        logger.remove(sink)
    lines = [(r["extra"].get("component"), r["message"]) for r in records if r["extra"].get("job_id") == job_id]
    assert [component for component, _ in lines] == ["dispatcher", "executor", "executor"], lines
    assert lines[0][1] == "Job submitted to distributed queue"
    assert lines[1][1] == "Job started (attempt 1)" and lines[2][1].startswith("Job completed in ")


async def wait_status(http: aiohttp.ClientSession, job_id: str) -> str:
    async with http.get(f"/cluster/jobs/{job_id}", headers=auth()) as response:
        return (await response.json())["job"]["status"]  # type: ignore[no-any-return]


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
    from secauto.api.roles import declared_role
    from secauto.api.routes import route_table

    for method, path, handler in route_table():
        assert declared_role(handler) in ("public", "viewer", "operator", "admin", "metrics"), (method, path)


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
    assert error["error"]["details"][0]["field"] == "jobs[1].playbook[0].action"
    async with http.post("/cluster/jobs/batch", json={"jobs": []}, headers=auth()) as response:
        assert response.status == 400
    assert await queue_size(http) == 0


async def test_sync_playbook_run(http: aiohttp.ClientSession) -> None:
    body = {"playbook": [{"action": "set", "variables": {"x": "{{seed}}"}},
                         {"run": "baseit", "target": "{{x}}"}], "context": {"seed": "10.1.2.3"}}
    async with http.post("/playbook", json=body, headers=auth(OPERATOR_KEY)) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["success"] is True and answer["context"]["x"] == "10.1.2.3"
    assert [step["status"] for step in answer["results"]] == ["completed", "completed"]
    assert answer["context"]["baseit"]["target"] == "10.1.2.3"
    failing = {"playbook": [{"action": "fail", "message": "stop here"}]}
    async with http.post("/playbook", json=failing, headers=auth()) as response:
        answer = await response.json()
        assert response.status == 200
    assert answer["success"] is False and "stop here" in answer["error"]
    async with http.post("/playbook", json={"playbook": [{"action": "nope"}]}, headers=auth()) as response:
        assert response.status == 400


async def test_validate_endpoint(http: aiohttp.ClientSession) -> None:
    good = [{"action": "log", "message": "hi"}]
    for body in (good, {"playbook": good}, {"playbook_name": "triage_ip"}):
        async with http.post("/validate", json=body, headers=auth(VIEWER_KEY)) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["valid"] is True, answer
    bad = [{"action": "log", "message": "ok"}, {"action": "run_script", "script": "../etc/passwd"}]
    async with http.post("/validate", json=bad, headers=auth()) as response:
        answer = await response.json()
    assert answer["valid"] is False and answer["problems"][0]["path"].startswith("$[1]")
    async with http.post("/validate", json={"playbook_name": "../secrets"}, headers=auth()) as response:
        answer = await response.json()
    assert answer["valid"] is False


async def test_async_alias_and_named_playbook(http: aiohttp.ClientSession) -> None:
    body = {"playbook_name": "triage_ip", "context": {"alert": {"source_ip": "203.0.113.7", "severity": "high",
                                                               "type": "scan"}}}
    async with http.post("/playbook/async", json=body, headers=auth()) as response:
        assert response.status == 200, await response.text()
        job_id = (await response.json())["job_id"]
    job = await wait_job(http, job_id)
    assert job["playbook_name"] == "triage_ip" and isinstance(job["playbook"], list)
    assert job["status"] == "completed", job["error"]
    async with http.post("/cluster/jobs", json={"playbook_name": "../../etc/passwd"}, headers=auth()) as response:
        assert response.status == 400


async def test_cancel_running_job_stops_it(http: aiohttp.ClientSession, node: Node) -> None:
    async with http.post("/cluster/jobs", json={"playbook": [{"action": "sleep", "seconds": 30}]},
                         headers=auth()) as response:
        job_id = (await response.json())["job_id"]
    async with asyncio.timeout(5):
        while True:
            async with http.get(f"/cluster/jobs/{job_id}", headers=auth()) as response:
                if (await response.json())["job"]["status"] == "running":
                    break
            await asyncio.sleep(0.02)
    async with http.delete(f"/cluster/jobs/{job_id}", headers=auth(VIEWER_KEY)) as response:
        assert response.status == 403
    async with http.delete(f"/cluster/jobs/{job_id}", headers=auth(OPERATOR_KEY)) as response:
        assert response.status == 200
        answer = await response.json()
    assert answer["status"] == "cancelled" and answer["previous_status"] == "running"
    job = await wait_job(http, job_id)
    assert job["status"] == "cancelled" and job["attempts"][-1]["outcome"] == "cancelled"
    from actors.messages import ExecutorStats, GetStats

    async with asyncio.timeout(1):  # the attempt itself is stopped on the node within a second
        while True:
            stats: ExecutorStats = await node.system.get("executor").ask(GetStats())
            if stats.running == 0:
                break
            await asyncio.sleep(0.02)
    async with http.delete(f"/cluster/jobs/{job_id}", headers=auth()) as response:
        assert response.status == 409
        assert_error(await response.json(), "conflict")
    async with http.delete("/cluster/jobs/job-unknown", headers=auth()) as response:
        assert response.status == 404


async def test_failed_job_is_retried_then_dead_lettered_then_managed(http: aiohttp.ClientSession) -> None:
    body = {"playbook": [{"action": "fail", "message": "boom"}], "max_retries": 1}
    async with http.post("/cluster/jobs", json=body, headers=auth()) as response:
        job_id = (await response.json())["job_id"]
    job = await wait_job(http, job_id)
    assert job["status"] == "failed" and job["reason"] == "playbook_error" and job["retry_count"] == 1
    assert [attempt["outcome"] for attempt in job["attempts"]] == ["failed", "failed"]
    async with http.get("/cluster/dlq", headers=auth(VIEWER_KEY)) as response:
        dlq = (await response.json())["dlq"]
    assert dlq["size"] == 1 and dlq["jobs"][0]["id"] == job_id
    async with http.get("/cluster/dlq?limit=0", headers=auth()) as response:
        assert response.status == 400
    async with http.post(f"/cluster/jobs/{job_id}/retry", headers=auth(OPERATOR_KEY)) as response:
        assert response.status == 200
        assert (await response.json())["previous_status"] == "failed"
    job = await wait_job(http, job_id)
    assert job["status"] == "failed" and len(job["attempts"]) == 4
    async with http.post(f"/cluster/dlq/{job_id}/requeue", headers=auth(OPERATOR_KEY)) as response:
        assert response.status == 200
    await wait_job(http, job_id)
    async with http.delete(f"/cluster/dlq/{job_id}", headers=auth(OPERATOR_KEY)) as response:
        assert response.status == 403
    async with http.delete(f"/cluster/dlq/{job_id}", headers=auth(ADMIN_KEY)) as response:
        assert response.status == 200
    async with http.get(f"/cluster/jobs/{job_id}", headers=auth()) as response:
        assert response.status == 404
    async with http.delete(f"/cluster/dlq/{job_id}", headers=auth(ADMIN_KEY)) as response:
        assert response.status == 404
    async with http.post("/cluster/dlq/job-unknown/requeue", headers=auth()) as response:
        assert response.status == 404


async def test_job_timeout_is_a_failed_attempt(http: aiohttp.ClientSession) -> None:
    body = {"playbook": [{"action": "sleep", "seconds": 5}], "timeout": 0.2, "max_retries": 0}
    async with http.post("/cluster/jobs", json=body, headers=auth()) as response:
        job_id = (await response.json())["job_id"]
    job = await wait_job(http, job_id)
    assert job["status"] == "failed" and job["reason"] == "timeout" and "timed out" in job["error"]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in the Prometheus text format (0 if absent)."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_move_by_the_right_amounts(http: aiohttp.ClientSession) -> None:
    async with http.get("/metrics") as response:
        assert response.status == 401  # not public by default
    async with http.get("/metrics", headers=auth(VIEWER_KEY)) as response:
        before = await response.text()
    ok = {"playbook": [{"action": "log", "message": "x"}]}
    bad = {"playbook": [{"action": "fail", "message": "no"}], "max_retries": 1}
    ids = []
    for body in (ok, ok, bad):
        async with http.post("/cluster/jobs", json=body, headers=auth()) as response:
            ids.append((await response.json())["job_id"])
    for job_id in ids:
        await wait_job(http, job_id)
    async with http.get("/metrics", headers=auth(VIEWER_KEY)) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        after = await response.text()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("secauto_jobs_submitted_total") == 3
    assert delta("secauto_jobs_completed_total") == 2
    assert delta("secauto_jobs_failed_total", reason="playbook_error") == 2  # first attempt and its retry
    assert delta("secauto_jobs_retried_total", reason="playbook_error") == 1
    assert delta("secauto_jobs_dead_lettered_total", reason="playbook_error") == 1
    assert delta("secauto_job_duration_seconds_count", status="completed") == 2
    assert delta("secauto_job_queue_wait_seconds_count") == 4
    assert metric(after, "secauto_dlq_size") == 1 and metric(after, "secauto_active_nodes") == 1
    assert metric(after, "secauto_leader") == 1 and metric(after, "secauto_queue_size") == 0
    assert delta("secauto_http_requests_total", route="/cluster/jobs", method="POST", status="200") == 3
    assert metric(after, "secauto_http_requests_total", route="/metrics", method="GET", status="401") == 1


async def test_public_metrics() -> None:
    async with running_node(node_settings("pub", metrics={"public": True})) as node, \
            aiohttp.ClientSession(base_url=node.url) as session, session.get("/metrics") as response:
        assert response.status == 200
        assert 'secauto_node_info{node_id="pub"} 1.0' in await response.text()


async def test_job_listing_filters_and_pages(http: aiohttp.ClientSession) -> None:
    ids = []
    for index in range(7):
        body = {"playbook": [{"action": "fail" if index % 3 == 0 else "log", "message": "x"}], "max_retries": 0,
                "tags": ["even" if index % 2 == 0 else "odd"]}
        async with http.post("/cluster/jobs", json=body, headers=auth()) as response:
            ids.append((await response.json())["job_id"])
    for job_id in ids:
        await wait_job(http, job_id)
    seen: list[str] = []
    cursor = None
    while True:
        url = "/cluster/jobs?limit=3" + (f"&cursor={cursor}" if cursor else "")
        async with http.get(url, headers=auth(VIEWER_KEY)) as response:
            assert response.status == 200
            page = await response.json()
        assert len(page["jobs"]) <= 3
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, each once
    assert "playbook" not in page["jobs"][0] and "context" not in page["jobs"][0]
    async with http.get("/cluster/jobs?status=failed", headers=auth()) as response:
        failed = [job["id"] for job in (await response.json())["jobs"]]
    assert failed == [ids[6], ids[3], ids[0]]
    async with http.get("/cluster/jobs?tag=odd&node=solo", headers=auth()) as response:
        odd = [job["id"] for job in (await response.json())["jobs"]]
    assert odd == [ids[5], ids[3], ids[1]]
    for bad in ("status=done", "limit=0", "limit=many", "cursor=abc", "sort=asc"):
        async with http.get(f"/cluster/jobs?{bad}", headers=auth()) as response:
            assert response.status == 400, bad


async def test_stats_over_the_last_hour(http: aiohttp.ClientSession) -> None:
    for message in ("ok", "ok", "ok", "no"):
        action = "fail" if message == "no" else "log"
        async with http.post("/cluster/jobs", json={"playbook": [{"action": action, "message": message}],
                                                   "max_retries": 0}, headers=auth()) as response:
            await wait_job(http, (await response.json())["job_id"])
    async with http.get("/cluster/stats", headers=auth(VIEWER_KEY)) as response:
        assert response.status == 200
        stats = (await response.json())["stats"]
    assert (stats["attempts"], stats["completed"], stats["failed"]) == (4, 3, 1)
    assert stats["success_rate"] == 0.75 and stats["failure_rate"] == 0.25
    assert stats["per_node"] == {"solo": {"completed": 3, "failed": 1}}
    assert stats["duration_ms"]["p50"] is not None and stats["duration_ms"]["p95"] >= stats["duration_ms"]["p50"]


def test_stats_summary_window_and_percentiles() -> None:
    from secauto.operations import summarize

    now = 10_000_000
    ends = [f"{now - i * 1000} {'completed' if i % 4 else 'failed'} n{i % 2} {i}" for i in range(1, 101)]
    ends.append(f"{now - 4_000_000} completed n0 5")  # older than the window
    stats = msgspec.to_builtins(summarize(ends, now))
    assert stats["attempts"] == 100 and stats["failed"] == 25
    assert stats["duration_ms"] == {"p50": 50.5, "p95": 95.0}
    assert stats["per_node"]["n0"] == {"completed": 25, "failed": 25}
