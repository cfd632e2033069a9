"""Conditions: operators, map form, and/or/not, var paths, type rules and the bounded `matches`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from secauto.engine import StepError, safe_regex
from secauto.engine.conditions import ConditionInvalid, evaluate, holds, parse_condition, truthy

CTX: dict[str, Any] = {
    "score": 85,
    "ratio": 0.5,
    "type": "phishing",
    "sender": "x@evil.io",
    "tags": ["a", "b", 3],
    "alert": {"hosts": [{"ip": "10.0.0.1"}, {"ip": "8.8.8.8"}], "meta": {"k": 1}},
    "none": None,
    "yes": True,
    "zero": 0,
}


async def check(raw: Any, ctx: dict[str, Any] | None = None, *, strict: bool = True) -> bool:
    return await holds(parse_condition(raw, "$"), CTX if ctx is None else ctx, strict=strict)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (["==", {"var": "score"}, 85], True),
        (["==", {"var": "score"}, 85.0], True),
        (["eq", {"var": "type"}, "phishing"], True),
        (["!=", {"var": "type"}, "phishing"], False),
        (["ne", "5", 5], True),
        (["==", "5", 5], False),
        (["==", True, 1], False),
        (["==", {"var": "tags"}, ["a", "b", 3]], True),
        (["==", {"var": "alert.meta"}, {"k": 1}], True),
        (["==", {"var": "none"}, None], True),
        ([">", {"var": "score"}, 70], True),
        (["gt", {"var": "score"}, 85], False),
        ([">=", {"var": "score"}, 85], True),
        (["gte", 1, 2], False),
        (["<", {"var": "ratio"}, 1], True),
        (["lt", 2, 1], False),
        (["<=", 1, 1], True),
        (["lte", 2, 1], False),
        (["contains", {"var": "sender"}, "evil"], True),
        (["contains", {"var": "tags"}, 3], True),
        (["contains", {"var": "tags"}, "c"], False),
        (["contains", {"var": "alert"}, "hosts"], True),
        (["in", "b", {"var": "tags"}], True),
        (["in", "evil", "x@evil.io"], True),
        (["in", "{{type}}", ["phishing", "malware"]], True),
        (["matches", {"var": "sender"}, "@evil\\.io$"], True),
        (["matches", "{{alert.hosts.1.ip}}", "^10\\."], False),
        (["==", {"var": "alert.hosts.1.ip"}, "8.8.8.8"], True),
        (["==", "{{alert.hosts.0.ip}}", "10.0.0.1"], True),
        ({"eq": [{"var": "score"}, 85]}, True),
        ({"gt": [{"var": "score"}, 90]}, False),
        ({"==": [1, 1]}, True),
        ({"contains": [{"var": "tags"}, "a"]}, True),
        ({"matches": ["abc", "b"]}, True),
        ({"and": [["==", 1, 1], [">", 2, 1]]}, True),
        ({"and": [["==", 1, 1], [">", 1, 2]]}, False),
        ({"and": []}, True),
        ({"or": [["==", 1, 2], ["==", 2, 2]]}, True),
        ({"or": []}, False),
        ({"not": ["==", 1, 2]}, True),
        ({"not": {"var": "yes"}}, False),
        ({"and": [{"or": [False, {"var": "yes"}]}, {"not": {"var": "zero"}}]}, True),
        (["==", ["==", 1, 1], True], True),
        (["==", [{"var": "score"}, "x"], [85, "x"]], True),
        (["==", {"a": "{{score}}"}, {"a": 85}], True),
        ({"var": "yes"}, True),
        ({"var": "zero"}, False),
        ({"var": "nope", "default": 1}, True),
        ("{{yes}}", True),
        ("{{none}}", False),
        (True, True),
        (None, False),
        ("", False),
        ("text", True),
        ([], False),
    ],
)
async def test_conditions(raw: Any, expected: bool) -> None:
    assert await check(raw) is expected


def test_truthiness() -> None:
    assert [truthy(v) for v in (None, False, "", 0, 0.0, [], {})] == [False] * 7
    assert [truthy(v) for v in (True, "0", 1, -1, [0], {"a": None})] == [True] * 6


async def test_short_circuit_skips_errors() -> None:
    # The right side would fail (ordering on a string) but is never evaluated.
    assert await check({"or": [True, [">", "a", 1]]}) is True
    assert await check({"and": [False, {"var": "missing"}]}) is False


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ([">", {"var": "type"}, 1], "'>' compares numbers, got string and number"),
        (["<", {"var": "none"}, 1], "'<' compares numbers, got null and number"),
        ([">=", True, 1], "got boolean and number"),
        (["contains", 5, 1], "'contains' needs a string, list or object to look in, got number"),
        (["contains", "abc", 1], "cannot look for a number in a string"),
        (["matches", 5, "x"], "'matches' needs a string and a pattern"),
        (["==", {"var": "alert.nope"}, 1], "unknown variable 'alert.nope'"),
        ("{{nope}}", "unknown variable 'nope'"),
    ],
)
async def test_errors_are_step_errors(raw: Any, fragment: str) -> None:
    with pytest.raises(StepError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        await check(raw)


async def test_missing_variables_when_not_strict() -> None:
    assert await check(["==", {"var": "nope"}, None], strict=False) is True
    assert await check("{{nope}}", strict=False) is False


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"bogus": 1}, "$.bogus"),
        (["===", 1, 1], "$[0]"),
        (["!==", 1, 1], "$[0]"),
        ({"and": "x"}, "$.and"),
        ({"eq": [1]}, "$.eq[1]"),
        ({"eq": [1, 2, 3]}, "$.eq[2]"),
        ({"eq": 1}, "$.eq"),
        (["==", 1], "$[2]"),
        (["==", 1, 2, 3], "$[3]"),
        ({"var": 1}, "$.var"),
        ({"var": "a", "value": 1}, "$.value"),
        ({1: True}, "$[\"1\"]"),
        ({"or": [True, ["matches", "x", "x" * 600]]}, "$.or[1][2]"),
    ],
)
def test_parse_problems(raw: Any, path: str) -> None:
    with pytest.raises(ConditionInvalid) as info:
        parse_condition(raw, "$")
    assert info.value.problems[0].path == path


async def test_evaluate_returns_values() -> None:
    assert await evaluate(parse_condition(["==", 1, 1], "$"), {}) is True
    assert await evaluate(parse_condition({"var": "score"}, "$"), CTX) == 85


# ---------------------------------------------------------------- bounded regular expressions


def test_pattern_limits() -> None:
    assert safe_regex.pattern_problem("x" * (safe_regex.MAX_PATTERN + 1)) is not None
    assert "bad pattern" in (safe_regex.pattern_problem("(") or "")
    assert "backreferences" in (safe_regex.pattern_problem(r"(a)\1") or "")
    assert safe_regex.pattern_problem(r"^\d{1,3}(\.\d{1,3}){3}$") is None


def test_cost_estimate() -> None:
    assert safe_regex.estimate_cost(r"^\d{1,3}(\.\d{1,3}){3}$", 15) < 10_000
    assert safe_regex.estimate_cost(r"(a+)+$", 30) >= 1e30
    assert safe_regex.estimate_cost(r"(a|aa)*b", 40) > safe_regex.INLINE_BUDGET


async def test_input_size_limit() -> None:
    with pytest.raises(StepError, match="input longer than"):
        await safe_regex.search("a", "a" * (safe_regex.MAX_INPUT + 1))


async def test_catastrophic_pattern_cannot_stall_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safe_regex, "MATCH_TIMEOUT", 0.5)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    beat = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        with pytest.raises(StepError, match="too costly"):
            await safe_regex.search(r"(a+)+$", "a" * 40 + "b")
    finally:
        beat.cancel()
    elapsed = time.monotonic() - started
    assert elapsed < 3
    assert ticks >= 5  # the event loop kept running while the pattern was being tried


async def test_costly_but_finite_pattern_runs_isolated() -> None:
    text = "x" * 3000 + "foo"
    assert safe_regex.estimate_cost(r".*foo", len(text)) > safe_regex.INLINE_BUDGET
    assert await safe_regex.search(r".*foo", text) is True
    assert await safe_regex.search(r".*bar", text) is False
