"""Reading what a request sends: JSON bodies and query parameters as typed Structs.

Both refuse, as a programming error, a type other than the one the route's operation declares (so
``GET /openapi.json`` cannot drift from what handlers read), and turn every client mistake into an
:class:`~secauto.api.errors.ApiError` (400 naming the field, 413, 415).
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

import msgspec
from aiohttp import web

from secauto.api.errors import ApiError, ErrorDetail
from secauto.api.spec import check_declared

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


async def read_optional_json(request: web.Request, body_type: type[T], default: T) -> T:
    """:func:`read_json` for a route whose body may be left out: ``default`` when there is none."""
    if not request.body_exists:
        check_declared(request, "body", body_type)
        return default
    body: T = await read_json(request, body_type)
    return body


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
    """msgspec's message (``Expected `int`, got `str` - at `$.jobs[1].priority```) as a detail naming
    the field (``jobs[1].priority``) and its JSON path."""
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
    elif message.startswith("Object missing required field"):
        name = message.split("`")[1]
        path = f"{path}.{name}"
        message = "required field missing"
    field = path.removeprefix("$").lstrip(".") or "$"
    return ErrorDetail(field=field, message=message, path=path)
