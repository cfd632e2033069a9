"""Who may call a route: every handler declares the least role it needs, or that it is public.

``create_app`` refuses a route without a declaration, so no route is reachable without a decision
about it; the auth middleware (:mod:`secauto.api.middlewares`) enforces the declarations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from secauto.api.spec import H
from secauto.config import Role

PUBLIC = "public"
# Public when metrics.public is set, else for viewers and up.
METRICS_ROLE = "metrics"
_ROLE_ATTR = "__secauto_role__"


def requires(role: Role) -> Callable[[H], H]:
    """Declare the least role that may call a handler."""

    def mark(handler: H) -> H:
        setattr(handler, _ROLE_ATTR, role)
        return handler

    return mark


def public(handler: H) -> H:
    """Declare a handler callable without an API key (health probes)."""
    setattr(handler, _ROLE_ATTR, PUBLIC)
    return handler


def metrics_role(handler: H) -> H:
    """Declare the /metrics handler: public if ``metrics.public``, else viewer."""
    setattr(handler, _ROLE_ATTR, METRICS_ROLE)
    return handler


def declared_role(handler: Any) -> str | None:
    """The role a handler declared (``public``, ``metrics`` or a Role), or None."""
    return getattr(handler, _ROLE_ATTR, None)
