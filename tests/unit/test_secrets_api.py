"""``/secrets`` on a standalone node (embedded store): storing, listing, deleting, validation of references,
nodes without a key or with another key, and values masked in the answers built on the fly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from loguru import logger

from actors.secrets import RefreshSecrets
from secauto.node import Node
from secauto.redaction import REDACTOR
from secauto.secret_cipher import SecretCipher
from secauto.store.keys import Keys
from secauto.store.secrets import SecretStore
from secauto.vault import SecretVault
from tests.support.nodes import OPERATOR_KEY, auth, node_settings, running_node
from tests.unit.test_api import wait_job

KEY = "unit-node-secret-key-0123456789abcdef"
VALUE = 'api-token-"quoted"-0123456789abcdef'
ECHO = """
import json, sys
data = json.load(sys.stdin)
print("stderr says " + data["token"], file=sys.stderr)
print(json.dumps({"echoed": data["token"]}))
"""


@pytest.fixture(autouse=True)
def _forget_values() -> Iterator[None]:
    yield
    REDACTOR.clear()


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    (tmp_path / "echo_token.py").write_text(ECHO)
    return tmp_path


async def start(scripts: Path, secret_key: str = "") -> Any:
    return running_node(node_settings("solo", security={"secret_key": secret_key},
                                      engine={"scripts_dir": str(scripts)}))


@pytest.fixture
async def node(scripts: Path) -> AsyncIterator[Node]:
    async with await start(scripts, KEY) as node:
        yield node


@pytest.fixture
async def http(node: Node) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=node.url) as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, path: str, json: Any = None,
               key: str | None = None) -> tuple[int, dict[str, Any], str]:
    headers = auth(key) if key else auth()
    async with http.request(method, path, json=json, headers=headers) as response:
        text = await response.text()
        return response.status, await response.json(), text


def uses(template: str = "{{secrets.api}}") -> list[dict[str, Any]]:
    return [{"action": "run_script", "script": "echo_token", "parameters": {"token": template}}]


async def test_store_list_replace_delete(node: Node, http: aiohttp.ClientSession) -> None:
    status, body, text = await call(http, "POST", "/secrets", {"name": "api", "value": VALUE})
    assert status == 200 and body["created"] is True and set(body["secret"]) == {"name", "updated_at"}
    status, body, _ = await call(http, "POST", "/secrets", {"name": "api", "value": VALUE + "-v2"})
    assert status == 200 and body["created"] is False
    status, body, text = await call(http, "GET", "/secrets")
    assert [entry["name"] for entry in body["secrets"]] == ["api"] and "0123456789" not in text
    raw = await node.redis.hget(Keys("test-cluster").secrets, "api")
    assert raw is not None and b"0123456789" not in raw and b"ciphertext" in raw  # encrypted at rest
    assert (await call(http, "DELETE", "/secrets/api"))[0] == 200
    assert (await call(http, "DELETE", "/secrets/api"))[0] == 404
    assert (await call(http, "GET", "/secrets", key=OPERATOR_KEY))[0] == 403


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "api", "value": "1234567"}, "value"),
    ({"name": "bad name", "value": "0123456789"}, "name"),
    ({"name": "api", "value": "0123456789", "extra": 1}, "extra"),
    ({"name": "api"}, "value"),
])
async def test_bad_bodies_name_the_field_and_never_echo_the_value(http: aiohttp.ClientSession, body: dict[str, Any],
                                                                  field: str) -> None:
    status, answer, text = await call(http, "POST", "/secrets", body)
    assert status == 400 and answer["error"]["details"][0]["field"] == field
    assert "1234567" not in text and "0123456789" not in text


async def test_unknown_secrets_are_refused_at_submission_naming_them(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", "/secrets", {"name": "api", "value": VALUE})
    status, body, _ = await call(http, "POST", "/cluster/jobs", {"playbook": uses("{{secrets.nope}}")})
    assert status == 400
    assert body["error"]["message"] == "unknown secret 'nope' (used at $[0].parameters.token)"
    assert body["error"]["details"] == [{"field": "playbook", "message": "unknown secret 'nope'",
                                         "path": "$[0].parameters.token"}]
    batch = {"jobs": [{"playbook": uses()}, {"playbook": uses("x {{secrets.gone}}")}]}
    status, body, _ = await call(http, "POST", "/cluster/jobs/batch", batch)
    assert status == 400 and body["error"]["message"].startswith("jobs[1]: unknown secret 'gone'")
    assert body["error"]["details"][0]["field"] == "jobs[1].playbook"
    status, body, _ = await call(http, "POST", "/validate", uses("{{secrets.nope}}"))
    assert status == 200 and body["valid"] is False and body["problems"][0]["path"] == "$[0].parameters.token"
    status, body, _ = await call(http, "POST", "/playbook", {"playbook": uses("{{secrets.nope}}")})
    assert status == 400 and "unknown secret 'nope'" in body["error"]["message"]
    status, body, _ = await call(http, "POST", "/cluster/jobs", {"playbook": [
        {"action": "set", "variables": {"copy": "{{secrets.api}}"}}]})
    assert status == 400 and body["error"]["details"][0]["path"] == "$[0].variables.copy"


async def test_a_synchronous_run_answers_with_the_value_masked(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", "/secrets", {"name": "api", "value": VALUE})
    status, body, text = await call(http, "POST", "/playbook", {"playbook": uses(), "context": {"x": 1}},
                                    key=OPERATOR_KEY)
    assert status == 200 and body["success"] is True
    assert body["results"][0]["output"] == {"echoed": "***"} and body["context"]["echoed"] == "***"
    assert "0123456789" not in text
    stored = (await call(http, "POST", "/cluster/jobs", {"playbook": uses()}))[1]["job_id"]
    job = await wait_job(http, stored)
    assert job["status"] == "completed" and job["context"]["echoed"] == "***"
    assert job["playbook"][0]["parameters"]["token"] == "{{secrets.api}}"  # the job keeps the reference


async def test_a_node_without_a_key_says_so(scripts: Path) -> None:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="WARNING", format="{message}")
    try:
        async with await start(scripts) as node, aiohttp.ClientSession(base_url=node.url) as http:
            status, body, _ = await call(http, "POST", "/secrets", {"name": "api", "value": VALUE})
            assert status == 409 and body["error"]["code"] == "secrets_disabled"
            assert body["error"]["message"] == ("secrets cannot be stored: this node has no secret key (set "
                                                "security.secret_key or $SECAUTO_SECRET_KEY)")
            # stored through a node that has the key (same store)
            vault = SecretVault(SecretStore(node.redis, Keys("test-cluster")), SecretCipher(KEY))
            await vault.put("api", VALUE)
            REDACTOR.clear()
            node.system.get("secrets").tell(RefreshSecrets())
            job_id = (await call(http, "POST", "/cluster/jobs", {"playbook": uses(), "max_retries": 0}))[1]["job_id"]
            job = await wait_job(http, job_id)
    finally:
        logger.remove(sink)
    assert job["status"] == "failed"
    assert job["results"][0]["error"] == ("secret 'api' cannot be used: this node has no secret key (set "
                                          "security.secret_key or $SECAUTO_SECRET_KEY)")
    warned = [line for line in lines if "secret(s) are stored" in line]
    assert warned == ["1 secret(s) are stored but this node has no secret key (set security.secret_key or "
                      "$SECAUTO_SECRET_KEY): jobs that use them fail on this node\n"]


async def test_a_secret_stored_under_another_key_fails_with_a_clear_error(scripts: Path) -> None:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="WARNING", format="{message}")
    try:
        async with await start(scripts, KEY) as node, aiohttp.ClientSession(base_url=node.url) as http:
            other = SecretCipher("a-different-secret-key-0123456789abcdef")
            await SecretVault(SecretStore(node.redis, Keys("test-cluster")), other).put("api", VALUE)
            node.system.get("secrets").tell(RefreshSecrets())
            job_id = (await call(http, "POST", "/cluster/jobs", {"playbook": uses(), "max_retries": 0}))[1]["job_id"]
            job = await wait_job(http, job_id)
            await asyncio.sleep(0.1)
    finally:
        logger.remove(sink)
    mine = SecretCipher(KEY).key_id
    assert job["results"][0]["error"] == (f"secret 'api' cannot be decrypted: it was stored under another secret key "
                                          f"(key id {other.key_id}; this node's is {mine})")
    assert [line for line in lines if "cannot be decrypted with this node's secret key" in line] == [
        f"secret(s) api cannot be decrypted with this node's secret key (key id {mine}): they were stored under "
        "another key; jobs that use them fail on this node\n"]


async def test_schedules_naming_an_unknown_secret_are_refused_like_jobs(http: aiohttp.ClientSession) -> None:
    await call(http, "POST", "/secrets", {"name": "api", "value": VALUE})
    status, body, _ = await call(http, "POST", "/schedules",
                                 {"name": "intel", "every": 60, "playbook": uses("{{secrets.nope}}")})
    assert status == 400
    assert body["error"]["message"] == "unknown secret 'nope' (used at $[0].parameters.token)"
    assert body["error"]["details"] == [{"field": "playbook", "message": "unknown secret 'nope'",
                                         "path": "$[0].parameters.token"}]
    assert (await call(http, "GET", "/schedules/intel"))[0] == 404  # nothing stored
    status, body, _ = await call(http, "POST", "/schedules", {"name": "intel", "every": 60, "playbook": uses()})
    assert status == 200
    # a replacement naming an unknown secret changes nothing
    status, body, _ = await call(http, "PUT", "/schedules/intel", {"every": 120, "playbook": uses("{{secrets.gone}}")})
    assert status == 400 and body["error"]["details"][0]["message"] == "unknown secret 'gone'"
    status, body, _ = await call(http, "GET", "/schedules/intel")
    assert body["schedule"]["every"] == 60 and body["schedule"]["playbook"] == uses()


async def test_a_config_schedule_may_name_a_secret_stored_later(scripts: Path, tmp_path: Path) -> None:
    """Config schedules are stored at start even when a secret they use is not stored (yet): the node
    warns, and a job of the schedule fails that step with "unknown secret" until the secret is stored."""
    playbooks = tmp_path / "playbooks"
    playbooks.mkdir()
    (playbooks / "pull_intel.yaml").write_text(
        "name: pull_intel\nsteps:\n  - action: run_script\n    script: echo_token\n"
        "    parameters: {token: '{{secrets.intel_token}}'}\n")
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="WARNING", format="{message}")
    settings = node_settings("solo", security={"secret_key": KEY},
                             engine={"scripts_dir": str(scripts), "playbooks_dir": str(playbooks)},
                             schedules=[{"name": "intel", "cron": "0 3 * * *", "playbook_name": "pull_intel",
                                         "max_retries": 0}])
    try:
        async with running_node(settings) as node, aiohttp.ClientSession(base_url=node.url) as http:
            status, body, _ = await call(http, "GET", "/schedules/intel")
            assert status == 200 and body["schedule"]["managed_by"] == "config"
            job_id = (await call(http, "POST", "/schedules/intel/trigger"))[1]["job_id"]
            failed = await wait_job(http, job_id)
            await call(http, "POST", "/secrets", {"name": "intel_token", "value": VALUE})
            job_id = (await call(http, "POST", "/schedules/intel/trigger"))[1]["job_id"]
            completed = await wait_job(http, job_id)
    finally:
        logger.remove(sink)
    assert failed["status"] == "failed" and failed["results"][0]["error"] == "unknown secret 'intel_token'"
    assert completed["status"] == "completed" and completed["context"]["echoed"] == "***"
    assert [line for line in lines if "uses secrets that are not stored" in line] == [
        "config schedule intel uses secrets that are not stored: intel_token; its jobs fail that step until they "
        "are (POST /secrets)\n"]
