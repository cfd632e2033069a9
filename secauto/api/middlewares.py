"""The middlewares every request passes, outermost first: metrics, redaction, errors, auth.

* :func:`metrics_middleware` counts requests by route template, method and status.
* :func:`redaction_middleware` masks secret values (``***``) in every JSON answer, errors included.
* :func:`error_middleware` turns every failure into the JSON error body of the README ("HTTP API"): an
  ApiError as it is, aiohttp's own HTTP errors with our codes, Redis outages and busy or stopping
  actors as 503 with Retry-After, anything else as a logged 500 without a traceback in the answer.
* :func:`auth_middleware` checks the API key and the role the matched route declares.
"""

from __future__ import annotations

from aiohttp import web
from loguru import logger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actors.core import ActorDeadError, AskTimeoutError
from secauto.api.auth import allows, authenticate, presented_key
from secauto.api.errors import HTTP_CODES, RETRY_AFTER_S, ApiError, error_response
from secauto.api.roles import METRICS_ROLE, PUBLIC, declared_role
from secauto.api.spec import Handler
from secauto.api.state import IDENTITY, METRICS, SETTINGS
from secauto.redaction import REDACTOR


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
    except (RedisConnectionError, RedisTimeoutError) as exc:
        logger.bind(component="api").warning("Redis unavailable during {} {}: {}", request.method, request.path, exc)
        return error_response(ApiError(503, "unavailable", "the job store (Redis) is unreachable; retry later",
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
    """Check the API key and role that the matched route declares."""
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
        identity = authenticate(key, request.app[SETTINGS].api_keys)
        if identity is None:
            raise ApiError(401, "unauthorized", "invalid API key", headers={"WWW-Authenticate": "Bearer"})
        if not allows(identity.role, role):  # type: ignore[arg-type]
            raise ApiError(403, "forbidden", f"this route needs the {role} role; the key has {identity.role}")
        request[IDENTITY] = identity
    return await handler(request)
