"""The API's error type and the JSON error body of the README ("HTTP API")."""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from secauto.engine import Problem
from secauto.models import utc_now


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    """One problem: the field (``jobs[1].priority``), what is wrong, and the JSON path when known."""

    field: str
    message: str
    path: str | None = None


def body_detail(field: str, message: str) -> ErrorDetail:
    """A problem with a top-level field of the request body: ``field`` and its path ``$.field``."""
    return ErrorDetail(field=field, message=message, path=f"$.{field}")


def playbook_details(problems: list[Problem], field: str = "playbook") -> list[ErrorDetail]:
    """Validation problems of the playbook in the body's ``field`` (``playbook`` or ``playbook_name``).

    ``path`` is the problem's path inside the playbook (``$[1].script``), as ``POST /validate`` and
    ``secauto validate`` show it; ``field`` is where that is in the body (``playbook[1].script``; a named
    playbook's problems are all under ``playbook_name``). Problems of the context (the engine names them
    ``context``) are the body's ``context``.
    """
    details = []
    for problem in problems:
        if not problem.path.startswith("$"):
            details.append(body_detail(problem.path, problem.message))
        elif field == "playbook":
            details.append(ErrorDetail(field=field + problem.path[1:], message=problem.message, path=problem.path))
        else:
            details.append(ErrorDetail(field=field, message=problem.message, path=problem.path))
    return details


class ErrorBody(msgspec.Struct, kw_only=True):
    code: str  # validation_error, unauthorized, forbidden, not_found, conflict, unavailable, ...
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(msgspec.Struct, kw_only=True):
    """Every error: ``{"success": false, "error": {"code", "message", "details"}, "timestamp"}``."""

    success: Literal[False] = False
    error: ErrorBody
    timestamp: str = msgspec.field(default_factory=utc_now)


class ApiError(Exception):
    """Raised by handlers and middlewares; rendered as an :class:`ErrorResponse`."""

    def __init__(self, status: int, code: str, message: str, details: list[ErrorDetail] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}


encoder = msgspec.json.Encoder()
# Seconds a client should wait after a 503 (Redis unreachable, node busy or stopping).
RETRY_AFTER_S = "5"


def encoded_response(body: msgspec.Struct, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``body`` (a response Struct, which stamps its own ``timestamp``) as a JSON response."""
    return web.Response(body=encoder.encode(body), status=status, content_type="application/json", headers=headers)


def error_response(error: ApiError) -> web.Response:
    body = ErrorResponse(error=ErrorBody(code=error.code, message=error.message, details=error.details))
    return encoded_response(body, status=error.status, headers=error.headers)


# Status codes aiohttp raises itself, mapped to our error codes.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "unavailable",
}
