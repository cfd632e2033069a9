"""Schemathesis against a live `secauto serve` node (standalone, embedded store): no request may get a
5xx, and every response must match the OpenAPI document (status code, content type, headers, body
schema); requests that the document calls invalid must be rejected with a 4xx.

The document is generated in-process (the tests are collected per operation before any node runs)
and checked to be byte for byte what the live node serves at GET /openapi.json.

Bounded: a fixed seed (SCHEMATHESIS_SEED varies it), SCHEMATHESIS_EXAMPLES (25) examples per operation
besides schemathesis' example and coverage cases, no shrinking, short reads of the event stream. Every
operation is exercised, GET /cluster/events included.

Nothing leaves the machine: a webhook URL that the node would accept is replaced by one on a closed
loopback port before the request goes out (deliveries then fail at once), and so is the URL of any
``http_request`` step in a generated playbook.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.config import SchemathesisConfig

from secauto.api.openapi import document_bytes
from secauto.api.routes import route_table
from secauto.api.webhooks import url_problem
from tests.support.nodes import REPO
from tests.support.ports import free_port
from tests.support.procs import SecautoProcess, write_config

KEY = "schemathesis-admin-key-0123456789abcdef"
CLOSED_LOOPBACK_URL = "http://127.0.0.1:9/secauto-test-hook"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "25"))
SEED = int(os.environ.get("SCHEMATHESIS_SEED", "20240115"))

DOCUMENT = document_bytes(route_table(), False)
schema = schemathesis.openapi.from_dict(json.loads(DOCUMENT), config=SchemathesisConfig.from_dict({
    "seed": SEED,
    "headers": {"X-API-Key": KEY},
    "request-timeout": 10,
    "generation": {"max-examples": MAX_EXAMPLES, "no-shrink": True, "database": "none"},
    # An event stream never ends by itself: read each one for a moment only.
    "operations": [{"include-path": "/cluster/events", "request-timeout": 0.3, "max-stream-events": 5}],
    # Invalid data may also be too large a body (e.g. a batch over its maxItems): 413 rejects it too.
    "checks": {"negative_data_rejection": {"expected-statuses": [
        "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5XX"]}},
}))


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One standalone node for every operation's test (started once: they share its state)."""
    workdir = tmp_path_factory.mktemp("schemathesis")
    port = free_port()
    config = write_config(workdir / "node.yaml", {
        "server": {"host": "127.0.0.1", "port": port, "shutdown_grace": 5, "max_body_bytes": 65536},
        "cluster": {"enabled": False, "node_id": "fuzzed", "max_concurrent_jobs": 2, "job_timeout": 5},
        "security": {"api_keys": [{"name": "admin", "key": KEY, "role": "admin"}]},
        "engine": {"scripts_dir": str(REPO / "automations"), "playbooks_dir": str(REPO / "playbooks")},
        "logging": {"level": "warning", "destination": "stdout"},
    })
    url = f"http://127.0.0.1:{port}"
    proc = SecautoProcess(config, log_dir=workdir / "procs", name="fuzzed", url=url)
    proc.start()
    try:
        proc.wait_http_sync(timeout=30)
        with urllib.request.urlopen(f"{url}/openapi.json", timeout=5) as response:
            assert response.read() == DOCUMENT, "the node serves another document than the tests use"
        yield url
    finally:
        proc.cleanup()
        print(proc.log_tail(200))
    assert not proc.alive_pids()


def _keep_on_this_machine(case: Any) -> None:
    """Point URLs that the node would call at a closed loopback port."""
    body = case.body
    if case.method == "POST" and case.path == "/webhooks" and isinstance(body, dict):
        url = body.get("url")
        if isinstance(url, str) and 8 <= len(url) <= 2000 and url_problem(url) is None:
            body["url"] = CLOSED_LOOPBACK_URL


    def scrub(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("action") == "http_request":
                value["url"] = CLOSED_LOOPBACK_URL
            for item in value.values():
                scrub(item)
        elif isinstance(value, list):
            for item in value:
                scrub(item)

    scrub(body)


@schema.parametrize()
def test_the_api_conforms_to_its_openapi_document(case: Any, live_url: str) -> None:
    _keep_on_this_machine(case)
    case.call_and_validate(base_url=live_url, checks=CHECKS)

