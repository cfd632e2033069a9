"""Templates: typed full templates, JSON inside text, defaults, strictness, no re-rendering."""

from __future__ import annotations

from typing import Any

import pytest

from secauto.engine import EngineSettings, StepError
from secauto.engine.lookup import MissingVariable, lookup
from secauto.engine.templates import render, render_string, template_problems
from tests.unit.engine.conftest import run

CTX: dict[str, Any] = {
    "alert": {"sender": "x@evil.io", "score": 85, "tags": ["a", "b"], "meta": {"k": None}},
    "hosts": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
    "flag": True,
    "dotted.key": "exact",
    "n": 0,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{alert.score}}", 85),
        ("{{ alert.score }}", 85),
        ("{{alert.tags}}", ["a", "b"]),
        ("{{alert.meta}}", {"k": None}),
        ("{{alert.meta.k}}", None),
        ("{{flag}}", True),
        ("{{hosts.1.ip}}", "10.0.0.2"),
        ("{{hosts.-1.ip}}", "10.0.0.2"),
        ("{{dotted.key}}", "exact"),
        ("{{context}}", CTX),
        ("score={{alert.score}}", "score=85"),
        ("tags={{alert.tags}}", 'tags=["a","b"]'),
        ("meta={{alert.meta}} flag={{flag}} none={{alert.meta.k}}", 'meta={"k":null} flag=true none=null'),
        ("from {{alert.sender}} to {{hosts.0.ip}}", "from x@evil.io to 10.0.0.1"),
        ("{{missing|0}}", 0),
        ("{{missing|[]}}", []),
        ("{{missing|nobody}}", "nobody"),
        ("{{missing|}}", ""),
        ("{{missing|null}}", None),
        ("{{alert.score|0}}", 85),
        ("owner: {{missing|nobody}}", "owner: nobody"),
        ("no templates here", "no templates here"),
        ("{single} braces {{ and unclosed", "{single} braces {{ and unclosed"),
        ("{{n}}", 0),
    ],
)
def test_render_string(text: str, expected: Any) -> None:
    assert render_string(text, CTX) == expected


def test_render_recurses_and_copies() -> None:
    value = {"a": ["{{alert.score}}", {"b": "{{flag}}"}], "{{keys}}": "are not templated", "n": 5}
    assert render(value, CTX) == {"a": [85, {"b": True}], "{{keys}}": "are not templated", "n": 5}
    assert value["a"][0] == "{{alert.score}}"  # the original is untouched


def test_rendered_values_are_not_rendered_again() -> None:
    ctx = {"evil": "{{secret}}", "secret": "s3cr3t"}
    assert render_string("{{evil}}", ctx) == "{{secret}}"
    assert render_string("x {{evil}}", ctx) == "x {{secret}}"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{{nope}}", "unknown variable 'nope' (no 'nope' in the context)"),
        ("hi {{alert.nope}}", "unknown variable 'alert.nope' (no 'nope' in alert)"),
        ("{{hosts.5.ip}}", "index 5 out of range for hosts"),
        ("{{hosts.x}}", "hosts is a list; 'x' is not an index"),
        ("{{alert.score.x}}", "alert.score is number"),
        ("{{alert.meta.k.z}}", "alert.meta.k is null"),
    ],
)
def test_unknown_paths_are_errors_naming_the_path(text: str, fragment: str) -> None:
    with pytest.raises(MissingVariable) as info:
        render_string(text, CTX)
    assert fragment in str(info.value).replace("int", "number")


def test_non_strict_rendering() -> None:
    assert render_string("{{nope}}", CTX, strict=False) is None
    assert render_string("a {{nope}} b {{flag}}", CTX, strict=False) == "a {{nope}} b true"


def test_lookup_rules() -> None:
    assert lookup({"a.b": 1, "a": {"b": 2}}, "a.b") == 1  # exact key first
    assert lookup({"context": 5}, "context") == 5
    with pytest.raises(MissingVariable):
        lookup({"a": [1]}, "a.1")


def test_template_problems() -> None:
    assert [p.path for p in template_problems({"a": ["{{ok}}", "{{}}", "{{a..b}}"]}, "$[0].x")] == [
        "$[0].x.a[1]",
        "$[0].x.a[2]",
    ]


async def test_missing_variable_fails_the_step(settings: EngineSettings) -> None:
    result = await run([{"action": "log", "message": "hello {{user.name}}"}], settings)
    assert not result.success
    assert result.results[0].status == "failed"
    assert "unknown variable 'user.name'" in (result.results[0].error or "")


async def test_strict_templates_false_opts_out(settings: EngineSettings) -> None:
    result = await run([{"action": "log", "message": "hello {{user.name}}", "strict_templates": False}], settings)
    assert result.success
    assert result.results[0].output == {"message": "hello {{user.name}}"}


async def test_full_template_keeps_type_through_a_step(settings: EngineSettings) -> None:
    result = await run(
        [{"action": "set", "variables": {"copy": "{{alert}}", "n": "{{alert.score}}", "s": "{{alert.score}}!"}}],
        settings,
        CTX,
    )
    assert result.context["copy"] == CTX["alert"]
    assert result.context["n"] == 85
    assert result.context["s"] == "85!"


async def test_typed_field_checked_after_rendering(settings: EngineSettings) -> None:
    result = await run([{"action": "sleep", "seconds": "{{alert.sender}}"}], settings, CTX)
    assert not result.success
    assert "seconds: Expected `float`, got `str`" in (result.error or "")


def test_step_error_is_the_base() -> None:
    assert issubclass(MissingVariable, StepError)
