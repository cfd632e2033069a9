"""SecautoClient against an in-process standalone node (embedded store, no Redis anywhere)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from secauto.client import MAX_BATCH, SecautoClient, SecautoError
from secauto.node import Node
from tests.support.nodes import ADMIN_KEY, VIEWER_KEY, node_settings, running_node
from tests.support.ports import free_port

SCRIPT_STEP = {"action": "run_script", "script": "baseit.py", "parameters": {"target": "192.168.1.1"}}
SET_STEP = {"action": "set", "variables": {"x": 1}}


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with running_node(node_settings("solo")) as node:
        yield node


@pytest.fixture
async def client(node: Node) -> AsyncIterator[SecautoClient]:
    async with SecautoClient(node.url, ADMIN_KEY) as client:
        yield client


async def test_submit_and_wait_runs_a_script_job(client: SecautoClient) -> None:
    job_id = await client.submit([SCRIPT_STEP], {"environment": "production"}, priority=5, tags=["bench"])
    assert isinstance(job_id, str) and job_id
    job = await client.wait(job_id, timeout=20, poll=0.02)
    assert job["id"] == job_id
    assert job["status"] == "completed", job
    assert job["priority"] == 5 and job["tags"] == ["bench"]
    assert job["started_at"] and job["completed_at"] and job["submitted_at"]
    assert job["results"], job


async def test_submit_by_playbook_name(client: SecautoClient) -> None:
    job_id = await client.submit("notify_soc", {"alert": {"source_ip": "10.0.0.1", "type": "scan"}})
    job = await client.wait(job_id, timeout=20, poll=0.02)
    assert job["playbook_name"] == "notify_soc"
    assert job["status"] == "completed", job
    assert job["context"]["soc_notified"] is True


async def test_submit_batch_returns_ids_in_order_and_all_finish(client: SecautoClient) -> None:
    jobs = [SecautoClient.job_body([SET_STEP], {"i": i}) for i in range(25)]
    ids = await client.submit_batch(jobs)
    assert len(ids) == 25 and len(set(ids)) == 25
    for i, job_id in enumerate(ids):
        job = await client.wait(job_id, timeout=20, poll=0.02)
        assert job["status"] == "completed"
        assert job["context"]["i"] == i


async def test_submit_batch_edge_cases_send_nothing(client: SecautoClient) -> None:
    assert await client.submit_batch([]) == []
    with pytest.raises(ValueError, match="at most"):
        await client.submit_batch([SecautoClient.job_body([SET_STEP])] * (MAX_BATCH + 1))


async def test_invalid_batch_raises_validation_error_naming_the_job(client: SecautoClient) -> None:
    jobs = [SecautoClient.job_body([SET_STEP]), {"playbook": [SET_STEP], "priority": "high"}]
    with pytest.raises(SecautoError) as caught:
        await client.submit_batch(jobs)
    error = caught.value
    assert error.status == 400 and error.code == "validation_error"
    assert any(detail.get("field", "").startswith("jobs[1]") for detail in error.details), error.details


async def test_invalid_job_raises_validation_error_with_details(client: SecautoClient) -> None:
    with pytest.raises(SecautoError) as caught:
        await client.submit([{"action": "no_such_action"}])
    assert caught.value.status == 400
    assert caught.value.code == "validation_error"
    assert caught.value.details and caught.value.message


async def test_unknown_job_raises_not_found(client: SecautoClient) -> None:
    with pytest.raises(SecautoError) as caught:
        await client.get_job("job-does-not-exist")
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    with pytest.raises(SecautoError) as caught:
        await client.wait("job-does-not-exist", timeout=1)
    assert caught.value.status == 404


async def test_wait_times_out_on_a_job_that_runs_longer(client: SecautoClient) -> None:
    job_id = await client.submit([{"action": "sleep", "seconds": 3}])
    with pytest.raises(TimeoutError, match=job_id):
        await client.wait(job_id, timeout=0.3, poll=0.05)


async def test_bad_key_and_missing_role_raise(node: Node) -> None:
    async with SecautoClient(node.url, "wrong-key-0123456789abcdef") as client:
        with pytest.raises(SecautoError) as caught:
            await client.cluster()
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")
        # health needs no key
        assert (await client.health())["status"] == "healthy"
    async with SecautoClient(node.url, VIEWER_KEY) as viewer:
        assert (await viewer.cluster())["nodes"]
        with pytest.raises(SecautoError) as caught:
            await viewer.submit([SET_STEP])
        assert (caught.value.status, caught.value.code) == (403, "forbidden")


async def test_cluster_health_and_live(client: SecautoClient, node: Node) -> None:
    cluster = await client.cluster()
    assert [entry["id"] for entry in cluster["nodes"]] == ["solo"]
    assert cluster["queue_size"] == 0
    health = await client.health()
    assert health["status"] == "healthy" and health["node_id"] == "solo"
    assert (await client.live())["success"] is True


async def test_unreachable_node_raises_connection_error() -> None:
    async with SecautoClient(f"http://127.0.0.1:{free_port()}", ADMIN_KEY, request_timeout=5) as client:
        with pytest.raises(SecautoError) as caught:
            await client.health()
    assert caught.value.status == 0
    assert caught.value.code == "connection_error"


async def test_a_client_that_is_not_open_refuses() -> None:
    client = SecautoClient("http://127.0.0.1:1", ADMIN_KEY)
    with pytest.raises(RuntimeError, match="not open"):
        await client.cluster()
    await client.close()  # harmless


def test_job_body_drops_unset_options() -> None:
    assert SecautoClient.job_body([SET_STEP]) == {"playbook": [SET_STEP], "context": {}}
    assert SecautoClient.job_body("triage_ip", {"a": 1}, priority=0, max_retries=2) == {
        "playbook_name": "triage_ip", "context": {"a": 1}, "priority": 0, "max_retries": 2}
