"""The middlewares every request passes, outermost first: metrics, audit, redaction, errors, auth; and
the security headers added to every answer.

* :func:`metrics_middleware` counts requests by route template, method and status.
* :func:`audit_middleware` records every state change (any route but GET/HEAD, unless it declares
  ``operation(audit=False)``) and every refused request (401, 403, 429 on any route) in the audit trail,
  from the route's declaration: handlers do nothing for it.
* :func:`redaction_middleware` masks secret values (``***``) in every JSON answer, errors included.
* :func:`error_middleware` turns every failure into the JSON error body of the README ("HTTP API"): an
  ApiError as it is, aiohttp's own HTTP errors with our codes, Redis outages (and writes refused by a
  Redis that became a replica) and busy or stopping actors as 503 with Retry-After, anything else as a
  logged 500 without a traceback in the answer.
* :func:`auth_middleware` checks the API key, the role the matched route declares and the key's rate
  limit.
* :func:`security_headers` (an ``on_response_prepare`` hook, so it also covers streamed answers and
  errors) adds ``X-Content-Type-Options``, ``X-Frame-Options``, ``Referrer-Policy``, ``Cache-Control``,
  a restrictive ``Content-Security-Policy`` unless the handler set its own, and, over TLS,
  ``Strict-Transport-Security``.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from loguru import logger
from redis.exceptions import ReadOnlyError

from actors.core import ActorDeadError, AskTimeoutError, MailboxFullError
from secauto.api.auth import allows, presented_key
from secauto.api.errors import HTTP_CODES, RETRY_AFTER_S, ApiError, error_response
from secauto.api.peers import request_address
from secauto.api.roles import METRICS_ROLE, PUBLIC, declared_role
from secauto.api.spec import Handler, declared_audit
from secauto.api.state import (
    AUDIT_LOG,
    AUDIT_TARGET,
    CALLER,
    IDENTITY,
    KEYRING,
    METRICS,
    RATE_LIMITER,
    SETTINGS,
)
from secauto.keyring import digest_of
from secauto.models import utc_now
from secauto.redaction import REDACTOR
from secauto.store.audit import AuditEntry
from secauto.store.connection import REDIS_UNAVAILABLE


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count requests by route template (not raw path: ids would make labels unbounded)."""
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request.app[METRICS].count_request(route, request.method, status)


@web.middleware
async def redaction_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Mask every secret value known to this process in JSON answers (stored records are masked
    already; this also covers answers built on the fly: POST /playbook, error messages quoting input).
    Streams (SSE) mask their events themselves."""
    response = await handler(request)
    if (REDACTOR.active and isinstance(response, web.Response) and isinstance(response.body, bytes)
            and response.content_type == "application/json"):
        masked = REDACTOR.json_bytes(response.body)
        if masked is not response.body:
            response.body = masked
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the JSON error body; never leak a traceback."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "error")
        message = exc.reason if exc.status != 413 else "request body too large"
        return error_response(ApiError(exc.status, code, message, headers=_allow_header(exc)))
    except REDIS_UNAVAILABLE as exc:
        logger.bind(component="api").warning("Redis unavailable during {} {}: {}", request.method, request.path, exc)
        why = ("is read-only (a failover is under way?)" if isinstance(exc, ReadOnlyError) else "is unreachable")
        return error_response(ApiError(503, "unavailable", f"the job store (Redis) {why}; retry later",
                                       headers={"Retry-After": RETRY_AFTER_S}))
    except (ActorDeadError, AskTimeoutError):
        return error_response(ApiError(503, "unavailable", "the node is busy or shutting down; retry later",
                                       headers={"Retry-After": RETRY_AFTER_S}))
    except Exception:
        logger.bind(component="api").exception("unhandled error in {} {}", request.method, request.path)
        return error_response(ApiError(500, "internal_error", "internal error"))


def _allow_header(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the API key, the role that the matched route declares and the key's rate limit.

    401 for a missing, unknown, revoked or expired key; 403 for a role below the route's; 429
    ``rate_limited`` with ``Retry-After`` when the key's bucket is empty. Never reads Redis."""
    role = declared_role(request.match_info.handler)
    if role is None:
        # Unmatched routes (404/405) carry aiohttp's own handler: let it raise.
        return await handler(request)
    if role == METRICS_ROLE:
        role = PUBLIC if request.app[SETTINGS].config.metrics.public else "viewer"
    if role != PUBLIC:
        key = presented_key(request)
        if key is None:
            raise ApiError(401, "unauthorized", "missing API key (Authorization: Bearer KEY or X-API-Key)",
                           headers={"WWW-Authenticate": "Bearer"})
        keyring = request.app[KEYRING]
        identity = keyring.lookup(digest_of(key))
        if identity is None:
            raise ApiError(401, "unauthorized", "invalid API key", headers={"WWW-Authenticate": "Bearer"})
        request[CALLER] = identity
        if identity.expired(keyring.clock()):
            raise ApiError(401, "unauthorized", "this API key has expired", headers={"WWW-Authenticate": "Bearer"})
        keyring.touch(identity.name)
        if not allows(identity.role, role):  # type: ignore[arg-type]
            raise ApiError(403, "forbidden", f"this route needs the {role} role; the key has {identity.role}")
        wait = request.app[RATE_LIMITER].acquire(identity)
        if wait is not None:
            request.app[METRICS].rate_limited.labels(code="rate_limited").inc()
            raise ApiError(429, "rate_limited", f"too many requests with this key; retry in {wait}s",
                           headers={"Retry-After": str(wait)})
        request[IDENTITY] = identity
    return await handler(request)


