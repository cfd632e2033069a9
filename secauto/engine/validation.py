"""Validation: a raw playbook (parsed JSON or YAML) becomes a typed :class:`Playbook` or a list of problems.

Accepted documents: a list of steps, or an object ``{"steps": [...], "name": ..., "description": ...}``.
A step is ``{"action": NAME, ...fields, ...options}`` or one of the classic SecAuto forms:

* ``{"run": "script", ...params}``: ``run_script``; every key that is not a step option is a parameter;
* ``{"play": "name"}``: ``play``;
* ``{"var": "a.b"}`` (optionally ``"default"``): ``var`` (the step's result is the value);
* ``{"if": {"conditions": [...], "logic": "and"|"or", "true": ..., "false": ...}}``, the v2 form
  ``{"if": {"condition": c, "then": ..., "else": ...}}`` and the legacy ``{"if": [c, then, else]}``,
  where a branch is a step, a list of steps, or null / ``{}`` (nothing).

Step options (``name``, ``when``, ``timeout``, ``retry``, ``on_error``, ``output``,
``strict_templates``) are allowed on every form. Every problem is collected with the JSON path of the
field that is wrong or missing (``$[1].script``, ``$[0].retry.attempts``, ``$[2].then[0].message``); the
limits (``max_steps`` steps in the document, nested ones included, and ``max_depth`` levels of nested
steps) are problems too. :func:`validate_playbook` raises :class:`PlaybookInvalid` and nothing else.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Literal, get_args, get_origin

import msgspec

from secauto.engine.actions import ActionSpec, get_action, registry
from secauto.engine.conditions import AllOf, AnyOf, ConditionInvalid, Expr, parse_condition
from secauto.engine.errors import PlaybookInvalid, Problem, child_path, short
from secauto.engine.model import OPTION_KEYS, Playbook, SecretRef, Step, StepOptions
from secauto.engine.secrets import WHERE_ALLOWED
from secauto.engine.settings import EngineSettings
from secauto.engine.templates import is_templated, secret_refs, template_problems
from secauto.engine.type_problems import type_problem

CLASSIC_KEYS = ("run", "play", "if", "var")


class _Limits(msgspec.Struct, frozen=True):
    max_steps: int = 1000
    max_depth: int = 16


class _Raw(msgspec.Struct, kw_only=True):
    """A step brought to one shape, before typing."""

    action: str
    fields: dict[str, Any]
    field_paths: dict[str, str]
    options: dict[str, Any]
    when: Any = msgspec.UNSET
    conditions: dict[str, Expr] = {}
    children: dict[str, list[tuple[Any, str]]] = {}


class _Validator:
    def __init__(self, limits: _Limits) -> None:
        self.limits = limits
        self.problems: list[Problem] = []
        self.count = 0
        self.too_many = False
        self.secret_refs: list[SecretRef] = []

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    # ------------------------------------------------------------ documents and step lists

    def document(self, raw: Any) -> Playbook:
        name: str | None = None
        description: str | None = None
        steps_raw: Any = raw
        base = "$"
        if isinstance(raw, dict):
            extra = [k for k in raw if k not in ("steps", "name", "description")]
            for key in extra:
                self.add(child_path("$", str(key)), f"unknown key {short(key)}: a playbook is a list of steps, or an "
                                                     "object with 'steps' (and 'name', 'description')")
            if "steps" not in raw:
                self.add("$.steps", "missing: a playbook object needs 'steps' (a list of steps)")
            if "steps" not in raw or extra:
                return Playbook(steps=(), step_count=0)
            name, description = raw.get("name"), raw.get("description")
            if name is not None and not isinstance(name, str):
                self.add("$.name", "must be a string")
            if description is not None and not isinstance(description, str):
                self.add("$.description", "must be a string")
            steps_raw, base = raw["steps"], "$.steps"
        if not isinstance(steps_raw, list):
            self.add(base, f"a playbook is a list of steps, got {_kind(steps_raw)}")
            return Playbook(steps=(), step_count=0)
        steps = self.steps([(item, child_path(base, i)) for i, item in enumerate(steps_raw)], depth=0)
        return Playbook(
            steps=steps,
            step_count=self.count,
            secret_refs=tuple(self.secret_refs),
            name=name if isinstance(name, str) else None,
            description=description if isinstance(description, str) else None,
        )

    def steps(self, items: list[tuple[Any, str]], depth: int) -> tuple[Step, ...]:
        parsed: list[Step] = []
        for raw, path in items:
            if self.too_many:
                break
            self.count += 1
            if self.count > self.limits.max_steps:
                self.too_many = True
                self.add(path, f"too many steps: the limit is {self.limits.max_steps} (nested steps included)")
                break
            step = self.step(raw, path, depth)
            if step is not None:
                parsed.append(step)
        return tuple(parsed)

    # ------------------------------------------------------------ one step

    def step(self, raw: Any, path: str, depth: int) -> Step | None:
        if not isinstance(raw, dict):
            self.add(path, f"a step must be an object, got {_kind(raw)}")
            return None
        bad_keys = [k for k in raw if not isinstance(k, str)]
        if bad_keys:
            self.add(child_path(path, str(bad_keys[0])), f"step keys must be strings, got {bad_keys[0]!r}")
            return None
        shaped = self.shape(raw, path)
        if shaped is None:
            return None
        spec = get_action(shaped.action)
        if spec is None:
            known = ", ".join(sorted(registry()))
            self.add(child_path(path, "action"), f"unknown action {short(shaped.action)} (known: {known})")
            return None
        options = self.options(shaped.options, path)
        when: Expr | None = None
        if shaped.when is not msgspec.UNSET:
            when = self.condition(shaped.when, child_path(path, "when"))
        secrets = self.fields(spec, shaped, path)
        children: dict[str, tuple[Step, ...]] = {}
        for key, items in shaped.children.items():
            if depth + 1 > self.limits.max_depth:
                self.add(child_path(path, key), f"steps nested deeper than {self.limits.max_depth} levels")
                continue
            children[key] = self.steps(items, depth + 1)
        if options is None:
            return None
        return Step(
            action=spec.name,
            path=path,
            name=options.name or _default_name(spec, shaped.fields),
            fields=shaped.fields,
            options=options,
            when=when,
            conditions=shaped.conditions,
            children=children,
            secrets=tuple(dict.fromkeys(secrets)),
        )

    def shape(self, raw: dict[str, Any], path: str) -> _Raw | None:
        if "action" in raw:
            return self.shape_action(raw, path)
        present = [k for k in CLASSIC_KEYS if k in raw]
        if len(present) > 1 and present[0] != "run":
            self.add(child_path(path, present[1]), f"ambiguous step: it has both {present[0]!r} and {present[1]!r}")
            return None
        if not present:
            if "plugin" in raw:
                self.add(child_path(path, "plugin"), "classic plugins are not supported; use run_script")
            else:
                self.add(child_path(path, "action"),
                         "a step needs 'action' (or a classic 'run', 'if', 'play' or 'var')")
            return None
        kind = present[0]
        options = {k: v for k, v in raw.items() if k in OPTION_KEYS and k != "when"}
        when = raw.get("when", msgspec.UNSET)
        if kind == "run":
            params = {k: v for k, v in raw.items() if k != "run" and k not in OPTION_KEYS}
            return _Raw(
                action="run_script",
                fields={"script": raw["run"], "parameters": params},
                field_paths={"script": child_path(path, "run"), "parameters": path},
                options=options,
                when=when,
            )
        extra = [k for k in raw if k != kind and k not in OPTION_KEYS and not (kind == "var" and k == "default")]
        if extra:
            self.add(child_path(path, extra[0]), f"unknown key {short(extra[0])} in a classic {kind!r} step")
            return None
        if kind == "play":
            return _Raw(
                action="play",
                fields={"playbook": raw["play"]},
                field_paths={"playbook": child_path(path, "play")},
                options=options,
                when=when,
            )
        if kind == "var":
            fields = {"path": raw["var"]}
            paths = {"path": child_path(path, "var")}
            if "default" in raw:
                fields["default"] = raw["default"]
                paths["default"] = child_path(path, "default")
            return _Raw(action="var", fields=fields, field_paths=paths, options=options, when=when)
        return self.shape_classic_if(raw["if"], child_path(path, "if"), options, when)

    def shape_action(self, raw: dict[str, Any], path: str) -> _Raw | None:
        action = raw["action"]
        if not isinstance(action, str):
            self.add(child_path(path, "action"), f"must be a string, got {_kind(action)}")
            return None
        spec = get_action(action)
        if spec is None:
            known = ", ".join(sorted(registry()))
            self.add(child_path(path, "action"), f"unknown action {short(action)} (known: {known})")
            return None
        rest = {k: v for k, v in raw.items() if k != "action"}
        shaped = _Raw(
            action=action,
            fields={},
            field_paths={},
            options={k: v for k, v in rest.items() if k in OPTION_KEYS and k != "when"},
            when=rest.get("when", msgspec.UNSET),
        )
        conditions: dict[str, Expr] = {}
        children: dict[str, list[tuple[Any, str]]] = {}
        for key, value in rest.items():
            key_path = child_path(path, key)
            if key in OPTION_KEYS:
                continue
            if key in spec.conditions:
                conditions[key] = self.condition(value, key_path)
            elif key in spec.step_lists:
                if value is None:
                    children[key] = []
                elif not isinstance(value, list):
                    self.add(key_path, f"must be a list of steps, got {_kind(value)}")
                else:
                    children[key] = [(item, child_path(key_path, i)) for i, item in enumerate(value)]
            else:
                shaped.fields[key] = value
                shaped.field_paths[key] = key_path
        for key in spec.required:
            if key not in rest:
                self.add(child_path(path, key), f"missing: action {action!r} needs {key!r}")
        shaped.conditions, shaped.children = conditions, children
        return shaped

    def shape_classic_if(self, body: Any, path: str, options: dict[str, Any], when: Any) -> _Raw | None:
        shaped = _Raw(action="if", fields={}, field_paths={}, options=options, when=when)
        if isinstance(body, list):  # legacy [condition, then, else?]
            if not 2 <= len(body) <= 3:
                self.add(path, "the legacy form is [condition, then] or [condition, then, else]")
                return None
            shaped.conditions = {"condition": self.condition(body[0], child_path(path, 0))}
            shaped.children = {"then": self.branch(body[1], child_path(path, 1))}
            if len(body) == 3:
                shaped.children["else"] = self.branch(body[2], child_path(path, 2))
            return shaped
        if not isinstance(body, dict):
            self.add(path, f"'if' takes an object (conditions/logic/true/false), got {_kind(body)}")
            return None
        allowed: tuple[str, ...]
        classic_only = ("logic", "true", "false")
        classic = "conditions" in body or ("condition" not in body and any(k in body for k in classic_only))
        if classic:
            allowed, then_key, else_key = ("conditions", "logic", "true", "false"), "true", "false"
        else:
            allowed, then_key, else_key = ("condition", "then", "else"), "then", "else"
        extra = [k for k in body if k not in allowed]
        if extra:
            self.add(child_path(path, str(extra[0])), f"unknown key in 'if' (allowed: {', '.join(allowed)})")
            return None
        if "conditions" in body:
            shaped.conditions = {"condition": self.classic_conditions(body, path)}
        elif "condition" in body:
            shaped.conditions = {"condition": self.condition(body["condition"], child_path(path, "condition"))}
        else:  # the key of the form the rest is written in
            self.add(child_path(path, "conditions" if classic else "condition"),
                     "missing: 'if' needs 'conditions' (classic) or 'condition'")
            return None
        shaped.children = {
            "then": self.branch(body.get(then_key), child_path(path, then_key)),
            "else": self.branch(body.get(else_key), child_path(path, else_key)),
        }
        return shaped

    def classic_conditions(self, body: dict[str, Any], path: str) -> Expr:
        logic = body.get("logic", "and")
        if logic not in ("and", "or"):
            self.add(child_path(path, "logic"), f"must be 'and' or 'or', got {logic!r}")
        conds = body["conditions"]
        conds_path = child_path(path, "conditions")
        if not isinstance(conds, list):
            self.add(conds_path, f"must be a list of conditions, got {_kind(conds)}")
            return AllOf(())
        items = tuple(self.condition(c, child_path(conds_path, i)) for i, c in enumerate(conds))
        return AnyOf(items) if logic == "or" else AllOf(items)

    def branch(self, value: Any, path: str) -> list[tuple[Any, str]]:
        """A classic branch: a step, a list of steps, or nothing (null or {})."""
        if value is None or value == {}:
            return []
        if isinstance(value, list):
            return [(item, child_path(path, i)) for i, item in enumerate(value)]
        return [(value, path)]

    # ------------------------------------------------------------ parts

    def condition(self, raw: Any, path: str) -> Expr:
        try:
            return parse_condition(raw, path)
        except ConditionInvalid as exc:
            self.problems.extend(exc.problems)
            return AllOf(())

    def options(self, raw: dict[str, Any], path: str) -> StepOptions | None:
        """The step's options; each wrong one is a problem of its own (msgspec stops at the first)."""
        wrong = False
        for key, value in raw.items():
            try:
                msgspec.convert({key: value}, StepOptions)
            except msgspec.ValidationError as exc:
                wrong = True
                problem = type_problem(exc, {key: value}, StepOptions, path)
                choices = _choices(StepOptions, key) if problem.path == child_path(path, key) else ""
                self.add(problem.path, problem.message + choices)
        return None if wrong else msgspec.convert(raw, StepOptions)

    def fields(self, spec: ActionSpec[Any], shaped: _Raw, path: str) -> list[str]:
        """Check the step's fields; returns the names of the secrets they reference."""
        infos = _field_infos(spec.fields)  # type: ignore[arg-type]
        secrets: list[str] = []
        for key, value in shaped.fields.items():
            key_path = shaped.field_paths.get(key, child_path(path, key))
            info = infos.get(key)
            if info is None:
                allowed = sorted([*infos, *spec.step_lists, *spec.conditions, *OPTION_KEYS])
                self.add(
                    key_path, f"unknown field {short(key)} for action {spec.name!r} (allowed: {', '.join(allowed)})"
                )
                continue
            found = template_problems(value, key_path)
            self.problems.extend(found)
            for name, where in secret_refs(value, key_path):
                if key in spec.secret_fields:
                    secrets.append(name)
                    self.secret_refs.append(SecretRef(name, where))
                else:
                    self.add(where, WHERE_ALLOWED)
            if found or _has_template(value):
                continue  # typed after rendering, at run time
            try:
                msgspec.convert(value, info.type)
            except msgspec.ValidationError as exc:
                wrong = type_problem(exc, value, info.type, key_path)
                choices = _choices(spec.fields, key) if wrong.path == key_path else ""
                self.add(wrong.path, wrong.message + choices)
                continue
            check = spec.field_checks.get(key)
            problem = check(value) if check else None
            if problem:
                self.add(key_path, problem)
        for key, info in infos.items():
            if info.required and key not in shaped.fields:
                self.add(child_path(path, key), f"missing: action {spec.name!r} needs {key!r}")
        return secrets


