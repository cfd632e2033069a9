"""What each route takes and answers, declared once next to its handler and used twice: by the
handlers (bodies, queries and responses go through these types) and by ``GET /openapi.json``.

A handler is declared with :func:`operation` (what it takes and answers) beside the role decorator
(:func:`secauto.api.roles.requires` and friends)::

    @requires("operator")
    @operation("Submit a job", body=JobSubmission, ok=SubmitResponse)
    async def submit_job(request): ...

and answers with :func:`respond` (a response Struct) or :func:`respond_spliced` (bytes already laid out
as the declared type). Both refuse, as a programming error, a type or status the declaration does not
name; :func:`secauto.api.inputs.read_json` and :func:`secauto.api.inputs.parse_query` likewise refuse a type
other than the declared body or query. So the document cannot drift from what the handlers do.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from secauto.api.errors import encoder

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)

JSON = "application/json"
REF_TEMPLATE = "#/components/schemas/{name}"
_OPERATION_ATTR = "__secauto_operation__"
_AUDIT_ATTR = "__secauto_audit__"


def whole(regex: str) -> str:
    """``regex`` anchored to the whole string, meaning the same to msgspec (Python's ``re``, where ``$``
    also matches before a final newline) and to JSON Schema validators (ECMA or Rust regexes)."""
    return f"^(?:{regex})(?!\\n)$"


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    """A route's contract. ``responses`` maps a status to the types its body may have (more than one
    is a union); error statuses not listed there answer an ``ErrorResponse``."""

    summary: str
    description: str | None
    tag: str
    responses: Mapping[int, tuple[Any, ...]]
    media_type: str = JSON  # of the responses listed in ``responses``
    body: Any = None  # the JSON request body's type, if the route takes one
    body_required: bool = True  # False: the body may be left out (read with read_optional_json)
    query: Any = None  # a Struct whose fields are the query parameters
    path: Mapping[str, Any] = {}  # path parameter -> type
    errors: tuple[int, ...] = ()  # error statuses besides those implied (auth, body, query, store)
    store: bool = True  # reaches the actors or Redis, so may answer 503
    # The audit trail's action name (e.g. job.cancel); None: "<METHOD> <route>"; False: the route changes
    # nothing (POST /validate), so only refused calls of it are audited. See secauto/api/middlewares.py.
    audit: str | bool | None = None


def operation(summary: str, *, ok: Any, body: Any = None, query: Any = None, path: Mapping[str, Any] | None = None,
              errors: tuple[int, ...] = (), responses: Mapping[int, Any] | None = None, media_type: str = JSON,
              tag: str | None = None, store: bool = True, description: str | None = None,
              body_required: bool = True, audit: str | bool | None = None) -> Callable[[H], H]:
    """Declare what a handler takes and answers.

    ``ok`` is the type of the 200 body; ``responses`` adds other statuses with a body of their own
    (e.g. 503 from /health). ``errors`` names error statuses beyond those that follow from the rest:
    401/403 from the role, 400 from a body or query, 413/415 from a body, 503 unless ``store=False``.
    The description defaults to the handler's docstring, the tag to its module's name.

    ``audit`` names the action in the audit trail (``job.cancel``); without it a route that is not
    GET or HEAD is audited as ``"<METHOD> <route>"``, so no state change escapes the trail. ``False``
    declares that a POST changes nothing (only its refusals are audited then).
    """
    if audit is True:
        raise ValueError("operation(audit=...): give an action name, None (the default name) or False")

    def mark(handler: H) -> H:
        extra = dict(responses or {})
        merged: dict[int, tuple[Any, ...]] = {200: (ok,)}
        for status, kind in extra.items():
            merged[status] = (*merged.get(status, ()), kind)
        doc = description if description is not None else inspect.getdoc(handler)
        setattr(handler, _OPERATION_ATTR, Operation(
            summary=summary, description=doc, tag=tag or handler.__module__.rpartition(".")[2],
            responses=merged, media_type=media_type, body=body, body_required=body_required, query=query,
            path=dict(path or {}),
            errors=tuple(sorted(set(errors))), store=store, audit=audit))
        return handler

    return mark


def declared_operation(handler: Any) -> Operation | None:
    return getattr(handler, _OPERATION_ATTR, None)


def audited(action: str | bool) -> Callable[[H], H]:
    """The audit action of a handler outside the API's operations (the dashboard's): as
    ``operation(audit=...)``. Without it such a route is audited as ``"<METHOD> <route>"`` too."""

    def mark(handler: H) -> H:
        setattr(handler, _AUDIT_ATTR, action)
        return handler

    return mark


def declared_audit(handler: Any) -> str | bool | None:
    """The audit action a handler declared (by its operation or :func:`audited`), or None."""
    op = declared_operation(handler)
    return op.audit if op is not None else getattr(handler, _AUDIT_ATTR, None)


def current_operation(request: web.Request) -> Operation:
    op = declared_operation(request.match_info.handler)
    if op is None:
        raise RuntimeError(f"{request.method} {request.path}: the route declares no operation")
    return op


def _check_response(request: web.Request, kind: Any, status: int) -> None:
    if kind not in current_operation(request).responses.get(status, ()):
        raise RuntimeError(f"{request.method} {request.match_info.route.resource!r} answered {status} with "
                           f"{getattr(kind, '__name__', kind)}, which its operation does not declare")


def respond(request: web.Request, body: msgspec.Struct, status: int = 200,
            headers: dict[str, str] | None = None) -> web.Response:
    """Encode a declared response Struct (it carries ``success`` and stamps its own ``timestamp``)."""
    _check_response(request, type(body), status)
    return web.Response(body=encoder.encode(body), status=status, content_type="application/json", headers=headers)


def respond_spliced(request: web.Request, body: bytes, declared: Any, status: int = 200) -> web.Response:
    """Answer JSON assembled from stored records without decoding them; ``declared`` is the type it
    encodes (tests decode real responses as that type)."""
    _check_response(request, declared, status)
    return web.Response(body=body, status=status, content_type="application/json")


def check_declared(request: web.Request, part: str, kind: Any) -> None:
    """Refuse (a programming error) to read a body or query as another type than the route declares."""
    declared = getattr(current_operation(request), part)
    if declared != kind:
        raise RuntimeError(f"{request.method} {request.path}: reads its {part} as {kind!r}, but declares {declared!r}")
