"""Conditions: parsing (with JSON-path problems) and evaluation against a context.

Forms accepted (``when``, the ``if`` action's ``condition``, classic ``if`` conditions):

* ``[op, left, right]`` with ``== != > >= < <= contains in matches`` (aliases ``eq ne gt gte lt lte``);
* the map form ``{"eq": [left, right]}`` (any operator or alias as the key);
* ``{"and": [...]}``, ``{"or": [...]}`` (short-circuit; empty ``and`` is true, empty ``or`` false) and
  ``{"not": expr}``;
* operands: literals, ``{"var": "a.b.0.c"}`` (optionally ``"default": value``), strings with templates,
  nested expressions, and literal lists/objects whose items are operands too;
* anything else at the top of a condition is taken for its truthiness (null, false, "", 0, [] and {}
  are false), e.g. ``when: "{{flag}}"``.

Semantics: numbers compare numerically (``1 == 1.0``), booleans are not numbers, strings are compared
without coercion (``"5" == 5`` is false), lists and objects deeply. Ordering operators need two numbers;
anything else is a :class:`StepError` naming the operator and the types. ``contains``: substring, list
item or object key; ``in`` is the reverse. ``matches`` is a bounded regular-expression search, see
:mod:`secauto.engine.safe_regex`. A missing variable is a :class:`StepError` naming the path, unless
the ``var`` has a default or the step has ``strict_templates: false`` (then it is null).

Evaluation never mutates the context. Every error is a :class:`StepError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from secauto.engine import safe_regex
from secauto.engine.errors import Problem, StepError, child_path
from secauto.engine.lookup import MissingVariable, lookup, path_problem
from secauto.engine.secrets import WHERE_ALLOWED, is_secret_path
from secauto.engine.templates import is_templated, render_string, secret_refs, template_problems

OPERATORS: dict[str, str] = {
    "==": "==", "eq": "==",
    "!=": "!=", "ne": "!=",
    ">": ">", "gt": ">",
    ">=": ">=", "gte": ">=",
    "<": "<", "lt": "<",
    "<=": "<=", "lte": "<=",
    "contains": "contains",
    "in": "in",
    "matches": "matches",
}  # fmt: skip
LOGICAL = ("and", "or", "not")
MAX_EXPR_DEPTH = 32


class Lit(msgspec.Struct, frozen=True, tag=True):
    value: Any


class ListOf(msgspec.Struct, frozen=True, tag=True):
    items: tuple[Expr, ...]


class ObjectOf(msgspec.Struct, frozen=True, tag=True):
    items: dict[str, Expr]


class Var(msgspec.Struct, frozen=True, tag=True):
    path: str
    has_default: bool = False
    default: Any = None


class Tmpl(msgspec.Struct, frozen=True, tag=True):
    text: str


class Compare(msgspec.Struct, frozen=True, tag=True):
    op: str  # canonical: == != > >= < <= contains in matches
    left: Expr
    right: Expr


class AllOf(msgspec.Struct, frozen=True, tag=True):
    items: tuple[Expr, ...]


class AnyOf(msgspec.Struct, frozen=True, tag=True):
    items: tuple[Expr, ...]


class Not(msgspec.Struct, frozen=True, tag=True):
    item: Expr


Expr = Lit | ListOf | ObjectOf | Var | Tmpl | Compare | AllOf | AnyOf | Not


class ConditionInvalid(Exception):
    """Raised by :func:`parse_condition` with every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems[0].message if problems else "invalid condition")
        self.problems = problems


def parse_condition(raw: Any, path: str) -> Expr:
    """Parse a condition; raises :class:`ConditionInvalid` listing each problem with its path."""
    problems: list[Problem] = []
    expr = _parse(raw, path, 0, problems, operand=False)
    if problems:
        raise ConditionInvalid(problems)
    return expr