def _default_name(spec: ActionSpec[Any], fields: dict[str, Any]) -> str:
    label = fields.get(spec.label_field) if spec.label_field else None
    return f"{spec.name} {label}" if isinstance(label, str) and label else spec.name


def _has_template(value: Any, depth: int = 0) -> bool:
    if depth > 64:
        return False
    if isinstance(value, str):
        return is_templated(value)
    if isinstance(value, list):
        return any(_has_template(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(_has_template(v, depth + 1) for v in value.values())
    return False


@functools.cache
def _field_infos(struct: type[msgspec.Struct]) -> dict[str, msgspec.structs.FieldInfo]:
    """The fields of an action's Struct by JSON name (msgspec computes them anew on every call)."""
    return {info.encode_name: info for info in msgspec.structs.fields(struct)}


def _choices(struct: type[msgspec.Struct], field_name: str) -> str:
    """`` (allowed: a, b)`` when ``field_name`` of ``struct`` is a Literal, else ``""``."""
    for info in _field_infos(struct).values():
        if info.encode_name == field_name:
            values = [str(v) for v in get_args(info.type) if isinstance(v, str)]
            if get_origin(info.type) is Literal and values:
                return f" (allowed: {', '.join(values)})"
    return ""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def validate_playbook(raw: Any, settings: EngineSettings | None = None) -> Playbook:
    """Parse ``raw`` into a :class:`Playbook`; raises :class:`PlaybookInvalid` listing every problem.

    Never raises anything else, whatever JSON (or YAML-loaded) value it is given.
    """
    limits = _Limits(settings.max_steps, settings.max_depth) if settings else _Limits()
    key = _cache_key(raw, limits)
    if key is not None and (cached := _VALID.get(key)) is not None:
        _VALID.move_to_end(key)
        return cached
    validator = _Validator(limits)
    try:
        playbook = validator.document(raw)
    except RecursionError:
        raise PlaybookInvalid.single("$", "the playbook is nested too deeply") from None
    if validator.problems:
        raise PlaybookInvalid(validator.problems)
    if key is not None:
        _VALID[key] = playbook
        if len(_VALID) > _VALID_MAX:
            _VALID.popitem(last=False)
    return playbook


# Jobs mostly repeat the same playbooks (named ones, or a client's template): a validated Playbook is
# immutable, so the last few hundred are kept, keyed by their canonical JSON and the limits.
_VALID: collections.OrderedDict[tuple[bytes, Any], Playbook] = collections.OrderedDict()
_VALID_MAX = 256
_CACHEABLE_BYTES = 64 * 1024


def _cache_key(raw: Any, limits: Any) -> tuple[bytes, Any] | None:
    try:
        encoded = _canonical.encode(raw)
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError):
        return None  # not plain JSON (a YAML date, say): validate every time
    return (encoded, limits) if len(encoded) <= _CACHEABLE_BYTES else None


_canonical = msgspec.json.Encoder(order="sorted")
