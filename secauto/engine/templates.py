"""Templates: ``{{path}}`` placeholders in a step's fields, filled from the context at run time.

Rules:

* A string that is exactly one template (``"{{alert.score}}"``) becomes the value itself, keeping its
  type (number, list, object, null...).
* Templates inside longer text are replaced by the value as text: strings as they are, everything else
  as JSON (``[1, 2]`` renders as ``[1,2]``, ``true`` as ``true``, null as ``null``).
* ``{{path|default}}`` gives a default for a path that does not resolve. The default is read as JSON
  when it parses (``{{score|0}}`` is the number 0, ``{{tags|[]}}`` an empty list), else as plain text
  (``{{owner|nobody}}``); ``{{x|}}`` is the empty string.
* An unknown path without a default is a step error naming the path. A step with
  ``strict_templates: false`` opts out: an unknown full template becomes null and an unknown embedded
  template is left as written (classic SecAuto behaviour).
* Paths follow :mod:`secauto.engine.lookup` (``hosts.0.ip``). There are no expressions, filters or
  code of any kind, and rendered values are never rendered again (data from the context or from a
  script cannot inject templates).
* Paths rooted at ``secrets`` (``{{secrets.NAME}}``) never read the context: they take the value of
  a stored secret from the ``secrets`` mapping the runner passes for the step (see
  :mod:`secauto.engine.secrets`); without one they are a step error.

Dict keys are not templated, only values (recursively through lists and objects).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from secauto.engine.errors import Problem, StepError, child_path
from secauto.engine.lookup import MissingVariable, lookup, path_problem
from secauto.engine.secrets import WHERE_ALLOWED, is_secret_path, secret_name

TEMPLATE_RE = re.compile(r"\{\{([^{}]*)\}\}")
MAX_VALUE_DEPTH = 64


class TemplateRef(msgspec.Struct, frozen=True):
    """A parsed ``{{path|default}}``."""

    path: str
    has_default: bool = False
    default: Any = None


def parse_ref(inner: str) -> TemplateRef:
    """Parse the text between ``{{`` and ``}}``; raises ValueError with a readable message."""
    path, bar, default_text = inner.partition("|")
    path = path.strip()
    problem = path_problem(path)
    if problem:
        raise ValueError(f"template {{{{{inner}}}}}: {problem}")
    if is_secret_path(path):
        try:
            secret_name(path)
        except ValueError as exc:
            raise ValueError(f"template {{{{{inner}}}}}: {exc}") from None
        if bar:
            raise ValueError(f"template {{{{{inner}}}}}: a secret reference takes no default")
    if not bar:
        return TemplateRef(path)
    default_text = default_text.strip()
    default: Any
    try:
        default = msgspec.json.decode(default_text) if default_text else ""
    except msgspec.DecodeError:
        default = default_text
    return TemplateRef(path, True, default)


def is_templated(value: Any) -> bool:
    return isinstance(value, str) and TEMPLATE_RE.search(value) is not None


def template_problems(value: Any, path: str, depth: int = 0) -> list[Problem]:
    """Every malformed template in ``value`` (recursively), plus values nested too deeply."""
    if depth > MAX_VALUE_DEPTH:
        return [Problem(path, f"value nested deeper than {MAX_VALUE_DEPTH} levels")]
    problems: list[Problem] = []
    if isinstance(value, str):
        for match in TEMPLATE_RE.finditer(value):
            try:
                parse_ref(match.group(1))
            except ValueError as exc:
                problems.append(Problem(path, str(exc)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems.extend(template_problems(item, child_path(path, i), depth + 1))
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(Problem(path, f"object keys must be strings, got {key!r}"))
                continue
            problems.extend(template_problems(item, child_path(path, key), depth + 1))
    return problems


def secret_refs(value: Any, path: str, depth: int = 0) -> list[tuple[str, str]]:
    """Every well-formed ``{{secrets.NAME}}`` in ``value`` (recursively) as ``(name, JSON path)``."""
    if depth > MAX_VALUE_DEPTH:
        return []
    found: list[tuple[str, str]] = []
    if isinstance(value, str):
        for match in TEMPLATE_RE.finditer(value):
            try:
                ref = parse_ref(match.group(1))
            except ValueError:
                continue  # template_problems reports it
            if is_secret_path(ref.path):
                found.append((secret_name(ref.path), path))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(secret_refs(item, child_path(path, i), depth + 1))
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                found.extend(secret_refs(item, child_path(path, key), depth + 1))
    return found


def to_text(value: Any) -> str:
    """A value as it appears inside text: strings verbatim, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return str(value)


def _resolve(ref: TemplateRef, context: Mapping[str, Any], secrets: Mapping[str, str] | None) -> Any:
    if is_secret_path(ref.path):
        if secrets is None:
            raise StepError(WHERE_ALLOWED)
        name = secret_name(ref.path)
        if name not in secrets:  # the runner reveals every secret a step names before rendering it
            raise StepError(f"secret {name!r} was not revealed for this step")
        return secrets[name]
    try:
        return lookup(context, ref.path)
    except MissingVariable:
        if ref.has_default:
            return ref.default
        raise


def render_string(text: str, context: Mapping[str, Any], *, strict: bool = True,
                  secrets: Mapping[str, str] | None = None) -> Any:
    """Render one string; raises :class:`StepError` for an unknown path when ``strict``, and for a
    secret reference that ``secrets`` (the values revealed for the step) does not hold."""
    whole = TEMPLATE_RE.fullmatch(text)
    if whole is not None:
        ref = _parse_or_fail(whole.group(1))
        try:
            return _resolve(ref, context, secrets)
        except MissingVariable:
            if strict:
                raise
            return None

    def replace(match: re.Match[str]) -> str:
        ref = _parse_or_fail(match.group(1))
        try:
            return to_text(_resolve(ref, context, secrets))
        except MissingVariable:
            if strict:
                raise
            return match.group(0)

    return TEMPLATE_RE.sub(replace, text)


def render(value: Any, context: Mapping[str, Any], *, strict: bool = True,
           secrets: Mapping[str, str] | None = None) -> Any:
    """Render every string inside ``value`` (lists and object values, recursively); returns a copy.
    ``secrets`` holds the values of the secrets the step references (see :func:`render_string`)."""
    if isinstance(value, str):
        return render_string(value, context, strict=strict, secrets=secrets) if "{{" in value else value
    if isinstance(value, list):
        return [render(item, context, strict=strict, secrets=secrets) for item in value]
    if isinstance(value, dict):
        return {key: render(item, context, strict=strict, secrets=secrets) for key, item in value.items()}
    return value


def _parse_or_fail(inner: str) -> TemplateRef:
    try:
        return parse_ref(inner)
    except ValueError as exc:  # validation reports these first; this covers unvalidated input
        raise StepError(str(exc)) from None