def _parse(raw: Any, path: str, depth: int, problems: list[Problem], *, operand: bool) -> Expr:
    if depth > MAX_EXPR_DEPTH:
        problems.append(Problem(path, f"condition nested deeper than {MAX_EXPR_DEPTH} levels"))
        return Lit(None)
    if isinstance(raw, str):
        if is_templated(raw):
            problems.extend(template_problems(raw, path))
            problems.extend(Problem(where, WHERE_ALLOWED) for _, where in secret_refs(raw, path))
            return Tmpl(raw)
        return Lit(raw)
    if isinstance(raw, list):
        return _parse_list(raw, path, depth, problems)
    if isinstance(raw, dict):
        return _parse_object(raw, path, depth, problems, operand=operand)
    if raw is None or isinstance(raw, bool | int | float):
        return Lit(raw)
    problems.append(Problem(path, f"unsupported value of type {type(raw).__name__}"))
    return Lit(None)


def _parse_list(raw: list[Any], path: str, depth: int, problems: list[Problem]) -> Expr:
    if raw and isinstance(raw[0], str) and raw[0] in OPERATORS:
        if len(raw) != 3:  # the path names the first missing operand, or the first one too many
            problems.append(Problem(child_path(path, min(len(raw), 3)),
                                    f"comparison {raw[0]!r} needs [op, left, right], got {len(raw)} items"))
            return Lit(None)
        left = _parse(raw[1], child_path(path, 1), depth + 1, problems, operand=True)
        right = _parse(raw[2], child_path(path, 2), depth + 1, problems, operand=True)
        return _compare(OPERATORS[raw[0]], left, right, child_path(path, 2), problems)
    if raw and isinstance(raw[0], str) and raw[0] in ("===", "!==", "=", "=~", "<>"):
        problems.append(Problem(child_path(path, 0), f"unknown operator {raw[0]!r}"))
        return Lit(None)
    items = tuple(_parse(v, child_path(path, i), depth + 1, problems, operand=True) for i, v in enumerate(raw))
    return ListOf(items)


def _parse_object(raw: dict[Any, Any], path: str, depth: int, problems: list[Problem], *, operand: bool) -> Expr:
    for key in raw:
        if not isinstance(key, str):
            problems.append(Problem(child_path(path, str(key)), f"object keys must be strings, got {key!r}"))
            return Lit(None)
    if "var" in raw:
        return _parse_var(raw, path, problems)
    if len(raw) == 1:
        ((key, value),) = raw.items()
        key_path = child_path(path, key)
        if key in ("and", "or"):
            if not isinstance(value, list):
                problems.append(Problem(key_path, f"{key!r} takes a list of conditions"))
                return Lit(None)
            items = tuple(
                _parse(v, child_path(key_path, i), depth + 1, problems, operand=False) for i, v in enumerate(value)
            )
            return AllOf(items) if key == "and" else AnyOf(items)
        if key == "not":
            return Not(_parse(value, key_path, depth + 1, problems, operand=False))
        if key in OPERATORS:
            if not isinstance(value, list) or len(value) != 2:
                # A list of the wrong length: the path names the first missing operand or the one too many.
                where = child_path(key_path, min(len(value), 2)) if isinstance(value, list) else key_path
                problems.append(Problem(where, f"{key!r} takes a list of two operands [left, right]"))
                return Lit(None)
            left = _parse(value[0], child_path(key_path, 0), depth + 1, problems, operand=True)
            right = _parse(value[1], child_path(key_path, 1), depth + 1, problems, operand=True)
            return _compare(OPERATORS[key], left, right, child_path(key_path, 1), problems)
    if not operand:
        keys = ", ".join(sorted(raw)) or "none"
        where = child_path(path, min(raw)) if raw else path  # the (first) key that is no operator
        problems.append(
            Problem(where, f"not a condition (keys: {keys}); use [op, left, right], {{op: [l, r]}}, and, or, not, var")
        )
        return Lit(None)
    return ObjectOf({k: _parse(v, child_path(path, k), depth + 1, problems, operand=True) for k, v in raw.items()})


def _compare(op: str, left: Expr, right: Expr, right_path: str, problems: list[Problem]) -> Expr:
    """A comparison; a literal ``matches`` pattern is checked now rather than at run time."""
    if op == "matches" and isinstance(right, Lit) and isinstance(right.value, str):
        problem = safe_regex.pattern_problem(right.value)
        if problem:
            problems.append(Problem(right_path, problem))
    return Compare(op, left, right)


