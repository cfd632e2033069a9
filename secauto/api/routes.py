"""The route table: every module that contributes routes, in the order they are added.

Each module has a ``ROUTES`` list of ``(method, path, handler)``; every handler declares its role
(:mod:`secauto.api.roles`) and its operation (:func:`secauto.api.spec.operation`).
"""

from __future__ import annotations

from typing import Any

from secauto.api import (
    audit,
    cluster,
    dlq,
    events,
    health,
    jobs,
    keys,
    metrics,
    openapi,
    playbooks,
    schedules,
    secrets,
    webhooks,
)

ROUTE_MODULES = (health, cluster, jobs, dlq, playbooks, events, webhooks, schedules, secrets, keys, audit, metrics,
                 openapi)
RouteEntry = tuple[str, str, Any]


def route_table() -> tuple[RouteEntry, ...]:
    """Every ``(method, path, handler)`` the app serves."""
    return tuple(entry for module in ROUTE_MODULES for entry in module.ROUTES)
