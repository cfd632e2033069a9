"""``{{secrets.NAME}}`` in playbooks: where it may appear, what validation collects, how runs resolve it."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from secauto.engine import EngineSettings, PlaybookInvalid, run_playbook, validate_playbook
from secauto.engine.secrets import WHERE_ALLOWED, SecretUnavailable
from secauto.redaction import REDACTOR
from tests.support.web import serving
from tests.unit.engine.conftest import write_script

TOKEN = 'tok-"quoted"\\and-long-9f8e7d'


class FakeVault:
    """A secret source like the node's vault: registers what it reveals for redaction."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.calls: list[list[str]] = []

    async def reveal(self, names: Collection[str]) -> Mapping[str, str]:
        self.calls.append(sorted(names))
        for name in sorted(names):
            if name not in self.values:
                raise SecretUnavailable(f"unknown secret {name!r}")
        REDACTOR.add([self.values[name] for name in names])
        return {name: self.values[name] for name in names}


@pytest.fixture(autouse=True)
def _forget_values() -> Iterator[None]:
    yield
    REDACTOR.clear()


@pytest.fixture
def scripts(scripts_dir: Path) -> Path:
    write_script(scripts_dir, "keeps_quiet", """
        import json, sys
        data = json.load(sys.stdin)
        print(json.dumps({"got_token": data.get("token") == data.get("expected"), "keys": sorted(data)}))
    """)
    write_script(scripts_dir, "cut_stderr", """
        # The value straddles the point where a 2000-character stderr tail would be cut.
        import json, sys
        data = json.load(sys.stdin)
        sys.stderr.write("a" * 5000 + data["token"] + "b" * 1990)
        sys.exit(2)
    """)
    return scripts_dir


def test_references_are_collected_with_their_paths() -> None:
    playbook = validate_playbook([
        {"run": "echo", "token": "{{secrets.api}}", "target": "{{ip}}"},
        {"action": "if", "condition": ["==", 1, 1], "then": [
            {"action": "http_request", "url": "https://x.example/{{secrets.path_part}}",
             "headers": {"Authorization": "Bearer {{secrets.api}}"}, "json": {"k": ["{{secrets.other-one}}"]}}]},
    ])
    assert [(ref.name, ref.path) for ref in playbook.secret_refs] == [
        ("api", "$[0].token"), ("path_part", "$[1].then[0].url"), ("api", "$[1].then[0].headers.Authorization"),
        ("other-one", "$[1].then[0].json.k[0]")]
    assert playbook.steps[0].secrets == ("api",)
    assert playbook.steps[1].secrets == () and playbook.steps[1].children["then"][0].secrets == (
        "path_part", "api", "other-one")


@pytest.mark.parametrize(("step", "path"), [
    ({"action": "set", "variables": {"x": "{{secrets.api}}"}}, "$[0].variables.x"),
    ({"action": "log", "message": "token {{secrets.api}}"}, "$[0].message"),
    ({"action": "fail", "message": "{{secrets.api}}"}, "$[0].message"),
    ({"action": "run_script", "script": "{{secrets.api}}"}, "$[0].script"),
    ({"action": "foreach", "items": "{{secrets.api}}", "steps": []}, "$[0].items"),
    ({"action": "log", "message": "x", "when": "{{secrets.api}}"}, "$[0].when"),
    ({"action": "if", "condition": ["==", "{{secrets.api}}", "x"], "then": []}, "$[0].condition[1]"),
    ({"action": "log", "message": "x", "when": ["==", {"var": "secrets.api"}, "x"]}, "$[0].when[1].var"),
    ({"var": "secrets.api"}, "$[0].var"),
])
def test_secrets_are_refused_where_they_would_leak_or_serve_no_purpose(step: dict[str, Any], path: str) -> None:
    with pytest.raises(PlaybookInvalid) as caught:
        validate_playbook([step])
    assert [(problem.path, problem.message) for problem in caught.value.problems] == [(path, WHERE_ALLOWED)]


@pytest.mark.parametrize(("template", "message"), [
    ("{{secrets}}", "name a secret"),
    ("{{secrets.a.b}}", "bad secret name 'a.b'"),
    ("{{secrets.api|fallback}}", "takes no default"),
])
def test_malformed_references(template: str, message: str) -> None:
    with pytest.raises(PlaybookInvalid, match=message):
        validate_playbook([{"run": "echo", "token": template}])


async def test_a_script_gets_the_value_the_context_never_holds_it(settings: EngineSettings, scripts: Path) -> None:
    vault = FakeVault({"api": TOKEN})
    # A context key named `secrets` neither shadows nor injects anything.
    context = {"secrets": {"api": "injected-from-context"}, "expected": TOKEN}
    result = await run_playbook([{"run": "keeps_quiet", "token": "{{secrets.api}}"},
                                 {"run": "keeps_quiet", "token": "again {{secrets.api}}"}], context, settings,
                                secrets=vault)
    assert result.success, result.error
    assert result.results[0].output["got_token"] is True
    assert TOKEN not in json.dumps(result.context) and result.context["secrets"] == {"api": "injected-from-context"}
    assert vault.calls == [["api"]]  # revealed once per run


async def test_http_request_sends_the_value_in_a_header(settings: EngineSettings) -> None:
    from aiohttp import web

    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/", handler)
    async with serving(app) as base:
        result = await run_playbook([{"action": "http_request", "url": f"{base}/",
                                      "headers": {"Authorization": "Bearer {{secrets.api}}"}}], {}, settings,
                                    secrets=FakeVault({"api": TOKEN}))
    assert result.success, result.error
    assert seen == [f"Bearer {TOKEN}"]


async def test_without_a_source_the_step_says_secrets_need_a_node(settings: EngineSettings) -> None:
    result = await run_playbook([{"run": "echo", "token": "{{secrets.api}}"}], {}, settings)
    assert not result.success
    assert result.results[0].error == ("secret 'api' cannot be used here: secrets are only available to jobs run by "
                                       "a node (POST /secrets)")


async def test_an_unknown_secret_fails_the_step_naming_it(settings: EngineSettings) -> None:
    result = await run_playbook([{"run": "echo", "token": "{{secrets.gone}}"}], {}, settings,
                                secrets=FakeVault({}))
    assert not result.success and result.results[0].error == "unknown secret 'gone'"


async def test_stderr_tail_is_masked_before_it_is_cut(settings: EngineSettings, scripts: Path) -> None:
    result = await run_playbook([{"run": "cut_stderr", "token": "{{secrets.api}}"}], {}, settings,
                                secrets=FakeVault({"api": TOKEN}))
    error = result.results[0].error or ""
    assert "exited with status 2" in error and error.endswith("b" * 1990)
    assert "***" in error
    for start in range(len(TOKEN) - 5):  # not even a piece of it
        assert TOKEN[start:start + 6] not in error
