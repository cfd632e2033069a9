"""``http_request``: one HTTP(S) request with aiohttp.

Fields: ``url`` (http or https), ``method`` (GET), ``headers``, ``json`` or ``body`` (not both),
``expect_status`` (a status or a list of them). The step's ``timeout`` bounds the whole request,
redirects and DNS included (default ``engine.http_timeout``). Without ``expect_status`` any status
below 400 succeeds. ``url``, ``headers``, ``json`` and ``body`` may use ``{{secrets.NAME}}``.

The result is ``{"status", "headers", "json"}`` when the response is JSON, else
``{"status", "headers", "text"}``. The body is capped at ``engine.max_output_bytes``. Connection errors,
timeouts, an unexpected status and an oversized body fail the step. Cancellation closes the
connection and propagates.

Outbound policy (:mod:`secauto.engine.netguard`): every host is resolved and checked before the
connection, which goes to the checked addresses only; link-local and cloud metadata addresses are
refused unless ``engine.http_allow`` names them, ``engine.http_deny`` refuses more. Redirects (up to
:data:`MAX_REDIRECTS`) are followed here, not by aiohttp, and each hop is checked the same way: 303
(and 301/302 after a POST) continue as GET without the body, 307/308 repeat the request. A redirect
to another origin (scheme, host, port) keeps only :data:`CROSS_ORIGIN_HEADERS` of the step's headers,
so credentials in ``Authorization`` or custom headers never follow it. A refusal is a step error
naming the address, raised before anything is sent. Loopback and private networks stay reachable:
playbook authors are trusted operators.

Error messages quote the URL and the response with secret values masked before they are cut.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import msgspec
from yarl import URL

from secauto.engine.actions.base import ActionCall, ActionSpec
from secauto.engine.errors import StepError
from secauto.engine.netguard import AddressRefused, OutboundGuard, PinnedResolver
from secauto.redaction import REDACTOR

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_UNSET: Any = msgspec.UNSET
MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CROSS_ORIGIN_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "content-type", "user-agent"})
QUOTE = 200


class HttpFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str
    method: Method = "GET"
    headers: dict[str, str] = {}
    json: Any = _UNSET
    body: str | None = None
    expect_status: int | list[int] | None = None


def _quote(text: str) -> str:
    """``text`` fit for a message: secret values masked, then cut."""
    return REDACTOR.text(text)[:QUOTE]


def _url_problem(url: Any) -> str | None:
    if not isinstance(url, str):
        return None  # the type check reports it
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        return f"not a valid URL: {_quote(url)!r}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"not an http(s) URL: {_quote(url)!r}"
    return None


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    data = bytearray()
    while chunk := await response.content.read(65536):
        data.extend(chunk)
        if len(data) > limit:
            raise StepError(f"the response body exceeded {limit} bytes")
    return bytes(data)


def _expected(fields: HttpFields, status: int) -> bool:
    if fields.expect_status is None:
        return status < 400
    allowed = fields.expect_status if isinstance(fields.expect_status, list) else [fields.expect_status]
    return status in allowed


class _Request(msgspec.Struct, kw_only=True):
    """What is sent to the current hop (redirects change it)."""

    method: str
    url: URL
    headers: dict[str, str]
    body: dict[str, Any]  # aiohttp's json= or data=, or nothing


def _next_hop(request: _Request, status: int, location: str, hop: int) -> _Request:
    """The request a redirect asks for; raises StepError for a location that is not http(s)."""
    try:
        target = request.url.join(URL(location))
    except ValueError:
        raise StepError(f"redirect {hop} has a bad location {_quote(location)!r}") from None
    if target.scheme not in ("http", "https") or not target.host:
        raise StepError(f"redirect {hop} to a URL that is not http(s): {_quote(str(target))!r}")
    method, body, headers = request.method, request.body, request.headers
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", {}
        headers = {key: value for key, value in headers.items() if key.lower() != "content-type"}
    if target.origin() != request.url.origin():
        headers = {key: value for key, value in headers.items() if key.lower() in CROSS_ORIGIN_HEADERS}
    return _Request(method=method, url=target, headers=headers, body=body)


class _Answer(msgspec.Struct, kw_only=True):
    """The final response, read (its body capped)."""

    status: int
    content_type: str
    headers: dict[str, str]
    charset: str
    raw: bytes


async def _send(session: aiohttp.ClientSession, resolver: PinnedResolver, request: _Request,
                limit: int) -> _Answer:
    """Send ``request``, following redirects (each hop checked, then pinned to the checked addresses).
    Raises AddressRefused for a refused hop, StepError for too many redirects or a bad location."""
    for hop in range(MAX_REDIRECTS + 1):
        try:
            await resolver.vet_and_pin(request.url)
        except AddressRefused as exc:
            where = f" redirect {hop} to {_quote(str(request.url))}" if hop else ""
            raise AddressRefused(f"refused{where}: {exc.message}") from None
        async with session.request(request.method, request.url, headers=request.headers, allow_redirects=False,
                                   **request.body) as response:
            location = response.headers.get("Location")
            if response.status in REDIRECT_STATUSES and location:
                request = _next_hop(request, response.status, location, hop + 1)
                continue
            raw = await _read_capped(response, limit)
            return _Answer(status=response.status, content_type=response.content_type,
                           headers={key: ", ".join(response.headers.getall(key)) for key in response.headers},
                           charset=response.charset or "utf-8", raw=raw)
    raise StepError(f"more than {MAX_REDIRECTS} redirects")


async def _run(call: ActionCall[HttpFields]) -> dict[str, Any]:
    fields = call.fields
    if fields.json is not _UNSET and fields.body is not None:
        raise StepError("give either 'json' or 'body', not both")
    settings = call.runtime.settings
    limit = call.step.options.timeout or settings.http_timeout
    body: dict[str, Any] = {}
    if fields.json is not _UNSET:
        body["json"] = fields.json
    elif fields.body is not None:
        body["data"] = fields.body.encode()
    target = f"{fields.method} {_quote(fields.url)}"
    resolver = PinnedResolver(OutboundGuard(settings.http_policy))
    try:
        request = _Request(method=fields.method, url=URL(fields.url), headers=dict(fields.headers), body=body)
        async with (
            asyncio.timeout(limit),
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False),
                                  timeout=aiohttp.ClientTimeout(total=None)) as session,
        ):
            answer = await _send(session, resolver, request, settings.max_output_bytes)
    except TimeoutError:
        raise StepError(f"{target} timed out after {limit:g}s") from None
    except StepError as exc:
        raise StepError(f"{target}: {exc.message}", output=exc.output) from None
    except aiohttp.ClientError as exc:
        raise StepError(f"{target} failed: {type(exc).__name__}: {_quote(str(exc))}") from None
    except ValueError as exc:  # yarl: a URL it cannot parse
        raise StepError(f"{target}: bad URL ({_quote(str(exc))})") from None
    raw, status = answer.raw, answer.status
    result: dict[str, Any] = {"status": status, "headers": answer.headers}
    try:
        text = raw.decode(answer.charset, errors="replace")
    except LookupError:  # an unknown charset name in Content-Type
        text = raw.decode("utf-8", errors="replace")
    if "json" in answer.content_type and raw.strip():
        try:
            result["json"] = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            result["text"] = text
    else:
        result["text"] = text
    if not _expected(fields, status):
        wanted = fields.expect_status if fields.expect_status is not None else "< 400"
        raise StepError(f"{target} answered {status} (expected {wanted}): {_quote(text)!r}", output=result)
    call.runtime.log.debug("{} -> {}", target, status)
    return result


ACTION = ActionSpec(
    name="http_request",
    fields=HttpFields,
    run=_run,
    own_timeout=True,
    label_field="url",
    field_checks={"url": _url_problem},
    secret_fields=("url", "headers", "json", "body"),
)
