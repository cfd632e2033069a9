"""The API's error type and the JSON error body of DESIGN.md section 4."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from secauto.models import utc_now


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    field: str
    message: str
    path: str | None = None


class ApiError(Exception):
    """Raised by handlers and middlewares; rendered as ``{"success": false, "error": {...}}``."""

    def __init__(self, status: int, code: str, message: str, details: list[ErrorDetail] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}


_encoder = msgspec.json.Encoder()


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``body`` plus ``timestamp`` as a JSON response (``success`` is the caller's)."""
    body.setdefault("timestamp", utc_now())
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json",
                        headers=headers)


def error_response(error: ApiError) -> web.Response:
    body = {
        "success": False,
        "error": {"code": error.code, "message": error.message,
                  "details": [msgspec.to_builtins(detail) for detail in error.details]},
    }
    return json_response(body, status=error.status, headers=error.headers)


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
