"""Every action: set, log, sleep, fail, play, if, foreach, var, run_script (http_request: test_http.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from secauto.engine import EngineSettings, run_playbook
from secauto.engine.actions import registry
from tests.unit.engine.conftest import run


def test_registry_finds_every_action() -> None:
    assert set(registry()) == {"run_script", "http_request", "set", "log", "sleep", "fail", "play", "if", "foreach",
                               "var"}  # fmt: skip


async def test_set_merges_variables(settings: EngineSettings) -> None:
    result = await run([{"action": "set", "variables": {"a": 1, "b": {"c": [1, 2]}}}], settings, {"a": 0, "z": 9})
    assert result.success
    assert result.context == {"a": 1, "b": {"c": [1, 2]}, "z": 9}
    assert result.results[0].output == {"a": 1, "b": {"c": [1, 2]}}


async def test_log_goes_through_loguru_with_component_and_job(settings: EngineSettings) -> None:
    records: list[dict[str, Any]] = []
    sink = logger.add(lambda m: records.append(m.record), level="DEBUG")
    try:
        result = await run([{"action": "log", "message": "alert {{a}}", "level": "warning"}], settings, {"a": [1]})
    finally:
        logger.remove(sink)
    assert result.results[0].output == {"message": "alert [1]"}
    (record,) = [r for r in records if r["message"] == "alert [1]"]
    assert record["level"].name == "WARNING"
    assert record["extra"]["component"] == "engine"
    assert record["extra"]["job_id"] == "test-job"


async def test_log_message_may_be_any_value(settings: EngineSettings) -> None:
    result = await run([{"action": "log", "message": "{{a}}"}], settings, {"a": {"x": 1}})
    assert result.results[0].output == {"message": '{"x":1}'}


async def test_sleep(settings: EngineSettings) -> None:
    started = time.monotonic()
    result = await run([{"action": "sleep", "seconds": 0.1}], settings)
    assert result.success and result.results[0].output == {}
    assert time.monotonic() - started >= 0.1


async def test_sleep_is_cancellable(settings: EngineSettings) -> None:
    task = asyncio.create_task(run([{"action": "sleep", "seconds": 60}], settings))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_fail_stops_the_playbook(settings: EngineSettings) -> None:
    result = await run(
        [{"action": "fail", "message": "score {{s}} is too high"}, {"action": "set", "variables": {"after": 1}}],
        settings,
        {"s": 99},
    )
    assert not result.success
    assert result.error == "step $[0] 'fail' failed: score 99 is too high"
    assert [r.status for r in result.results] == ["failed"]
    assert "after" not in result.context


async def test_fail_ignores_retry_and_on_error(settings: EngineSettings) -> None:
    result = await run(
        [{"action": "fail", "message": "stop", "on_error": "continue", "retry": {"attempts": 3}},
         {"action": "set", "variables": {"after": 1}}],
        settings,
    )  # fmt: skip
    assert not result.success and "after" not in result.context


async def test_fail_inside_a_branch_fails_the_playbook(settings: EngineSettings) -> None:
    fail = {"action": "fail", "message": "x"}
    playbook = [
        {"action": "if", "condition": True, "on_error": "continue", "then": [fail]},
        {"action": "set", "variables": {"after": 1}},
    ]
    result = await run(playbook, settings)
    assert not result.success and "after" not in result.context


# ---------------------------------------------------------------- if


async def test_if_then_and_else(settings: EngineSettings) -> None:
    playbook = [
        {"action": "if", "condition": [">", {"var": "score"}, 50],
         "then": [{"action": "set", "variables": {"verdict": "bad"}}],
         "else": [{"action": "set", "variables": {"verdict": "good"}}]},
    ]  # fmt: skip
    high = await run(playbook, settings, {"score": 80})
    low = await run(playbook, settings, {"score": 10})
    assert high.context["verdict"] == "bad" and low.context["verdict"] == "good"
    output = high.results[0].output
    assert output["condition"] is True and output["branch"] == "then"
    assert output["results"][0]["action"] == "set" and output["results"][0]["status"] == "completed"
    assert low.results[0].output["branch"] == "else"


async def test_if_without_else(settings: EngineSettings) -> None:
    result = await run([{"action": "if", "condition": False, "then": [{"action": "fail"}]}], settings)
    assert result.success
    assert result.results[0].output == {"condition": False, "branch": None, "results": []}


async def test_if_condition_error_fails_the_step(settings: EngineSettings) -> None:
    result = await run([{"action": "if", "condition": [">", "{{name}}", 1], "then": []}], settings, {"name": "x"})
    assert not result.success and "'>' compares numbers" in (result.error or "")


async def test_if_nested_failure_carries_results(settings: EngineSettings) -> None:
    result = await run(
        [{"action": "if", "condition": True, "then": [{"action": "set", "variables": {"a": 1}}, {"run": "exit_3"}]}],
        settings,
    )
    assert not result.success
    step = result.results[0]
    assert step.status == "failed"
    assert [r["status"] for r in step.output] == ["completed", "failed"]
    assert "step $[0].then[1] 'run_script exit_3' failed: script 'exit_3' exited with status 3" in (step.error or "")


# ---------------------------------------------------------------- foreach


async def test_foreach_runs_steps_per_item(settings: EngineSettings) -> None:
    playbook = [
        {"action": "foreach", "items": "{{hosts}}", "output": "seen",
         "steps": [{"action": "set", "variables": {"last": "{{index}}:{{item.ip}}"}},
                   {"action": "log", "message": "{{last}}"}]},
    ]  # fmt: skip
    result = await run(playbook, settings, {"hosts": [{"ip": "a"}, {"ip": "b"}]})
    assert result.success, result.error
    entries = result.results[0].output
    assert [e["index"] for e in entries] == [0, 1]
    assert [e["results"][1]["output"]["message"] for e in entries] == ["0:a", "1:b"]
    assert result.context["seen"] == entries
    assert "last" not in result.context and "item" not in result.context  # iterations are isolated


async def test_foreach_empty_list(settings: EngineSettings) -> None:
    result = await run([{"action": "foreach", "items": [], "steps": [{"action": "fail"}]}], settings)
    assert result.success and result.results[0].output == []


async def test_foreach_custom_variable_name(settings: EngineSettings) -> None:
    playbook = [{"action": "foreach", "items": [1, 2], "as": "n",
                 "steps": [{"action": "log", "message": "{{n}}/{{index}}"}]}]  # fmt: skip
    result = await run(playbook, settings)
    assert [e["results"][0]["output"]["message"] for e in result.results[0].output] == ["1/0", "2/1"]


async def test_foreach_items_must_be_a_list(settings: EngineSettings) -> None:
    result = await run([{"action": "foreach", "items": "{{x}}", "steps": []}], settings, {"x": "abc"})
    assert not result.success and "items: Expected `array`" in (result.error or "")


async def test_foreach_concurrency(settings: EngineSettings) -> None:
    playbook = [{"action": "foreach", "items": list(range(6)), "concurrency": 3,
                 "steps": [{"action": "sleep", "seconds": 0.2}]}]  # fmt: skip
    started = time.monotonic()
    result = await run(playbook, settings)
    elapsed = time.monotonic() - started
    assert result.success
    assert 0.35 < elapsed < 1.0  # two rounds of three, not six in a row
    assert [e["index"] for e in result.results[0].output] == list(range(6))


async def test_foreach_scripts_run_concurrently(settings: EngineSettings) -> None:
    playbook = [{"action": "foreach", "items": ["a", "b", "c", "d"], "concurrency": 4,
                 "steps": [{"run": "echo", "value": "{{item}}"}]}]  # fmt: skip
    result = await run(playbook, settings)
    assert [e["results"][0]["output"]["echo"]["value"] for e in result.results[0].output] == ["a", "b", "c", "d"]


async def test_foreach_stops_at_the_first_failure(settings: EngineSettings) -> None:
    check = {"action": "if", "condition": ["==", "{{item}}", 2], "then": [{"run": "exit_3"}]}
    playbook = [{"action": "foreach", "items": [1, 2, 3], "steps": [check]}]
    result = await run(playbook, settings)
    assert not result.success
    step = result.results[0]
    assert step.error is not None and step.error.startswith("item 1: step $[0].steps[0] 'if' failed")
    assert [(e["index"], e["success"]) for e in step.output] == [(0, True), (1, False)]


async def test_foreach_with_on_error_continue_goes_on(settings: EngineSettings) -> None:
    playbook = [{"action": "foreach", "items": [1, 2], "steps": [{"run": "exit_3", "on_error": "continue"}]},
                {"action": "set", "variables": {"after": True}}]  # fmt: skip
    result = await run(playbook, settings)
    assert result.success and result.context["after"] is True
    assert all(e["success"] for e in result.results[0].output)
    assert result.results[0].output[0]["results"][0]["status"] == "failed"


async def test_foreach_cancellation_cancels_iterations(settings: EngineSettings) -> None:
    playbook = [
        {"action": "foreach", "items": [1, 2, 3], "concurrency": 3, "steps": [{"action": "sleep", "seconds": 60}]}
    ]
    task = asyncio.create_task(run(playbook, settings))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ---------------------------------------------------------------- play


async def test_play_runs_a_named_playbook_on_the_same_context(settings: EngineSettings, playbooks_dir: Path) -> None:
    (playbooks_dir / "sub.yaml").write_text("- action: set\n  variables: {from_sub: '{{x}}'}\n")
    (playbooks_dir / "team").mkdir()
    (playbooks_dir / "team" / "other.json").write_text('[{"action": "set", "variables": {"other": 1}}]')
    result = await run([{"action": "play", "playbook": "sub"}, {"play": "team/other"}], settings, {"x": 5})
    assert result.success, result.error
    assert result.context["from_sub"] == 5 and result.context["other"] == 1
    assert result.results[0].name == "play sub"
    assert result.results[0].output[0]["output"] == {"from_sub": 5}


async def test_play_missing_or_invalid(settings: EngineSettings, playbooks_dir: Path) -> None:
    (playbooks_dir / "broken.yaml").write_text("- action: nope\n")
    missing = await run([{"action": "play", "playbook": "ghost"}], settings)
    assert "no playbook named 'ghost'" in (missing.error or "")
    broken = await run([{"action": "play", "playbook": "broken"}], settings)
    assert "playbook 'broken': $[0].action: unknown action 'nope'" in (broken.error or "")
    escape = await run([{"action": "play", "playbook": "{{p}}"}], settings, {"p": "../x"})
    assert "bad playbook name" in (escape.error or "")


async def test_play_recursion_is_a_clear_error(settings: EngineSettings, playbooks_dir: Path) -> None:
    (playbooks_dir / "loop_a.yaml").write_text("- play: loop_b\n")
    (playbooks_dir / "loop_b.yaml").write_text("- play: loop_a\n")
    result = await run([{"play": "loop_a", "on_error": "continue"}, {"action": "set", "variables": {"x": 1}}], settings)
    assert not result.success  # the limit is fatal: on_error does not apply
    assert "play depth limit 16 reached (loop_a -> loop_b -> loop_a" in (result.error or "")
    assert "recursive playbooks?" in (result.error or "")


async def test_play_failure_names_the_sub_playbook(settings: EngineSettings, playbooks_dir: Path) -> None:
    (playbooks_dir / "bad.yaml").write_text("- run: exit_3\n")
    result = await run([{"play": "bad"}], settings)
    assert "step $[0] 'run_script exit_3' in playbook 'bad' failed" in (result.error or "")


# ---------------------------------------------------------------- var


async def test_var_step(settings: EngineSettings) -> None:
    result = await run(
        [{"var": "a.b.1"}, {"var": "nope", "default": "d"}, {"action": "var", "path": "a", "output": "copy"}],
        settings,
        {"a": {"b": [1, 2]}},
    )
    assert [r.output for r in result.results] == [2, "d", {"b": [1, 2]}]
    assert result.context["copy"] == {"b": [1, 2]}
    missing = await run([{"var": "nope"}], settings)
    assert "unknown variable 'nope'" in (missing.error or "")
    lenient = await run([{"var": "nope", "strict_templates": False}], settings)
    assert lenient.success and lenient.results[0].output is None


# ---------------------------------------------------------------- contexts


async def test_each_run_gets_its_own_context(settings: EngineSettings) -> None:
    shared: dict[str, Any] = {"n": {"deep": 1}}
    playbook = [{"action": "set", "variables": {"n": "{{who}}"}}, {"action": "sleep", "seconds": 0.05},
                {"action": "var", "path": "n"}]  # fmt: skip
    first, second = await asyncio.gather(
        run_playbook(playbook, {**shared, "who": "first"}, settings),
        run_playbook(playbook, {**shared, "who": "second"}, settings),
    )
    assert first.results[2].output == "first" and second.results[2].output == "second"
    assert shared == {"n": {"deep": 1}}


async def test_caller_context_is_never_mutated(settings: EngineSettings) -> None:
    context: dict[str, Any] = {"incident": {"id": 1}}
    result = await run([{"run": "incident"}], settings, context)
    assert result.context["incident"]["severity"] == "high"
    assert context == {"incident": {"id": 1}}
