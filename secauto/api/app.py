"""The aiohttp application: routes, role declarations and the middlewares (errors, auth, limits).

Every handler declares who may call it with :func:`requires` (a role) or :func:`public`, and what it
takes and answers with :func:`secauto.api.spec.operation`; building the app fails if one does not, so
no route is ever reachable without a decision about it, nor missing from ``GET /openapi.json``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

import msgspec
from aiohttp import web
from loguru import logger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actors.core import ActorDeadError, ActorSystem, AskTimeoutError
from secauto.api.auth import allows, authenticate, presented_key
from secauto.api.errors import HTTP_CODES, ApiError, ErrorDetail, error_response
from secauto.api.spec import H, Handler, check_declared, declared_operation
from secauto.config import Role, Settings
from secauto.engine import EngineSettings
from secauto.metrics import NodeMetrics

if TYPE_CHECKING:
    from secauto.api.events import EventSource
    from secauto.store.webhooks import WebhookStore

SETTINGS = web.AppKey("settings", Settings)
SYSTEM = web.AppKey("system", ActorSystem)
CLUSTER_MODE = web.AppKey("cluster_mode", bool)
ENGINE = web.AppKey("engine", EngineSettings)
METRICS = web.AppKey("metrics", NodeMetrics)
RETRY_AFTER_S = "5"

_ROLE_ATTR = "__secauto_role__"
_PUBLIC = "public"
# Public when metrics.public is set, else for viewers and up.
METRICS_ROLE = "metrics"


def requires(role: Role) -> Callable[[H], H]:
    """Declare the least role that may call a handler."""

    def mark(handler: H) -> H:
        setattr(handler, _ROLE_ATTR, role)
        return handler

    return mark


def public(handler: H) -> H:
    """Declare a handler callable without an API key (health probes)."""
    setattr(handler, _ROLE_ATTR, _PUBLIC)
    return handler


def metrics_role(handler: H) -> H:
    """Declare the /metrics handler: public if ``metrics.public``, else viewer."""
    setattr(handler, _ROLE_ATTR, METRICS_ROLE)
    return handler


def declared_role(handler: Any) -> str | None:
    return getattr(handler, _ROLE_ATTR, None)


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
        request.app[METRICS].http_requests.labels(route=route, method=request.method, status=str(status)).inc()


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
    route_handler = request.match_info.handler
    role = declared_role(route_handler)
    if role is None:
        # Unmatched routes (404/405) carry aiohttp's own handler: let it raise.
        return await handler(request)
    if role == METRICS_ROLE:
        role = _PUBLIC if request.app[SETTINGS].config.metrics.public else "viewer"
    if role != _PUBLIC:
        key = presented_key(request)
        if key is None:
            raise ApiError(401, "unauthorized", "missing API key (Authorization: Bearer KEY or X-API-Key)",
                           headers={"WWW-Authenticate": "Bearer"})
        identity = authenticate(key, request.app[SETTINGS].api_keys)
        if identity is None:
            raise ApiError(401, "unauthorized", "invalid API key", headers={"WWW-Authenticate": "Bearer"})
        if not allows(identity.role, role):  # type: ignore[arg-type]
            raise ApiError(403, "forbidden", f"this route needs the {role} role; the key has {identity.role}")
    return await handler(request)


T = TypeVar("T")


@overload
async def read_json(request: web.Request, body_type: type[T]) -> T: ...
@overload
async def read_json(request: web.Request, body_type: Any) -> Any: ...  # unions: ``A | B``


async def read_json(request: web.Request, body_type: Any) -> Any:
    """Read and validate a JSON body as ``body_type``.

    Raises ApiError 415 for a non-JSON content type, 413 for a body over ``server.max_body_bytes``
    (aiohttp enforces it while reading) and 400 naming the field for malformed JSON or wrong types.
    ``body_type`` must be the body type that the route's operation declares.
    """
    check_declared(request, "body", body_type)
    content_type = request.headers.get("Content-Type")
    if content_type and request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", f"expected application/json, got {request.content_type}")
    body = await request.read()
    if not body:
        raise ApiError(400, "validation_error", "request body is empty; expected a JSON object")
    try:
        return msgspec.json.decode(body, type=body_type)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "validation_error", "invalid request body", [validation_detail(exc)]) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "validation_error", f"malformed JSON: {exc}") from None


def parse_query(request: web.Request, query_type: type[T]) -> T:
    """Query parameters as a typed struct (strings converted to numbers where the type says so);
    400 naming the parameter otherwise. A parameter given twice keeps its first value.
    ``query_type`` must be the query type that the route's operation declares."""
    check_declared(request, "query", query_type)
    try:
        return msgspec.convert(dict(request.query), query_type, strict=False)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "validation_error", "invalid query parameters", [validation_detail(exc)]) from None


def validation_detail(exc: msgspec.ValidationError) -> ErrorDetail:
    text = str(exc)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        message, where = text, "$"
    path = where.rstrip("`")
    unknown = message.startswith("Object contains unknown field")
    if unknown:
        name = message.split("`")[1]
        path = f"{path}.{name}"
        message = "unknown field"
    field = path.removeprefix("$").lstrip(".") or "$"
    return ErrorDetail(field=field, message=message, path=path)


def route_modules() -> tuple[Any, ...]:
    """Every module that contributes routes (each has a ROUTES list of (method, path, handler))."""
    from secauto.api import cluster, dlq, events, health, jobs, metrics, openapi, playbooks, webhooks

    return (health, cluster, jobs, dlq, playbooks, events, webhooks, metrics, openapi)


def create_app(settings: Settings, system: ActorSystem, engine: EngineSettings, metrics: NodeMetrics,
               events: EventSource, webhook_store: WebhookStore, *, cluster_mode: bool) -> web.Application:
    """Build the application. Raises RuntimeError if a route has no declared role or operation."""
    from secauto.api import events as events_api
    from secauto.api import playbooks
    from secauto.api import webhooks as webhooks_api

    app = web.Application(middlewares=[metrics_middleware, error_middleware, auth_middleware],
                          client_max_size=settings.config.server.max_body_bytes)
    app[SETTINGS] = settings
    app[SYSTEM] = system
    app[CLUSTER_MODE] = cluster_mode
    app[ENGINE] = engine
    app[METRICS] = metrics
    app[events_api.EVENTS] = events
    app[webhooks_api.WEBHOOKS] = webhook_store
    app[playbooks.SYNC_SLOTS] = asyncio.Semaphore(settings.config.cluster.max_concurrent_jobs)
    for module in route_modules():
        for method, path, handler in module.ROUTES:
            if declared_role(handler) is None:
                raise RuntimeError(f"route {method} {path} declares no role")
            if declared_operation(handler) is None:
                raise RuntimeError(f"route {method} {path} declares no operation (secauto.api.spec.operation)")
            app.router.add_route(method, path, handler)
    return app
