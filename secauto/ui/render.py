"""Rendering pages: the Jinja2 environment (autoescaped), its filters, and what every page gets.

Values reach the templates as data and are escaped there; no filter returns markup, so no job output,
error text or context can inject HTML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from secauto.api.auth import allows
from secauto.config import Role
from secauto.ui.state import VISITOR
from secauto.ui.static import STATIC

PRETTY_LIMIT = 64 * 1024  # characters of a pretty-printed value shown on a page


def setup_templates(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("secauto.ui", "templates"), autoescape=True,
                               undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(utc=utc, pretty=pretty, duration=duration, percent=percent, millis=millis,
                       seconds=seconds)


def utc(timestamp: str | None) -> str:
    """``2024-01-15T10:35:00.123Z`` as ``2024-01-15 10:35:00 UTC`` (or a dash)."""
    if not timestamp:
        return "-"
    text = timestamp.replace("T", " ", 1)
    if text.endswith("Z"):
        text = text[:-1]
    return f"{text.split('.', 1)[0]} UTC"


def pretty(value: Any) -> str:
    """A value as indented JSON, cut at PRETTY_LIMIT characters."""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > PRETTY_LIMIT:
        return text[:PRETTY_LIMIT] + f"\n... ({len(text) - PRETTY_LIMIT} more characters; the API has all)"
    return text


def duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def seconds(value: float) -> str:
    """A schedule's period or window in the largest whole unit: ``900`` as ``15 min``, ``86400`` as
    ``1 d``, ``90`` as ``90 s``."""
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if value >= size and value % size == 0:
            return f"{value / size:g} {unit}"
    return f"{value:g} s"


def millis(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:,.0f} ms"


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f} %"


def render(request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200,
           headers: Mapping[str, str] | None = None) -> web.Response:
    """Render a page (or a fragment) with what every template may use: the visitor, its CSRF token,
    ``can(role)`` for showing action buttons, and the versioned static file URLs."""
    visitor = request.get(VISITOR)

    def can(role: Role) -> bool:
        return visitor is not None and allows(visitor.identity.role, role)

    base = {
        "visitor": visitor.identity if visitor is not None else None,
        "csrf": visitor.csrf if visitor is not None and visitor.csrf else "",
        "can": can,
        "static": STATIC.url,
        "live": False,
        "nav": "",
        "notice": None,
    }
    response = aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)
    if headers:
        response.headers.update(headers)
    return response
