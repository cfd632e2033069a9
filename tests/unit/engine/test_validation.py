"""Validation: typed steps, JSON paths in problems, limits, and never any other exception."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secauto.engine import EngineSettings, Playbook, PlaybookInvalid, Problem, validate_playbook
from secauto.engine.conditions import AllOf, AnyOf, Compare, Var
from tests.support.playbook_cases import MISSING_FIELDS, WRONG_FIELDS, case_ids


def problems(raw: Any, engine: EngineSettings | None = None) -> list[Problem]:
    with pytest.raises(PlaybookInvalid) as info:
        validate_playbook(raw, engine)
    return info.value.problems


def paths(raw: Any) -> list[str]:
    return [p.path for p in problems(raw)]


def test_valid_playbook_is_typed() -> None:
    book = validate_playbook(
        [
            {"action": "run_script", "script": "baseit.py", "parameters": {"target": "192.168.1.1"}},
            {"action": "set", "variables": {"a": 1}, "name": "set a", "retry": {"attempts": 3}, "on_error": "continue"},
            {"action": "if", "condition": ["==", {"var": "a"}, 1], "then": [{"action": "log", "message": "x"}]},
        ]
    )
    assert isinstance(book, Playbook)
    assert book.step_count == 4
    first, second, third = book.steps
    assert (first.action, first.name, first.path) == ("run_script", "run_script baseit.py", "$[0]")
    assert first.fields == {"script": "baseit.py", "parameters": {"target": "192.168.1.1"}}
    assert second.name == "set a" and second.options.retry.attempts == 3 and second.options.on_error == "continue"
    assert third.conditions["condition"] == Compare("==", Var("a"), third.conditions["condition"].right)  # type: ignore[union-attr]
    assert third.children["then"][0].path == "$[2].then[0]"


def test_object_document_with_steps() -> None:
    book = validate_playbook({"name": "x", "description": "d", "steps": [{"action": "log", "message": "m"}]})
    assert book.name == "x" and book.description == "d" and len(book.steps) == 1
    assert paths({"steps": [{"action": "nope"}]}) == ["$.steps[0].action"]
    assert paths({"stepz": []}) == ["$.stepz", "$.steps"]


@pytest.mark.parametrize(("raw", "path", "fragment"), MISSING_FIELDS, ids=case_ids(MISSING_FIELDS))
def test_a_missing_field_is_reported_at_the_field(raw: Any, path: str, fragment: str) -> None:
    found = problems(raw)
    assert any(p.path == path and fragment in p.message for p in found), found


@pytest.mark.parametrize(("raw", "path", "fragment"), WRONG_FIELDS, ids=case_ids(WRONG_FIELDS))
def test_a_wrong_field_is_reported_at_the_field(raw: Any, path: str, fragment: str) -> None:
    found = problems(raw)
    assert any(p.path == path and fragment in p.message for p in found), found


def test_every_wrong_option_is_reported() -> None:
    found = problems([{"action": "set", "variables": {}, "timeout": 0, "retry": {"attempts": 0, "delay": -1},
                       "on_error": "x"}])
    assert sorted(p.path for p in found) == ["$[0].on_error", "$[0].retry.attempts", "$[0].timeout"]


def test_each_unknown_dict_key_is_named_even_when_nested() -> None:
    """msgspec reports a value in a dict as `$[...]`: the path names the key all the same."""
    found = problems([{"action": "http_request", "url": "http://x", "headers": {"A": "1", "B": ["x"], "C": "3"}}])
    assert [p.path for p in found] == ["$[0].headers.B"]


def test_every_problem_is_reported() -> None:
    found = problems([{"action": "nope"}, {"action": "set"}, {"action": "log", "message": "{{}}"}])
    assert [p.path for p in found] == ["$[0].action", "$[1].variables", "$[2].message"]
    assert str(PlaybookInvalid(found)).endswith("(and 2 more problems)")


def test_step_count_limit() -> None:
    engine = EngineSettings(scripts_dir=Path("."), playbooks_dir=Path("."), python=sys.executable, max_steps=3)
    nested = [{"action": "if", "condition": True, "then": [{"action": "log", "message": "a"}] * 3}]
    found = problems(nested, engine)
    assert found[0].message.startswith("too many steps: the limit is 3")
    assert found[0].path == "$[0].then[2]"
    validate_playbook([{"action": "log", "message": "a"}] * 3, engine)


def test_nesting_depth_limit() -> None:
    engine = EngineSettings(scripts_dir=Path("."), playbooks_dir=Path("."), python=sys.executable, max_depth=2)
    step: dict[str, Any] = {"action": "log", "message": "deep"}
    for _ in range(3):
        step = {"action": "if", "condition": True, "then": [step]}
    found = problems([step], engine)
    assert found[0].path == "$[0].then[0].then[0].then"
    assert "nested deeper than 2 levels" in found[0].message


def test_deeply_nested_values_are_problems_not_crashes() -> None:
    value: Any = "x"
    for _ in range(5000):
        value = [value]
    assert problems([{"action": "set", "variables": {"v": value}}])
    condition: Any = True
    for _ in range(5000):
        condition = {"not": condition}
    assert problems([{"action": "set", "variables": {}, "when": condition}])


def test_classic_if_builds_and_or() -> None:
    book = validate_playbook([
        {"if": {"conditions": [True, False], "logic": "or", "true": {"run": "a"},
                "false": [{"run": "b"}, {"run": "c"}]}},
        {"if": {"conditions": [True], "true": {}}},
    ])  # fmt: skip
    first, second = book.steps
    assert isinstance(first.conditions["condition"], AnyOf)
    assert [len(first.children["then"]), len(first.children["else"])] == [1, 2]
    assert first.children["then"][0].path == "$[0].if.true"
    assert first.children["else"][1].path == "$[0].if.false[1]"
    assert isinstance(second.conditions["condition"], AllOf)
    assert second.children["then"] == () and second.children["else"] == ()


def test_classic_run_parameters_and_options() -> None:
    (step,) = validate_playbook(
        [{"run": "enrich", "indicator": "{{a}}", "name": "enrich it", "on_error": "continue"}]
    ).steps
    assert step.action == "run_script"
    assert step.fields == {"script": "enrich", "parameters": {"indicator": "{{a}}"}}
    assert step.name == "enrich it" and step.options.on_error == "continue"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=8,
)
step_keys = st.sampled_from(
    ["action", "script", "parameters", "run", "if", "play", "var", "when", "retry", "timeout", "on_error", "output",
     "name", "then", "else", "condition", "conditions", "logic", "true", "false", "items", "steps", "variables",
     "message", "level", "seconds", "url", "method", "json", "body", "expect_status", "concurrency", "as", "default",
     "strict_templates", "playbook", "headers"]
)  # fmt: skip
action_names = st.sampled_from(
    ["run_script", "set", "log", "sleep", "fail", "play", "if", "foreach", "http_request", "var", "x"]
)
stepish = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | action_names
    | st.sampled_from(["==", "and", "{{a.b}}", "{{", "{{x|1}}", "matches", "(a+)+$"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(step_keys, children, max_size=6),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(json_values, st.lists(stepish, max_size=5), st.dictionaries(st.just("steps"), st.lists(stepish))))
def test_validation_raises_only_playbook_invalid(raw: Any) -> None:
    try:
        validate_playbook(raw)
    except PlaybookInvalid as exc:
        assert exc.problems and all(p.path.startswith("$") for p in exc.problems)
