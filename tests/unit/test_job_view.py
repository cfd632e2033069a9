"""The public job view: every answer that shows a job shows the document's fields and the second
wave's, never the bookkeeping the Lua scripts keep in the stored record (README, "HTTP API")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from secauto.models import Job, JobView, job_decoder
from secauto.node import Node
from tests.support.nodes import OPERATOR_KEY, auth, node_settings, running_node

BOOKKEEPING = {"node_losses", "avoid_node", "avoid_until", "target", "enqueued_at", "tag_list", "parent_list",
               "dependency_keys"}
DOCUMENT_FIELDS = {"id", "playbook", "context", "status", "submitted_at", "started_at", "completed_at",
                   "assigned_to", "results", "retry_count", "priority", "tags"}
SECOND_WAVE_FIELDS = {"attempts", "error", "reason", "timeout", "affinity", "run_at", "playbook_name", "submitted_by",
                      "depends_on", "on_dependency_failure", "waiting_on", "dependencies"}


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    # One retry with no backoff, so a failing job reaches the DLQ at once after a retry.
    async with running_node(node_settings("viewer-node", cluster={"max_retries": 1})) as node:
        yield node


@pytest.fixture
async def http(node: Node) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=node.url) as session:
        yield session


async def submit(http: aiohttp.ClientSession, body: dict[str, Any], key: str = OPERATOR_KEY) -> str:
    async with http.post("/cluster/jobs", json=body, headers=auth(key)) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["job_id"])


async def finished(http: aiohttp.ClientSession, job_id: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            async with http.get(f"/cluster/jobs/{job_id}", headers=auth()) as response:
                assert response.status == 200
                job: dict[str, Any] = (await response.json())["job"]
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            await asyncio.sleep(0.05)


def assert_public(job: dict[str, Any]) -> None:
    leaked = BOOKKEEPING & set(job)
    assert not leaked, f"bookkeeping in a job answer: {sorted(leaked)}"
    assert set(job) <= set(JobView.__struct_fields__), sorted(set(job) - set(JobView.__struct_fields__))


async def test_a_job_answer_has_the_documents_fields_and_no_bookkeeping(node: Node,
                                                                         http: aiohttp.ClientSession) -> None:
    job_id = await submit(http, {"playbook": [{"action": "set", "variables": {"x": 1}}], "context": {"a": []},
                                 "tags": ["scan", "ioc"], "affinity": "tenant-7", "timeout": 30})
    job = await finished(http, job_id)
    assert_public(job)
    assert set(job) >= DOCUMENT_FIELDS | SECOND_WAVE_FIELDS
    assert job["status"] == "completed" and job["tags"] == ["scan", "ioc"] and job["affinity"] == "tenant-7"
    assert job["submitted_by"] == "ops" and job["timeout"] == 30 and job["context"]["a"] == []
    assert job["attempts"][0]["outcome"] == "completed" and job["attempts"][0]["node"] == "viewer-node"
    # The stored record keeps what the Lua scripts need.
    raw = await node.redis.get(f"secauto:job:{job_id}")
    stored = msgspec.json.decode(raw)
    assert {"tag_list", "enqueued_at", "node_losses"} <= set(stored)
    assert job_decoder.decode(raw).tag_list == "scan,ioc"


async def test_dead_lettered_jobs_are_shown_in_the_public_view(http: aiohttp.ClientSession) -> None:
    job_id = await submit(http, {"playbook": [{"action": "fail", "message": "nope"}]})
    job = await finished(http, job_id)
    assert job["status"] == "failed" and job["reason"] == "playbook_error" and job["retry_count"] == 1
    assert_public(job)
    async with http.get("/cluster/dlq", headers=auth()) as response:
        assert response.status == 200
        page = (await response.json())["dlq"]
    assert [entry["id"] for entry in page["jobs"]] == [job_id]
    for entry in page["jobs"]:
        assert_public(entry)
        assert set(entry) >= DOCUMENT_FIELDS


async def test_job_listings_show_no_bookkeeping(http: aiohttp.ClientSession) -> None:
    await submit(http, {"playbook": [], "tags": ["t"]})
    async with http.get("/cluster/jobs", headers=auth()) as response:
        listed = (await response.json())["jobs"]
    assert listed and all(not BOOKKEEPING & set(entry) for entry in listed)


def test_the_view_decodes_old_records_without_submitted_by() -> None:
    record = msgspec.json.encode(Job(id="job-1", submitted_at="2024-01-15T10:35:00.000Z", submitted_to="n1"))
    view = msgspec.json.decode(record.replace(b',"submitted_by":null', b""), type=JobView)
    assert view.submitted_by is None and view.status == "pending"
