"""Errors under ``/ui`` are HTML pages, never the API's JSON body and never a traceback.

:func:`error_pages` is the dashboard app's outermost middleware: a :class:`PageError`, aiohttp's own
HTTP errors (404, 405, 413...), the API's ``ApiError`` (from shared readers), a Redis outage or a busy
actor each become a page with the right status code and headers (``Retry-After``, ``Allow``); anything
else is logged and answered 500.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import msgspec
from aiohttp import web
from loguru import logger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actors.core import ActorDeadError, AskTimeoutError
from secauto.api.errors import RETRY_AFTER_S, ApiError
from secauto.api.inputs import validation_detail
from secauto.ui.access import Handler
from secauto.ui.render import render

T = TypeVar("T")

TITLES = {400: "Bad request", 401: "Not logged in", 403: "Forbidden", 404: "Not found",
          405: "Method not allowed", 409: "Conflict", 413: "Request too large", 429: "Too many attempts",
          500: "Internal error", 503: "Unavailable"}
_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate", "HX-Redirect")


class PageError(Exception):
    """Raised by dashboard handlers: rendered as an error page with this status, message and headers."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def error_page(request: web.Request, status: int, message: str,
               headers: Mapping[str, str] | None = None) -> web.Response:
    title = TITLES.get(status, "Error")
    return render(request, "error.html", {"status": status, "title": title, "message": message},
                  status=status, headers=headers)


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure of a dashboard request as an HTML page."""
    try:
        return await handler(request)
    except PageError as exc:
        return error_page(request, exc.status, exc.message, exc.headers)
    except ApiError as exc:
        details = "; ".join(f"{detail.field}: {detail.message}" for detail in exc.details)
        return error_page(request, exc.status, f"{exc.message} ({details})" if details else exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = "the request body is too large" if exc.status == 413 else exc.reason
        kept = {name: exc.headers[name] for name in _KEPT_HEADERS if name in exc.headers}
        return error_page(request, exc.status, message, kept)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        logger.bind(component="ui").warning("Redis unavailable during {} {}: {}", request.method, request.path, exc)
        return error_page(request, 503, "The job store (Redis) is unreachable; try again in a few seconds.",
                          {"Retry-After": RETRY_AFTER_S})
    except (ActorDeadError, AskTimeoutError):
        return error_page(request, 503, "The node is busy or shutting down; try again in a few seconds.",
                          {"Retry-After": RETRY_AFTER_S})
    except Exception:
        logger.bind(component="ui").exception("unhandled error in {} {}", request.method, request.path)
        return error_page(request, 500, "Internal error; the node's log has the details.")


def read_query(request: web.Request, query_type: type[T]) -> T:
    """The query string as a typed Struct; empty fields (an HTML form's blank inputs) count as not given.
    Raises PageError 400 naming the parameter."""
    try:
        return msgspec.convert({name: value for name, value in request.query.items() if value != ""}, query_type,
                               strict=False)
    except msgspec.ValidationError as exc:
        detail = validation_detail(exc)
        raise PageError(400, f"{detail.field}: {detail.message}") from None
