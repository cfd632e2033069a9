"""Assembles the aiohttp application: the node's parts under their keys, the middlewares, the routes.

Building the app fails if a route declares no role (:mod:`secauto.api.roles`) or no operation
(:func:`secauto.api.spec.operation`), so no route is ever reachable without a decision about who may
call it, nor missing from ``GET /openapi.json``.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from actors.audit import AuditActor
from actors.core import ActorSystem
from actors.submit_writer import SubmitWriter
from secauto.api.limits import RateLimiter
from secauto.api.middlewares import (
    audit_middleware,
    auth_middleware,
    error_middleware,
    metrics_middleware,
    redaction_middleware,
    security_headers,
)
from secauto.api.roles import declared_role
from secauto.api.routes import route_table
from secauto.api.spec import declared_operation
from secauto.api.state import (
    AUDIT_LOG,
    AUDIT_STORE,
    CLUSTER_MODE,
    ENGINE,
    EVENTS,
    KEY_STORE,
    KEYRING,
    METRICS,
    RATE_LIMITER,
    SETTINGS,
    SUBMISSIONS,
    SYNC_SLOTS,
    SYSTEM,
    VAULT,
    WEBHOOKS,
    EventSource,
)
from secauto.config import Settings
from secauto.engine import EngineSettings
from secauto.keyring import KeyRing
from secauto.metrics import NodeMetrics
from secauto.store.apikeys import KeyStore
from secauto.store.audit import AuditStore
from secauto.store.webhooks import WebhookStore
from secauto.vault import SecretVault


def create_app(settings: Settings, system: ActorSystem, engine: EngineSettings, metrics: NodeMetrics,
               events: EventSource, webhook_store: WebhookStore, vault: SecretVault, *, cluster_mode: bool,
               keyring: KeyRing, key_store: KeyStore, audit_store: AuditStore, submissions: SubmitWriter,
               audit: AuditActor) -> web.Application:
    """Build the application. Raises RuntimeError if a route has no declared role or operation.

    The actor system must hold the ``keys`` and ``audit`` actors besides the others (the API asks the
    first to reload after a key change and asks the second to flush before listing the trail).
    ``submissions`` is the dispatcher's submit writer and ``audit`` the audit actor (spawned): the
    submit routes and the audit middleware call them directly."""
    app = web.Application(middlewares=[metrics_middleware, audit_middleware, redaction_middleware, error_middleware,
                                       auth_middleware],
                          client_max_size=settings.config.server.max_body_bytes)
    app.on_response_prepare.append(security_headers)
    app[SETTINGS] = settings
    app[SYSTEM] = system
    app[CLUSTER_MODE] = cluster_mode
    app[ENGINE] = engine
    app[METRICS] = metrics
    app[EVENTS] = events
    app[WEBHOOKS] = webhook_store
    app[VAULT] = vault
    app[KEYRING] = keyring
    app[KEY_STORE] = key_store
    app[AUDIT_STORE] = audit_store
    app[SUBMISSIONS] = submissions
    app[AUDIT_LOG] = audit
    app[RATE_LIMITER] = RateLimiter(settings.config.security.rate_limit)
    app[SYNC_SLOTS] = asyncio.Semaphore(settings.config.cluster.max_concurrent_jobs)
    for method, path, handler in route_table():
        if declared_role(handler) is None:
            raise RuntimeError(f"route {method} {path} declares no role")
        if declared_operation(handler) is None:
            raise RuntimeError(f"route {method} {path} declares no operation (secauto.api.spec.operation)")
        app.router.add_route(method, path, handler)
    return app
