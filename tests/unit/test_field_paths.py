"""Every playbook problem names the field that is wrong or missing, the same way in ``POST /validate``,
``POST /cluster/jobs`` and ``secauto validate`` (issue 9, point 2; the engine's own test of each path is
in tests/unit/engine/test_validation.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from secauto import cli
from tests.support.nodes import VIEWER_KEY, auth, node_settings, running_node
from tests.support.playbook_cases import ALL_CASES, MISSING_FIELDS, Case, case_ids


def _json_keys(value: Any) -> bool:
    """True when ``value`` survives JSON unchanged (YAML may have non-string keys; JSON cannot)."""
    if isinstance(value, dict):
        return all(isinstance(key, str) and _json_keys(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_json_keys(item) for item in value)
    return True


JSON_CASES = [case for case in ALL_CASES if _json_keys(case[0])]
# POST /cluster/jobs takes a list of steps (a playbook document {"steps": ...} only by name).
LIST_CASES = [case for case in JSON_CASES if isinstance(case[0], list)]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with running_node(node_settings("paths")) as node, aiohttp.ClientSession(base_url=node.url) as session:
        yield session


def _mismatch(case: Case, details: list[dict[str, Any]]) -> str | None:
    raw, path, fragment = case
    if any(detail["path"] == path and fragment in detail["message"] for detail in details):
        return None
    return f"{json.dumps(raw)}: expected {path} ({fragment!r}), got {[(d['path'], d['message']) for d in details]}"


async def test_validate_names_the_field_of_every_problem(http: aiohttp.ClientSession) -> None:
    wrong = []
    for case in JSON_CASES:
        async with http.post("/validate", json={"playbook": case[0]}, headers=auth(VIEWER_KEY)) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["valid"] is False
        if (problem := _mismatch(case, answer["problems"])) is not None:
            wrong.append(problem)
    assert wrong == []


async def test_submit_names_the_field_of_every_problem(http: aiohttp.ClientSession) -> None:
    wrong = []
    for case in LIST_CASES:
        async with http.post("/cluster/jobs", json={"playbook": case[0]}, headers=auth()) as response:
            assert response.status == 400
            error = await response.json()
        details = error["error"]["details"]
        if (problem := _mismatch(case, details)) is not None:
            wrong.append(problem)
        # the field says where in the body: playbook[1].script for the path $[1].script
        assert all(detail["field"] == "playbook" + detail["path"][1:] for detail in details), details
    assert wrong == []
    async with http.get("/cluster", headers=auth()) as response:
        assert (await response.json())["cluster"]["queue_size"] == 0


async def test_batch_and_body_errors_name_their_field(http: aiohttp.ClientSession) -> None:
    steps = [{"action": "log", "message": "x"}]
    bad = [{"action": "log", "message": "x"}, {"action": "run_script"}]
    async with http.post("/cluster/jobs/batch", json={"jobs": [{"playbook": steps}, {"playbook": bad}]},
                         headers=auth()) as response:
        assert response.status == 400
        details = (await response.json())["error"]["details"]
    assert [(d["field"], d["path"]) for d in details] == [("jobs[1].playbook[1].script", "$[1].script")]
    cases = [
        ({"context": {}}, "playbook", "$.playbook"),
        ({"playbook": steps, "playbook_name": "triage_ip"}, "playbook_name", "$.playbook_name"),
        ({"playbook": steps, "delay": 1, "run_at": "2030-01-01T00:00:00Z"}, "run_at", "$.run_at"),
    ]
    for body, field, path in cases:
        async with http.post("/cluster/jobs", json=body, headers=auth()) as response:
            assert response.status == 400
            details = (await response.json())["error"]["details"]
        assert [(d["field"], d["path"]) for d in details] == [(field, path)], body
        async with http.post("/cluster/jobs/batch", json={"jobs": [{"playbook": steps}, body]},
                             headers=auth()) as response:
            details = (await response.json())["error"]["details"]
        assert [(d["field"], d["path"]) for d in details] == [(f"jobs[1].{field}", f"$.jobs[1].{field}")], body


@pytest.mark.parametrize(("raw", "path", "fragment"), MISSING_FIELDS, ids=case_ids(MISSING_FIELDS))
def test_cli_validate_prints_the_path_of_a_missing_field(raw: Any, path: str, fragment: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    playbook = tmp_path / "bad.json"
    playbook.write_text(json.dumps(raw))
    assert cli.main(["validate", str(playbook)]) == cli.EXIT_USAGE
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"{playbook}: {path}: ") and fragment in line for line in lines), lines


def test_cli_validate_prints_the_path_of_every_wrong_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = []
    for index, (raw, path, fragment) in enumerate(JSON_CASES):
        playbook = tmp_path / f"bad{index}.json"
        playbook.write_text(json.dumps(raw))
        assert cli.main(["validate", str(playbook)]) == cli.EXIT_USAGE
        lines = capsys.readouterr().err.splitlines()
        if not any(line.startswith(f"{playbook}: {path}: ") and fragment in line for line in lines):
            wrong.append((path, lines))
    assert wrong == []
