"""Classic SecAuto forms: run, if (classic, v2 and legacy), play, var, mixed with the action form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from secauto.engine import EngineSettings
from tests.unit.engine.conftest import run, write_script

ENRICH = """
    import json, sys
    data = json.load(sys.stdin)
    score = 85 if data["indicator"].endswith("evil.io") else 10
    print(json.dumps({"enrichment": {"score": score, "indicator": data["indicator"]}}))
"""
RECORD = """
    import json, sys
    data = json.load(sys.stdin)
    print(json.dumps({"actions": data.get("actions", []) + [data["what"]]}))
"""

CLASSIC_EXAMPLE: list[dict[str, Any]] = [
    {"run": "enrich_alert", "indicator": "{{alert.sender}}"},
    {"if": {
        "conditions": [[">=", {"var": "enrichment.score"}, 70], ["==", {"var": "alert.type"}, "phishing"]],
        "logic": "and",
        "true": [{"run": "record", "what": "block {{alert.sender}}"}, {"play": "notify_soc"}],
        "false": {"run": "record", "what": "close: score {{enrichment.score}} too low"},
    }},
]  # fmt: skip


def setup_classic(settings: EngineSettings) -> None:
    write_script(settings.scripts_dir, "enrich_alert", ENRICH)
    write_script(settings.scripts_dir, "record", RECORD)
    (settings.playbooks_dir / "notify_soc.json").write_text('[{"run": "record", "what": "notify"}]')


async def test_the_classic_example_blocks(settings: EngineSettings) -> None:
    setup_classic(settings)
    result = await run(CLASSIC_EXAMPLE, settings, {"alert": {"sender": "x@evil.io", "type": "phishing"}})
    assert result.success, result.error
    assert result.context["enrichment"]["score"] == 85
    assert result.context["actions"] == ["block x@evil.io", "notify"]
    assert result.results[1].output["branch"] == "then"


async def test_the_classic_example_closes(settings: EngineSettings) -> None:
    setup_classic(settings)
    result = await run(CLASSIC_EXAMPLE, settings, {"alert": {"sender": "x@good.org", "type": "phishing"}})
    assert result.context["actions"] == ["close: score 10 too low"]
    assert result.results[1].output["branch"] == "else"


async def test_classic_or_logic_and_missing_branch(settings: EngineSettings) -> None:
    playbook = [{"if": {"conditions": [["==", 1, 2], ["==", 2, 2]], "logic": "or",
                        "true": {"action": "set", "variables": {"hit": True}}}},
                {"if": {"conditions": [False], "true": {"action": "fail"}}}]  # fmt: skip
    result = await run(playbook, settings)
    assert result.success and result.context["hit"] is True
    assert result.results[1].output == {"condition": False, "branch": "else", "results": []}


async def test_v2_and_legacy_if(settings: EngineSettings) -> None:
    playbook = [
        {"if": {"condition": ["gt", {"var": "n"}, 1], "then": {"action": "set", "variables": {"v2": "then"}},
                "else": {"action": "set", "variables": {"v2": "else"}}}},
        {"if": [["<", {"var": "n"}, 1], {"action": "set", "variables": {"legacy": "then"}},
                [{"action": "set", "variables": {"legacy": "else"}}]]},
    ]  # fmt: skip
    result = await run(playbook, settings, {"n": 5})
    assert result.context["v2"] == "then" and result.context["legacy"] == "else"


async def test_nested_classic_if(settings: EngineSettings) -> None:
    inner = {"if": {"conditions": [["==", {"var": "b"}, 2]], "true": {"action": "set", "variables": {"deep": True}}}}
    result = await run([{"if": {"conditions": [["==", {"var": "a"}, 1]], "true": inner}}], settings, {"a": 1, "b": 2})
    assert result.context["deep"] is True


async def test_classic_run_parameters_override_the_context(settings: EngineSettings) -> None:
    result = await run([{"run": "echo", "target": "param", "n": "{{n}}"}], settings, {"target": "ctx", "n": 3})
    assert result.context["echo"]["target"] == "param"
    assert result.context["echo"]["n"] == 3
    assert result.context["target"] == "ctx"


async def test_classic_var_step(settings: EngineSettings) -> None:
    result = await run([{"var": "context"}], settings, {"a": 1})
    assert result.results[0].output == {"a": 1}


async def test_forms_mix_with_step_options(settings: EngineSettings, playbooks_dir: Path) -> None:
    (playbooks_dir / "sub.yaml").write_text("- action: set\n  variables: {sub: 1}\n")
    playbook = [
        {"run": "exit_3", "on_error": "continue", "name": "may fail"},
        {"play": "sub", "when": ["==", 1, 1]},
        {"action": "log", "message": "after {{sub}}"},
        {"var": "sub", "output": "copy"},
    ]
    result = await run(playbook, settings)
    assert result.success, result.error
    assert [r.status for r in result.results] == ["failed", "completed", "completed", "completed"]
    assert result.results[0].name == "may fail"
    assert result.context["copy"] == 1
