"""``http_request``: one HTTP(S) request with aiohttp.

Fields: ``url`` (http or https), ``method`` (GET), ``headers``, ``json`` or ``body`` (not both),
``expect_status`` (a status or a list of them). The step's ``timeout`` bounds the whole request
(default ``engine.http_timeout``). Without ``expect_status`` any status below 400 succeeds.
``url``, ``headers``, ``json`` and ``body`` may use ``{{secrets.NAME}}``.

The result is ``{"status", "headers", "json"}`` when the response is JSON, else
``{"status", "headers", "text"}``. The body is capped at ``engine.max_output_bytes``. Connection errors,
timeouts, an unexpected status and an oversized body fail the step. Cancellation closes the
connection and propagates.

Playbook authors are trusted operators: any URL reachable from the node can be requested.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import msgspec

from secauto.engine.actions.base import ActionCall, ActionSpec
from secauto.engine.errors import StepError

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_UNSET: Any = msgspec.UNSET


class HttpFields(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str
    method: Method = "GET"
    headers: dict[str, str] = {}
    json: Any = _UNSET
    body: str | None = None
    expect_status: int | list[int] | None = None


def _url_problem(url: Any) -> str | None:
    if not isinstance(url, str):
        return None  # the type check reports it
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"not an http(s) URL: {url[:200]!r}"
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


async def _run(call: ActionCall[HttpFields]) -> dict[str, Any]:
    fields = call.fields
    if fields.json is not _UNSET and fields.body is not None:
        raise StepError("give either 'json' or 'body', not both")
    settings = call.runtime.settings
    limit = call.step.options.timeout or settings.http_timeout
    kwargs: dict[str, Any] = {"headers": fields.headers}
    if fields.json is not _UNSET:
        kwargs["json"] = fields.json
    elif fields.body is not None:
        kwargs["data"] = fields.body.encode()
    target = f"{fields.method} {fields.url[:200]}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit)) as session,
            session.request(fields.method, fields.url, **kwargs) as response,
        ):
            raw = await _read_capped(response, settings.max_output_bytes)
            status, content_type = response.status, response.content_type
            headers = {key: ", ".join(response.headers.getall(key)) for key in response.headers}
            charset = response.charset or "utf-8"
    except TimeoutError:
        raise StepError(f"{target} timed out after {limit:g}s") from None
    except aiohttp.ClientError as exc:
        raise StepError(f"{target} failed: {type(exc).__name__}: {exc}") from None
    result: dict[str, Any] = {"status": status, "headers": headers}
    try:
        text = raw.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name in Content-Type
        text = raw.decode("utf-8", errors="replace")
    if "json" in content_type and raw.strip():
        try:
            result["json"] = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            result["text"] = text
    else:
        result["text"] = text
    if not _expected(fields, status):
        wanted = fields.expect_status if fields.expect_status is not None else "< 400"
        raise StepError(f"{target} answered {status} (expected {wanted}): {text[:200]!r}", output=result)
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
