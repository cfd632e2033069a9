"""GET /openapi.json: complete (every route, method, body, response and error), valid OpenAPI 3.1, and
true: real responses of a standalone node validate against it and decode as the declared msgspec types."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import msgspec
import pytest
from openapi_spec_validator import validate as validate_openapi
from redis.exceptions import ConnectionError as RedisConnectionError

from secauto.api.cluster import JobResponse
from secauto.api.dlq import DlqResponse
from secauto.api.errors import ErrorResponse
from secauto.api.openapi import KEYED, build_document, routes
from secauto.api.roles import METRICS_ROLE, declared_role
from secauto.api.routes import route_table
from secauto.api.spec import JSON, declared_operation
from secauto.models import NodeInfo, NodeView
from secauto.node import Node
from tests.support.nodes import ADMIN_KEY, OPERATOR_KEY, VIEWER_KEY, auth, node_settings, running_node

DOC = build_document(route_table())
OPERATIONS = {(route.method, route.path): route.operation for route in routes(route_table())}


def all_routes() -> list[tuple[str, str, Any]]:
    return list(route_table())


def test_every_route_declares_an_operation() -> None:
    for method, path, handler in all_routes():
        assert declared_operation(handler) is not None, (method, path)


@pytest.mark.parametrize("metrics_public", [False, True])
def test_document_is_valid_openapi_3_1(metrics_public: bool) -> None:
    document = build_document(route_table(), metrics_public=metrics_public)
    assert document["openapi"].startswith("3.1")
    validate_openapi(document)  # raises with the offending part
    metrics = document["paths"]["/metrics"]["get"]
    assert metrics["security"] == ([] if metrics_public else KEYED)


def test_every_route_and_method_is_in_the_document_and_nothing_else() -> None:
    declared = {(method.lower(), path) for method, path, _ in all_routes()}
    documented = {(method, path) for path, item in DOC["paths"].items() for method in item}
    assert documented == declared
    assert len({op["operationId"] for item in DOC["paths"].values() for op in item.values()}) == len(declared)


def test_security_follows_the_declared_roles() -> None:
    for method, path, handler in all_routes():
        op = DOC["paths"][path][method.lower()]
        role = declared_role(handler)
        if role == "public":
            assert op["security"] == [] and "401" not in op["responses"], (method, path)
        else:
            assert op["security"] == KEYED and "401" in op["responses"], (method, path)
            assert op["x-secauto-role"] == ("viewer" if role == METRICS_ROLE else role)
            assert ("403" in op["responses"]) == (role in ("operator", "admin")), (method, path)
    schemes = DOC["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKeyAuth"] == {**schemes["apiKeyAuth"], "type": "apiKey", "in": "header", "name": "X-API-Key"}


def test_bodies_errors_and_special_media_types_are_documented() -> None:
    for method, path, handler in all_routes():
        op = DOC["paths"][path][method.lower()]
        spec = declared_operation(handler)
        assert spec is not None
        for status, response in op["responses"].items():
            if int(status) >= 400:
                assert JSON in response["content"], (method, path, status)
                schema = response["content"][JSON]["schema"]
                refs = [alt["$ref"] for alt in schema.get("anyOf", [schema])]
                assert "#/components/schemas/ErrorResponse" in refs, (method, path, status)
        if spec.body is not None:
            assert {"400", "413", "415"} <= set(op["responses"])
            assert op["requestBody"]["required"] is spec.body_required
        if spec.store:
            assert "Retry-After" in op["responses"]["503"]["headers"]
    assert set(DOC["paths"]["/cluster/events"]["get"]["responses"]["200"]["content"]) == {"text/event-stream"}
    assert set(DOC["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert DOC["paths"]["/playbook"]["post"]["responses"]["504"]
    assert DOC["paths"]["/playbook"]["post"]["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    assert DOC["paths"]["/cluster/jobs/{job_id}"]["delete"]["responses"]["409"]
    jobs_params = {param["name"]: param for param in DOC["paths"]["/cluster/jobs"]["get"]["parameters"]}
    assert set(jobs_params) == {"status", "tag", "node", "schedule", "limit", "cursor"}
    assert jobs_params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}
    assert jobs_params["status"]["schema"]["enum"] == ["cancelled", "completed", "failed", "pending", "running",
                                                      "waiting"]


def test_every_json_response_schema_carries_success_and_timestamp() -> None:
    schemas = DOC["components"]["schemas"]
    for name, schema in schemas.items():
        if name.endswith("Response"):
            assert {"success", "timestamp"} <= set(schema["required"]), name


def test_node_view_is_the_node_record_without_its_internal_field() -> None:
    assert set(NodeView.__struct_fields__) == set(NodeInfo.__struct_fields__) - {"last_seen_epoch"}


# ------------------------------------------------------------------------- real responses vs the document


class Recorder:
    """Calls the node and checks each answer against the document and the declared msgspec types."""

    def __init__(self, node: Node, http: aiohttp.ClientSession) -> None:
        self.node = node
        self.http = http
        self.covered: set[tuple[str, str, int]] = set()

    async def call(self, method: str, template: str, status: int, *, path: str | None = None,
                   key: str | None = ADMIN_KEY, **kwargs: Any) -> Any:
        headers = {**(auth(key) if key else {}), **kwargs.pop("headers", {})}
        async with self.http.request(method, path or template, headers=headers, **kwargs) as response:
            raw = await response.read()
            assert response.status == status, (method, path or template, raw[:500])
            media = response.content_type
            answered_headers = response.headers
        self.covered.add((method, template, status))
        op = DOC["paths"][template][method.lower()]
        assert str(status) in op["responses"], f"{method} {template} answered {status}, which it does not declare"
        for name, header in op["responses"][str(status)].get("headers", {}).items():
            assert not header["required"] or name in answered_headers, (method, template, status, name)
        content = op["responses"][str(status)]["content"]
        assert media in content, (method, template, status, media)
        if "json" in kwargs and status < 300:
            body_schema = op["requestBody"]["content"][JSON]["schema"]
            jsonschema.validate(kwargs["json"], {**body_schema, "components": DOC["components"]})
        if media != JSON:
            return raw.decode()
        body = msgspec.json.decode(raw)
        jsonschema.validate(body, {**content[media]["schema"], "components": DOC["components"]})
        spec = OPERATIONS[(method, template)]
        kinds = [*spec.responses.get(status, ()), *((ErrorResponse,) if status >= 400 else ())]
        problems = []
        for kind in kinds:
            try:
                msgspec.json.decode(raw, type=kind, strict=True)
                break
            except msgspec.ValidationError as exc:
                problems.append(f"{kind}: {exc}")
        else:
            pytest.fail(f"{method} {template} {status}: {raw[:300]!r} decodes as none of {problems}")
        return body

    async def wait_job(self, job_id: str, *statuses: str) -> dict[str, Any]:
        wanted = statuses or ("completed", "failed", "cancelled")
        async with asyncio.timeout(20):
            while True:
                job = (await self.call("GET", "/cluster/jobs/{job_id}", 200, path=f"/cluster/jobs/{job_id}"))["job"]
                if job["status"] in wanted:
                    return job  # type: ignore[no-any-return]
                await asyncio.sleep(0.05)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    settings = node_settings("solo", server={"max_body_bytes": 8192}, cluster={"max_concurrent_jobs": 1},
                             security={"secret_key": "openapi-test-secret-key-0123456789abcdef"})
    async with running_node(settings) as node, aiohttp.ClientSession(base_url=node.url) as http:
        yield Recorder(node, http)


JOB = {"playbook": [{"action": "run_script", "script": "baseit.py", "parameters": {"target": "192.168.1.1"}}],
       "context": {"environment": "production"}, "tags": ["t1"], "priority": 5}


async def test_real_responses_match_the_document_and_the_declared_types(recorder: Recorder) -> None:
    call = recorder.call
    served = await call("GET", "/openapi.json", 200, key=None)
    assert served == msgspec.json.decode(msgspec.json.encode(DOC))
    await call("GET", "/health", 200, key=None)
    await call("GET", "/health/live", 200, key=None)
    await call("GET", "/cluster", 200, key=VIEWER_KEY)

    # a job that completes, in every listing
    job_id = (await call("POST", "/cluster/jobs", 200, json=JOB, key=OPERATOR_KEY))["job_id"]
    job = await recorder.wait_job(job_id)
    assert job["status"] == "completed" and job["attempts"] and job["results"]
    ids = (await call("POST", "/cluster/jobs/batch", 200, json={"jobs": [JOB, {**JOB, "delay": 0.01}]}))["job_ids"]
    await call("POST", "/playbook/async", 200, json={"playbook_name": "triage_ip", "context": {
        "alert": {"source_ip": "203.0.113.7", "severity": "high", "type": "scan"}}})
    for other in ids:
        await recorder.wait_job(other)
    listing = await call("GET", "/cluster/jobs", 200, path="/cluster/jobs?tag=t1&limit=2&status=completed")
    assert len(listing["jobs"]) == 2 and listing["next_cursor"]
    await call("GET", "/cluster/jobs", 200, path=f"/cluster/jobs?cursor={listing['next_cursor']}")
    stats = (await call("GET", "/cluster/stats", 200))["stats"]
    assert stats["completed"] >= 3

    # cancel a delayed job, retry it, cancel again; 409 once it ended
    delayed = (await call("POST", "/cluster/jobs", 200, json={**JOB, "run_at": "2999-01-01T00:00:00+02:00"}))["job_id"]
    at = f"/cluster/jobs/{delayed}"
    assert (await call("DELETE", "/cluster/jobs/{job_id}", 200, path=at))["previous_status"] == "pending"
    await call("DELETE", "/cluster/jobs/{job_id}", 409, path=at)
    await call("POST", "/cluster/jobs/{job_id}/retry", 200, path=f"{at}/retry")
    await call("POST", "/cluster/jobs/{job_id}/retry", 409, path=f"{at}/retry")  # pending, running or done

    # a job that fails into the dead-letter queue, then requeued and deleted
    failing = {"playbook": [{"action": "fail", "message": "boom"}], "max_retries": 0}
    dead = (await call("POST", "/cluster/jobs", 200, json=failing))["job_id"]
    assert (await recorder.wait_job(dead))["status"] == "failed"
    async with recorder.http.get("/cluster/dlq", headers=auth()) as response:
        raw = await response.read()
    page = msgspec.json.decode(raw, type=DlqResponse, strict=True)  # the spliced body is what it declares
    assert page.dlq.size == 1 and page.dlq.jobs[0].id == dead and page.dlq.jobs[0].attempts[0].outcome == "failed"
    await call("GET", "/cluster/dlq", 200, path="/cluster/dlq?limit=5&offset=0")
    await call("POST", "/cluster/dlq/{job_id}/requeue", 200, path=f"/cluster/dlq/{dead}/requeue")
    await recorder.wait_job(dead, "failed")
    async with asyncio.timeout(10):
        while not (await call("GET", "/cluster/dlq", 200))["dlq"]["size"]:
            await asyncio.sleep(0.05)
    await call("DELETE", "/cluster/dlq/{job_id}", 200, path=f"/cluster/dlq/{dead}")
    await call("DELETE", "/cluster/dlq/{job_id}", 404, path=f"/cluster/dlq/{dead}")
    await call("POST", "/cluster/dlq/{job_id}/requeue", 404, path=f"/cluster/dlq/{dead}/requeue")

    # synchronous runs and validation
    run = {"playbook": [{"action": "set", "variables": {"x": "{{seed}}"}}, {"action": "log", "message": "{{x}}"}],
           "context": {"seed": 1}}
    assert (await call("POST", "/playbook", 200, json=run, key=OPERATOR_KEY))["success"] is True
    assert (await call("POST", "/playbook", 200, json={"playbook": [{"action": "fail", "message": "no"}]}))[
        "success"] is False
    assert (await call("POST", "/validate", 200, json=run["playbook"], key=VIEWER_KEY))["steps"] == 2
    invalid = await call("POST", "/validate", 200, json={"playbook": [{"action": "nope"}]})
    assert invalid["valid"] is False and invalid["problems"] and "steps" not in invalid

    # webhooks (to a closed loopback port: nothing leaves the machine)
    hook = (await call("POST", "/webhooks", 200, json={"url": "http://127.0.0.1:9/hook", "secret": "s"}))["webhook"]
    assert hook["has_secret"] is True and "secret" not in hook
    await call("GET", "/webhooks", 200)
    await call("DELETE", "/webhooks/{webhook_id}", 200, path=f"/webhooks/{hook['id']}")
    await call("DELETE", "/webhooks/{webhook_id}", 404, path=f"/webhooks/{hook['id']}")
    await call("DELETE", "/webhooks/{webhook_id}", 409, path="/webhooks/config-0")

    # secrets: stored, listed (never the value), used by a job, deleted
    stored = await call("POST", "/secrets", 200, json={"name": "api_token", "value": "tok-0123456789abcdef"})
    assert stored["created"] is True and stored["secret"]["name"] == "api_token" and "value" not in stored["secret"]
    assert [entry["name"] for entry in (await call("GET", "/secrets", 200))["secrets"]] == ["api_token"]
    uses = {"playbook": [{"action": "run_script", "script": "baseit.py",
                          "parameters": {"target": "192.168.1.1", "token": "{{secrets.api_token}}"}}]}
    await recorder.wait_job((await call("POST", "/cluster/jobs", 200, json=uses))["job_id"])
    await call("POST", "/cluster/jobs", 400, json={"playbook": [
        {"action": "run_script", "script": "baseit.py", "parameters": {"token": "{{secrets.nope}}"}}]})
    await call("POST", "/secrets", 400, json={"name": "short", "value": "1234567"})
    await call("POST", "/secrets", 403, json={"name": "x", "value": "0123456789"}, key=OPERATOR_KEY)
    await call("DELETE", "/secrets/{name}", 200, path="/secrets/api_token")
    await call("DELETE", "/secrets/{name}", 404, path="/secrets/api_token")
    # schedules: define, replace, pause, resume, trigger, delete
    schedule = {"name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "playbook": JOB["playbook"]}
    assert (await call("POST", "/schedules", 200, json=schedule, key=OPERATOR_KEY))["created"] is True
    at = "/schedules/nightly"
    await call("PUT", "/schedules/{name}", 200, path=at, json={"every": 3600, "playbook_name": "triage_ip"})
    await call("GET", "/schedules", 200, key=VIEWER_KEY)
    await call("POST", "/schedules/{name}/pause", 200, path=f"{at}/pause", json={"note": "change window"})
    await call("POST", "/schedules/{name}/resume", 200, path=f"{at}/resume")
    await call("POST", "/schedules/{name}/trigger", 200, path=f"{at}/trigger")
    detail = (await call("GET", "/schedules/{name}", 200, path=at))["schedule"]
    assert detail["history"][0]["outcome"] == "triggered" and detail["last_fire"]["job_id"]
    await call("DELETE", "/schedules/{name}", 200, path=at)
    await call("GET", "/schedules/{name}", 404, path=at)
    await call("POST", "/schedules/{name}/trigger", 404, path=f"{at}/trigger")
    await call("POST", "/schedules", 400, json={**schedule, "cron": "99 * * * *"})
    await call("POST", "/schedules", 200, json={**schedule, "name": "dup"})
    await call("POST", "/schedules", 409, json={**schedule, "name": "dup"})
    await call("DELETE", "/schedules/{name}", 403, path="/schedules/dup", key=VIEWER_KEY)
    # keys and the audit trail
    made = await call("POST", "/keys", 200, json={"name": "ci", "role": "viewer", "expires_at": "2999-01-01T00:00:00Z",
                                                "rate_limit": {"per_second": 5, "burst": 10}, "max_pending": 3})
    assert made["api_key"].startswith("secauto_") and made["key"]["rate_limit"] == {"per_second": 5.0, "burst": 10}
    await call("GET", "/cluster", 200, key=made["api_key"])
    await call("GET", "/keys", 200)
    await call("POST", "/keys", 409, json={"name": "ci", "role": "viewer"})
    await call("POST", "/keys", 400, json={"name": "late", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"})
    await call("DELETE", "/keys/{name}", 200, path="/keys/ci")
    await call("DELETE", "/keys/{name}", 404, path="/keys/ci")
    await call("DELETE", "/keys/{name}", 409, path="/keys/admin")
    trail = await call("GET", "/audit", 200, path="/audit?action=key.&limit=2")
    assert [entry["action"] for entry in trail["entries"]] == ["key.delete", "key.delete"] and trail["next_cursor"]
    since = "2000-01-01T00:00:00Z"
    await call("GET", "/audit", 200, path=f"/audit?cursor={trail['next_cursor']}&actor=admin&since={since}")
    await call("GET", "/audit", 400, path="/audit?cursor=nope")

    assert "secauto_" in await call("GET", "/metrics", 200, key=VIEWER_KEY)
    async with recorder.http.get("/cluster/events", headers=auth()) as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        assert await response.content.readline() == b": connected\n"
    recorder.covered.add(("GET", "/cluster/events", 200))

    # errors: each status is declared for its route and the body is an ErrorResponse
    await call("GET", "/cluster", 401, key=None)
    await call("GET", "/metrics", 401, key="wrong-key")
    await call("POST", "/cluster/jobs", 403, json=JOB, key=VIEWER_KEY)
    await call("DELETE", "/cluster/dlq/{job_id}", 403, path="/cluster/dlq/job-x", key=OPERATOR_KEY)
    await call("POST", "/cluster/jobs", 400, json={**JOB, "priority": "high"})
    await call("POST", "/cluster/jobs", 400, json={**JOB, "run_at": "2024-01-01T00:00:00"})
    await call("POST", "/cluster/jobs/batch", 400, json={"jobs": [JOB, {"playbook": [{"action": "nope"}]}]})
    await call("POST", "/cluster/jobs", 413, json={**JOB, "context": {"x": "y" * 10_000}})
    await call("POST", "/cluster/jobs", 415, data=b"{}", headers={"Content-Type": "text/plain"})
    await call("GET", "/cluster/jobs", 400, path="/cluster/jobs?limit=0")
    await call("GET", "/cluster/dlq", 400, path="/cluster/dlq?offset=-1")
    await call("GET", "/cluster/events", 400, path="/cluster/events?type=Bad%20Type")
    await call("GET", "/cluster/jobs/{job_id}", 404, path="/cluster/jobs/job-nope")
    await call("GET", "/cluster/jobs/{job_id}", 404, path="/cluster/jobs/no%20such")
    await call("POST", "/validate", 400, json="a string")
    await call("POST", "/webhooks", 400, json={"url": "ftp://example.invalid/x"})
    # once 500s (found by probing what schemathesis generates): an unparsable URL, a huge offset
    await call("POST", "/webhooks", 400, json={"url": "http://[bad/x"})
    await call("POST", "/webhooks", 400, json={"url": "http://127.0.0.1:99999999/x"})
    await call("POST", "/webhooks", 400, json={"url": "http://127.0.0.1:9/a b"})
    await call("GET", "/cluster/dlq", 400, path="/cluster/dlq?offset=99999999999999999999999")
    await call("GET", "/cluster/jobs", 400, path="/cluster/jobs?status=null")
    await call("POST", "/cluster/jobs", 400, json={**JOB, "run_at": "0001-01-01T00:00:00+01:00"})  # before year 1

    successes = {(method, path) for method, path, status in recorder.covered if status < 300}
    assert successes == set(OPERATIONS), f"no real success response checked for {set(OPERATIONS) - successes}"


async def test_spliced_job_response_decodes_as_its_declared_type(recorder: Recorder) -> None:
    job_id = (await recorder.call("POST", "/cluster/jobs", 200, json=JOB))["job_id"]
    await recorder.wait_job(job_id)
    async with recorder.http.get(f"/cluster/jobs/{job_id}", headers=auth()) as response:
        raw = await response.read()
    answer = msgspec.json.decode(raw, type=JobResponse, strict=True)
    assert answer.success is True and answer.job.id == job_id and answer.job.status == "completed"
    assert answer.job.attempts[0].outcome == "completed" and answer.timestamp.endswith("Z")


async def test_sync_run_over_capacity_is_a_declared_429(recorder: Recorder) -> None:
    slow = {"playbook": [{"action": "sleep", "seconds": 1}]}
    first = asyncio.create_task(recorder.call("POST", "/playbook", 200, json=slow))
    await asyncio.sleep(0.3)
    await recorder.call("POST", "/playbook", 429, json=slow)
    await first


async def test_degraded_health_is_a_declared_503(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    async def unreachable(*args: Any, **kwargs: Any) -> bool:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(recorder.node.redis, "ping", unreachable)
    body = await recorder.call("GET", "/health", 503, key=None)  # Retry-After checked as documented
    assert body["success"] is False and body["status"] == "degraded" and "Redis unreachable" in body["reason"]


class _Declared(msgspec.Struct):
    success: bool = True


class _Other(msgspec.Struct):
    success: bool = True


async def test_handlers_cannot_drift_from_their_declarations() -> None:
    """A handler that answers or reads another type than it declares fails loudly (a 500 in tests)."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from secauto.api.inputs import read_json
    from secauto.api.middlewares import error_middleware
    from secauto.api.spec import operation, respond

    @operation("ok", ok=_Declared)
    async def good(request: web.Request) -> web.StreamResponse:
        return respond(request, _Declared())

    @operation("answers another type", ok=_Declared)
    async def wrong_answer(request: web.Request) -> web.StreamResponse:
        return respond(request, _Other())

    @operation("answers an undeclared status", ok=_Declared)
    async def wrong_status(request: web.Request) -> web.StreamResponse:
        return respond(request, _Declared(), status=202)

    @operation("reads another body", ok=_Declared, body=_Declared)
    async def wrong_body(request: web.Request) -> web.StreamResponse:
        await read_json(request, _Other)
        return respond(request, _Declared())

    app = web.Application(middlewares=[error_middleware])
    for path, handler in (("/good", good), ("/answer", wrong_answer), ("/status", wrong_status),
                          ("/body", wrong_body)):
        app.router.add_post(path, handler)
    async with TestClient(TestServer(app)) as client:
        assert (await client.post("/good")).status == 200
        for path in ("/answer", "/status", "/body"):
            response = await client.post(path, json={})
            assert response.status == 500, path
            assert (await response.json())["error"]["code"] == "internal_error"


async def test_redis_outage_and_read_only_replica_answer_503_with_retry_after() -> None:
    """A Redis that is unreachable, or that became a replica under a write (failover), is a 503 the
    client retries after Retry-After, never a 500."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ReadOnlyError

    from secauto.api.middlewares import error_middleware

    async def down(request: web.Request) -> web.StreamResponse:
        raise RedisConnectionError("Connection refused")

    async def read_only(request: web.Request) -> web.StreamResponse:
        raise ReadOnlyError("You can't write against a read only replica.")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/down", down)
    app.router.add_post("/read-only", read_only)
    async with TestClient(TestServer(app)) as client:
        for path, words in (("/down", "unreachable"), ("/read-only", "read-only")):
            response = await client.post(path)
            body = await response.json()
            assert response.status == 503, path
            assert int(response.headers["Retry-After"]) >= 1
            assert body["error"]["code"] == "unavailable" and words in body["error"]["message"]
