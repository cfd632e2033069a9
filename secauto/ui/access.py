"""Who may call a dashboard route: every handler declares the least role it needs, or that it is public.

``create_ui_app`` refuses a route without a declaration, so no page or action is reachable without a
decision about it; :mod:`secauto.ui.sessions` enforces the declarations on every request (the role is
checked on the server whatever buttons the page showed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from aiohttp import web

from secauto.config import Role

Access = Role | Literal["public"]
PUBLIC: Literal["public"] = "public"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)
_ATTR = "__secauto_ui_access__"


def access(level: Access) -> Callable[[H], H]:
    """Declare who may call a dashboard handler: ``public`` (the login page) or the least role."""

    def mark(handler: H) -> H:
        setattr(handler, _ATTR, level)
        return handler

    return mark


def declared_access(handler: Any) -> Access | None:
    """What a handler declared, or None (aiohttp's own handlers for 404/405 declare nothing)."""
    level: Access | None = getattr(handler, _ATTR, None)
    return level
