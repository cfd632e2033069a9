"""``GET /openapi.json``: the API as an OpenAPI 3.1 document, generated from the routes' declarations.

Nothing here is written by hand per route: paths, methods and parameters come from the app's routes
(:func:`secauto.api.routes.route_table`), bodies and responses from the msgspec types the handlers
decode and encode (declared with :func:`secauto.api.spec.operation`), security from the role
decorators. Schemas come from ``msgspec.json.schema_components``, with one adjustment: msgspec
describes what it *accepts* (a field with a default may be left out), while a response always carries
every field of its Struct (except ``UNSET`` ones and, for ``omit_defaults`` Structs, defaulted ones),
so response schemas list those as required. A Struct may therefore serve as a request body or in a
response, not both.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

import msgspec
from aiohttp import web

from secauto import __version__
from secauto.api.errors import ErrorResponse
from secauto.api.roles import METRICS_ROLE, declared_role, public
from secauto.api.spec import JSON, REF_TEMPLATE, Operation, declared_operation, operation, respond_spliced
from secauto.api.state import SETTINGS
from secauto.models import Event

OPENAPI_VERSION = "3.1.0"
OpenApiDocument = dict[str, Any]

SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer KEY`"},
    "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "`X-API-Key: KEY`"},
}
KEYED: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"apiKeyAuth": []}]

STATUS_TEXT = {
    200: "OK",
    400: "Invalid request: the details name each field that is wrong (`jobs[1].priority`) and its JSON path.",
    401: "No API key, or an unknown, revoked or expired one.",
    403: "The key's role is below the one the route needs.",
    404: "No such resource.",
    409: "The resource is in a state that does not allow this.",
    413: "The body is larger than server.max_body_bytes.",
    415: "The body is not application/json.",
    429: "Refused for now: the key's rate limit (`rate_limited`), its max_pending quota (`quota_exceeded`), or too "
         "many synchronous playbook runs on this node (`too_many_requests`). Retry after Retry-After.",
    503: "The job store (Redis) is unreachable or the node is busy or stopping: retry after Retry-After.",
    504: "The playbook did not finish within cluster.job_timeout.",
}
RETRY_AFTER = {"description": "Seconds to wait before retrying.", "required": True,
               "schema": {"type": "string", "pattern": "^[0-9]+$"}}
STATUS_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "required": True, "schema": {"type": "string"}}},
    429: {"Retry-After": RETRY_AFTER},
    503: {"Retry-After": RETRY_AFTER},
}
_PATH_PARAM = re.compile(r"\{([^}]+)\}")


class Route(msgspec.Struct, frozen=True):
    method: str
    path: str
    handler: Any
    operation: Operation
    role: str


def routes(table: Iterable[tuple[str, str, Any]]) -> list[Route]:
    """The ``(method, path, handler)`` entries of ``table`` with their declarations."""
    found = []
    for method, path, handler in table:
        op, role = declared_operation(handler), declared_role(handler)
        if op is None or role is None:
            raise RuntimeError(f"route {method} {path} lacks its operation or role declaration")
        found.append(Route(method, path, handler, op, role))
    return found


def build_document(entries: Iterable[tuple[str, str, Any]], *, metrics_public: bool = False) -> OpenApiDocument:
    """The OpenAPI document of the routes in ``entries`` (a fresh dict; :func:`document_bytes` caches
    the encoded form)."""
    table = routes(entries)
    bodies = _unique(route.operation.body for route in table if route.operation.body is not None)
    queries = _unique(route.operation.query for route in table if route.operation.query is not None)
    answers = _unique([ErrorResponse, Event, *(kind for route in table
                                               for kinds in route.operation.responses.values() for kind in kinds)])
    request_structs, response_structs = _structs(bodies), _structs(answers)
    if shared := request_structs & response_structs:
        raise RuntimeError(f"{sorted(cls.__name__ for cls in shared)} serve both as request and response types")
    all_structs = sorted(request_structs | response_structs | set(queries), key=lambda cls: cls.__name__)
    kinds = [*bodies, *queries, *answers, *all_structs]
    schemas, components = msgspec.json.schema_components(kinds, ref_template=REF_TEMPLATE)
    schema_of = dict(zip(kinds, schemas, strict=True))
    name_of = {cls: schema_of[cls]["$ref"].rpartition("/")[2] for cls in all_structs}
    for cls in response_structs:
        _require_present_fields(components[name_of[cls]], cls)
    query_params = {query: _query_parameters(components.pop(name_of[query])) for query in queries}

    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for route in table:
        operation_id = route.handler.__name__
        if operation_id in operation_ids:
            operation_id = f"{operation_id}_{re.sub(r'[^A-Za-z0-9]+', '_', route.path).strip('_')}"
        operation_ids.add(operation_id)
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(
            route, operation_id, schema_of, query_params, metrics_public=metrics_public)

    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "SecAuto API",
            "version": __version__,
            "description": "A SecAuto node's HTTP API: JSON in and out; every JSON response carries `success` "
                           "and `timestamp` (RFC 3339 UTC). Keys go in `Authorization: Bearer KEY` or "
                           "`X-API-Key: KEY`; each operation names the least role it needs in `x-secauto-role` "
                           "(viewer < operator < admin). The events of GET /cluster/events carry the `Event` "
                           "schema.",
        },
        "tags": [{"name": name} for name in _unique(route.operation.tag for route in table)],
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
        "security": KEYED,
    }


@functools.cache
def document_bytes(entries: tuple[tuple[str, str, Any], ...], metrics_public: bool) -> bytes:
    return msgspec.json.encode(build_document(entries, metrics_public=metrics_public))


@public
@operation("This API as an OpenAPI 3.1 document", ok=OpenApiDocument, store=False, tag="meta")
async def openapi_document(request: web.Request) -> web.StreamResponse:
    """Generated from the same types the handlers use, for the routes this app serves; built once. Routes
    without an operation are not the API's (the dashboard under /ui answers HTML): create_app refuses
    an API route without one."""
    entries = tuple((route.method, route.resource.canonical, route.handler) for route in request.app.router.routes()
                    if route.resource is not None and declared_operation(route.handler) is not None)
    return respond_spliced(request, document_bytes(entries, request.app[SETTINGS].config.metrics.public),
                           OpenApiDocument)


ROUTES = [
    ("GET", "/openapi.json", openapi_document),
]


# ----------------------------------------------------------------------------------------- helpers


def _unique(items: Any) -> list[Any]:
    return list(dict.fromkeys(items))


def _structs(kinds: list[Any]) -> set[type[msgspec.Struct]]:
    """The Struct classes that ``kinds`` reach (fields, items, unions...)."""
    seen: set[type[msgspec.Struct]] = set()

    def visit(info: Any) -> None:
        if isinstance(info, msgspec.inspect.StructType):
            if info.cls in seen:
                return
            seen.add(info.cls)
        for name in info.__struct_fields__:
            value = getattr(info, name)
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, msgspec.inspect.Field):
                    visit(item.type)
                elif isinstance(item, msgspec.inspect.Type):
                    visit(item)

    for info in msgspec.inspect.multi_type_info(kinds):
        visit(info)
    return seen


def _require_present_fields(schema: dict[str, Any], cls: type[msgspec.Struct]) -> None:
    """Mark as required every field the encoder always writes (and drop the decoding defaults)."""
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)
    omit_defaults = cls.__struct_config__.omit_defaults
    required = []
    for field in msgspec.structs.fields(cls):
        has_default = field.default is not msgspec.NODEFAULT or field.default_factory is not msgspec.NODEFAULT
        if field.default is msgspec.UNSET or (omit_defaults and has_default):
            continue
        required.append(field.encode_name)
    schema["required"] = required


def _query_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """A query Struct's fields as query parameters."""
    params = []
    required = set(schema.get("required", ()))
    for name, prop in schema["properties"].items():
        if {"type": "null"} in prop.get("anyOf", ()):
            # parse_query converts leniently: `?name=null` would become None, which no client means.
            raise RuntimeError(f"{schema['title']}.{name}: a query field is `X | UnsetType = UNSET`, never `X | None`")
        params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return params


