"""Step options (name, when, timeout, retry, on_error, output) and the run-level rules and limits."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from secauto.engine import EngineSettings, PlaybookInvalid, run_playbook, validate_playbook
from secauto.engine.results import StepResult
from tests.unit.engine.conftest import run


def limited(settings: EngineSettings, **changes: Any) -> EngineSettings:
    values = {"scripts_dir": settings.scripts_dir, "playbooks_dir": settings.playbooks_dir, "python": sys.executable}
    return EngineSettings(**{**values, **changes})


async def test_result_records(settings: EngineSettings) -> None:
    result = await run([{"action": "log", "message": "x", "name": "say x"}], settings)
    (step,) = result.results
    assert isinstance(step, StepResult)
    assert (step.name, step.action, step.status, step.error) == ("say x", "log", "completed", None)
    assert step.started_at.endswith("Z") and "T" in step.started_at
    assert step.duration_ms >= 0


async def test_when_skips(settings: EngineSettings) -> None:
    result = await run(
        [{"action": "set", "variables": {"a": 1}, "when": ["==", {"var": "go"}, True]},
         {"action": "set", "variables": {"b": 1}, "when": {"var": "go"}}],
        settings,
        {"go": False},
    )  # fmt: skip
    assert result.success
    assert [r.status for r in result.results] == ["skipped", "skipped"]
    assert "a" not in result.context and "b" not in result.context


async def test_when_error_fails_the_step(settings: EngineSettings) -> None:
    result = await run([{"action": "log", "message": "x", "when": [">", "{{name}}", 1]}], settings, {"name": "a"})
    assert not result.success
    assert result.results[0].error == "when: '>' compares numbers, got string and number"


async def test_when_sees_earlier_steps(settings: EngineSettings) -> None:
    result = await run(
        [{"run": "echo"}, {"action": "set", "variables": {"ok": True}, "when": ["==", {"var": "echo.k"}, 1]}],
        settings,
        {"k": 1},
    )
    assert result.context["ok"] is True


async def test_timeout_on_any_action(settings: EngineSettings) -> None:
    started = time.monotonic()
    result = await run([{"action": "sleep", "seconds": 30, "timeout": 0.2}], settings)
    assert time.monotonic() - started < 2
    assert not result.success and result.results[0].error == "timed out after 0.2s"


async def test_retry_until_success(settings: EngineSettings, tmp_path: Path) -> None:
    state = tmp_path / "count"
    result = await run(
        [
            {
                "run": "counter",
                "state": str(state),
                "succeed_on": 3,
                "retry": {"attempts": 3, "delay": 0.05, "backoff": 2},
            }
        ],
        settings,
    )
    assert result.success, result.error
    assert result.results[0].output == {"attempts": 3}
    assert result.results[0].duration_ms >= 150  # 0.05 + 0.1 of delays


async def test_retry_gives_up_after_attempts(settings: EngineSettings, tmp_path: Path) -> None:
    state = tmp_path / "count"
    result = await run([{"run": "counter", "state": str(state), "succeed_on": 5, "retry": {"attempts": 2}}], settings)
    assert not result.success
    assert state.read_text() == "2"
    assert "attempt 2 fails" in (result.error or "")


async def test_retry_happens_before_on_error(settings: EngineSettings, tmp_path: Path) -> None:
    state = tmp_path / "count"
    result = await run(
        [{"run": "counter", "state": str(state), "succeed_on": 9, "retry": {"attempts": 3}, "on_error": "continue"},
         {"action": "set", "variables": {"after": True}}],
        settings,
    )  # fmt: skip
    assert state.read_text() == "3"
    assert result.success and result.context["after"] is True
    assert [r.status for r in result.results] == ["failed", "completed"]


async def test_retry_applies_to_timeouts(settings: EngineSettings) -> None:
    started = time.monotonic()
    result = await run([{"action": "sleep", "seconds": 5, "timeout": 0.1, "retry": {"attempts": 3}}], settings)
    assert not result.success and 0.3 <= time.monotonic() - started < 2


async def test_on_error_continue_records_and_goes_on(settings: EngineSettings) -> None:
    result = await run([{"run": "exit_3", "on_error": "continue"}, {"action": "set", "variables": {"x": 1}}], settings)
    assert result.success and result.error is None
    assert [r.status for r in result.results] == ["failed", "completed"]
    assert "exited with status 3" in (result.results[0].error or "")


async def test_on_error_fail_is_the_default(settings: EngineSettings) -> None:
    result = await run([{"run": "exit_3"}, {"action": "set", "variables": {"x": 1}}], settings)
    assert not result.success and len(result.results) == 1 and "x" not in result.context
    assert (result.error or "").startswith("step $[0] 'run_script exit_3' failed: script 'exit_3' exited with status 3")


async def test_output_stores_the_result(settings: EngineSettings) -> None:
    result = await run([{"action": "log", "message": "hi", "output": "said"},
                        {"action": "log", "message": "{{said.message}} again"}], settings)  # fmt: skip
    assert result.context["said"] == {"message": "hi"}
    assert result.results[1].output == {"message": "hi again"}


async def test_failed_step_does_not_write_output(settings: EngineSettings) -> None:
    result = await run([{"run": "exit_3", "output": "out", "on_error": "continue"}], settings)
    assert "out" not in result.context


async def test_validation_happens_before_anything_runs(settings: EngineSettings, tmp_path: Path) -> None:
    state = tmp_path / "count"
    with pytest.raises(PlaybookInvalid) as info:
        await run([{"run": "counter", "state": str(state), "succeed_on": 1}, {"action": "nope"}], settings)
    assert info.value.problems[0].path == "$[1].action"
    assert not state.exists()


async def test_a_validated_playbook_can_be_run(settings: EngineSettings) -> None:
    book = validate_playbook([{"action": "set", "variables": {"a": 1}}])
    result = await run_playbook(book, {}, settings)
    assert result.context == {"a": 1}


@pytest.mark.parametrize("context", [[], "x", {"bad": object()}])
async def test_bad_contexts_are_invalid(settings: EngineSettings, context: Any) -> None:
    with pytest.raises(PlaybookInvalid) as info:
        await run_playbook([], context, settings)
    assert info.value.problems[0].path == "context"


async def test_context_size_limit(settings: EngineSettings) -> None:
    small = limited(settings, max_context_bytes=2000)
    with pytest.raises(PlaybookInvalid, match="over the limit of 2000"):
        await run_playbook([], {"blob": "x" * 3000}, small)
    result = await run_playbook(
        [{"action": "set", "variables": {"blob": "{{seed}}{{seed}}{{seed}}"}, "on_error": "continue"},
         {"action": "set", "variables": {"after": 1}}],
        {"seed": "y" * 900},
        small,
    )  # fmt: skip
    assert not result.success  # a fatal limit: on_error does not apply
    assert "the context grew to" in (result.error or "") and "over the limit of 2000" in (result.error or "")


async def test_executed_steps_budget(settings: EngineSettings) -> None:
    small = limited(settings, max_executed_steps=10)
    result = await run_playbook(
        [{"action": "foreach", "items": list(range(20)), "steps": [{"action": "log", "message": "{{item}}"}]}],
        {},
        small,
    )
    assert not result.success and "more than 10 steps executed" in (result.error or "")


async def test_unexpected_errors_become_failed_steps(settings: EngineSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    from secauto.engine import runner
    from secauto.engine.actions import ActionSpec, get_action

    async def broken(call: Any) -> None:
        raise KeyError("boom")

    original = get_action("set")
    assert original is not None
    patched = ActionSpec(name="set", fields=original.fields, run=broken)
    monkeypatch.setattr(runner, "get_action", lambda name: patched if name == "set" else get_action(name))
    result = await run([{"action": "set", "variables": {}}], settings)
    assert not result.success
    assert result.results[0].error == "internal error: KeyError: 'boom'"