def _parse_var(raw: dict[str, Any], path: str, problems: list[Problem]) -> Expr:
    extra = set(raw) - {"var", "default"}
    if extra:
        problems.append(Problem(child_path(path, min(extra)),
                                f"'var' takes only 'default' besides the path; unknown: {sorted(extra)}"))
    target = raw["var"]
    if not isinstance(target, str):
        problems.append(Problem(child_path(path, "var"), "'var' must be a string path"))
        return Lit(None)
    problem = path_problem(target) or (WHERE_ALLOWED if is_secret_path(target) else None)
    if problem:
        problems.append(Problem(child_path(path, "var"), problem))
        return Lit(None)
    return Var(target, "default" in raw, raw.get("default"))


# ---------------------------------------------------------------- evaluation


def truthy(value: Any) -> bool:
    """Classic truthiness: null, false, "", 0, [] and {} are false; everything else is true."""
    if value is None or value is False:
        return False
    if isinstance(value, int | float | str | list | dict):
        return bool(value)
    return True


async def holds(expr: Expr, context: Mapping[str, Any], *, strict: bool = True) -> bool:
    """Evaluate ``expr`` for its truthiness; raises :class:`StepError` on a bad comparison."""
    return truthy(await evaluate(expr, context, strict=strict))


async def evaluate(expr: Expr, context: Mapping[str, Any], *, strict: bool = True) -> Any:
    """The value of ``expr`` in ``context``; raises :class:`StepError` (e.g. a missing variable)."""
    match expr:
        case Lit(value):
            return value
        case Tmpl(text):
            return render_string(text, context, strict=strict)
        case Var(path, has_default, default):
            try:
                return lookup(context, path)
            except MissingVariable:
                if has_default:
                    return default
                if strict:
                    raise
                return None
        case ListOf(items):
            return [await evaluate(item, context, strict=strict) for item in items]
        case ObjectOf(items):
            return {key: await evaluate(item, context, strict=strict) for key, item in items.items()}
        case AllOf(items):
            for item in items:
                if not await holds(item, context, strict=strict):
                    return False
            return True
        case AnyOf(items):
            for item in items:
                if await holds(item, context, strict=strict):
                    return True
            return False
        case Not(item):
            return not await holds(item, context, strict=strict)
        case Compare(op, left, right):
            lhs = await evaluate(left, context, strict=strict)
            rhs = await evaluate(right, context, strict=strict)
            return await compare(op, lhs, rhs)
    raise StepError(f"unknown expression {expr!r}")  # unreachable for parsed expressions


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def equal(a: Any, b: Any) -> bool:
    """Deep equality without coercion: numbers numerically, booleans only equal booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if _is_number(a) and _is_number(b):
        return bool(float(a) == float(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    return bool(a == b)


def _contains(container: Any, item: Any, op: str) -> bool:
    if isinstance(container, str):
        if not isinstance(item, str):
            raise StepError(f"{op!r}: cannot look for a {_type_name(item)} in a string")
        return item in container
    if isinstance(container, list):
        return any(equal(element, item) for element in container)
    if isinstance(container, dict):
        return isinstance(item, str) and item in container
    raise StepError(f"{op!r} needs a string, list or object to look in, got {_type_name(container)}")


async def compare(op: str, left: Any, right: Any) -> bool:
    """Apply a canonical operator; raises :class:`StepError` for operands it cannot compare."""
    if op == "==":
        return equal(left, right)
    if op == "!=":
        return not equal(left, right)
    if op in (">", ">=", "<", "<="):
        if not (_is_number(left) and _is_number(right)):
            raise StepError(f"{op!r} compares numbers, got {_type_name(left)} and {_type_name(right)}")
        a, b = float(left), float(right)
        return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]
    if op == "contains":
        return _contains(left, right, op)
    if op == "in":
        return _contains(right, left, op)
    if op == "matches":
        if not isinstance(left, str) or not isinstance(right, str):
            raise StepError(f"'matches' needs a string and a pattern, got {_type_name(left)} and {_type_name(right)}")
        return await safe_regex.search(right, left)
    raise StepError(f"unknown operator {op!r}")