def _operation(route: Route, operation_id: str, schema_of: dict[Any, Any],
               query_params: dict[Any, list[dict[str, Any]]], *, metrics_public: bool) -> dict[str, Any]:
    op = route.operation
    role = route.role
    if role == METRICS_ROLE:
        role = "public" if metrics_public else "viewer"
    out: dict[str, Any] = {"operationId": operation_id, "summary": op.summary, "tags": [op.tag]}
    if op.description:
        out["description"] = op.description
    parameters = []
    for name in _PATH_PARAM.findall(route.path):
        if name not in op.path:
            raise RuntimeError(f"{route.method} {route.path}: the operation does not declare path parameter {name}")
        schema = msgspec.json.schema(op.path[name])
        param = {"name": name, "in": "path", "required": True, "schema": schema}
        if "description" in schema:
            param["description"] = schema["description"]
        parameters.append(param)
    if op.query is not None:
        parameters.extend(query_params[op.query])
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required, "content": {JSON: {"schema": schema_of[op.body]}}}

    errors = set(op.errors)
    if role != "public":
        errors.update((401, 429))  # 429: the key's rate limit (security.rate_limit)
        if role != "viewer":
            errors.add(403)
    if op.body is not None:
        errors.update((400, 413, 415))
    if op.query is not None:
        errors.add(400)
    if op.store:
        errors.add(503)
    responses: dict[str, Any] = {}
    for status in sorted(set(op.responses) | errors):
        content: dict[str, list[Any]] = {}
        for kind in op.responses.get(status, ()):
            content.setdefault(op.media_type, []).append(schema_of[kind])
        if status in errors:
            content.setdefault(JSON, []).append(schema_of[ErrorResponse])
        response: dict[str, Any] = {
            "description": STATUS_TEXT.get(status, "OK"),
            "content": {media: {"schema": alts[0] if len(alts) == 1 else {"anyOf": alts}}
                        for media, alts in content.items()},
        }
        if status in STATUS_HEADERS:
            response["headers"] = STATUS_HEADERS[status]
        responses[str(status)] = response
    out["responses"] = responses
    out["security"] = [] if role == "public" else KEYED
    out["x-secauto-role"] = role
    return out