# Methods that change nothing: their calls are audited only when refused.
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Refusals audited on every route.
REFUSED_STATUSES = frozenset({401, 403, 429})
# An aiohttp handler cancelled because the client went away (nginx's code for it).
_CLIENT_CLOSED = 499


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record the request in the audit trail once answered, if it is a state change or was refused.

    Sits outside the error middleware, so it sees the status actually answered. Adds no Redis
    round-trip: the entry goes to the audit actor, which logs it and writes it in a batch."""
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects (the error middleware answers every error itself)
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = _CLIENT_CLOSED
        raise
    finally:
        action = audit_action(request, status)
        if action is not None:
            _record(request, action, status)


def audit_action(request: web.Request, status: int) -> str | None:
    """The audit trail's name for this request, or None when it is not audited (a read that was not
    refused, or no route matched: 404/405). Covers the API's routes and the dashboard's alike."""
    if request.match_info.http_exception is not None:
        return None
    declared = declared_audit(request.match_info.handler)
    changes = request.method not in _READ_METHODS and declared is not False
    if not changes and status not in REFUSED_STATUSES:
        return None
    if isinstance(declared, str):
        return declared
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource is not None else request.path}"


def _record(request: web.Request, action: str, status: int) -> None:
    settings = request.app[SETTINGS]
    who = request.get(IDENTITY) or request.get(CALLER)
    target = request.get(AUDIT_TARGET)
    if target is None and request.match_info:
        target = "/".join(request.match_info.values())[:200] or None
    entry = AuditEntry(timestamp=utc_now(), actor=who.name if who is not None else None,
                       role=who.role if who is not None else None, action=action, target=target,
                       source_ip=request_address(request, settings.trusted_proxies),
                       outcome="success" if status < 400 else "failure", status=status, node_id=settings.node_id)
    try:
        request.app[AUDIT_LOG].record(entry)
    except (ActorDeadError, MailboxFullError) as exc:
        # Stopping, or a flood while Redis is down: the entry survives as this log line only.
        request.app[METRICS].audit_entries.labels(result="dropped").inc()
        logger.bind(component="audit", node_id=settings.node_id, actor=entry.actor, role=entry.role,
                    action=action, target=target, source_ip=entry.source_ip, outcome=entry.outcome,
                    status=status).error("audit entry not queued ({}): {} {} by {} -> {}", type(exc).__name__,
                                         action, target or "-", entry.actor or "(no key)", status)


# Content-Security-Policy of API answers (JSON; nothing to render, nothing to frame).
API_CSP = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=31536000"


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: the security headers of every answer (handlers' own
    ``Content-Security-Policy`` and ``Cache-Control`` are kept: the dashboard sets its own CSP)."""
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers.setdefault("Content-Security-Policy", API_CSP)
    headers.setdefault("Cache-Control", "no-store")
    if request.secure:
        headers["Strict-Transport-Security"] = HSTS
