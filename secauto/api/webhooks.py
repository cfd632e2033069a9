"""Webhooks, for admins: ``POST /webhooks``, ``GET /webhooks``, ``DELETE /webhooks/{id}``.

Webhooks added here are stored in Redis, so every node delivers to them (each event once, by one
node). Webhooks from ``config.yaml`` are listed too but cannot be deleted here. Secrets are accepted
but never returned: responses say ``has_secret``.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from actors.webhooks import ListWebhooks, RefreshWebhooks
from secauto.api.errors import ApiError, ErrorDetail
from secauto.api.inputs import read_json
from secauto.api.roles import requires
from secauto.api.spec import operation, respond
from secauto.api.state import AUDIT_TARGET, SYSTEM, WEBHOOKS
from secauto.models import EVENT_TYPES, utc_now
from secauto.store.webhooks import WebhookSpec

EventType = Annotated[str, msgspec.Meta(max_length=40)]


class WebhookBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(min_length=8, max_length=2000)]
    events: Annotated[list[EventType], msgspec.Meta(max_length=20)] = []
    secret: Annotated[str, msgspec.Meta(max_length=200)] = ""
    timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 10.0
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3


WebhookId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class WebhookView(msgspec.Struct, kw_only=True):
    """A webhook as the API shows it: its secret replaced by whether there is one."""

    id: str
    url: str
    events: list[str]  # empty: every event
    timeout: float
    retries: int
    source: str  # api (stored in Redis, deletable here) or config (config.yaml)
    created_at: str | None
    has_secret: bool

    @classmethod
    def of(cls, spec: WebhookSpec) -> WebhookView:
        return cls(id=spec.id, url=spec.url, events=list(spec.events), timeout=spec.timeout, retries=spec.retries,
                   source=spec.source, created_at=spec.created_at, has_secret=bool(spec.secret))


class WebhookResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    webhook: WebhookView
    timestamp: str = msgspec.field(default_factory=utc_now)


class WebhookListResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    webhooks: list[WebhookView]
    timestamp: str = msgspec.field(default_factory=utc_now)


class WebhookDeletedResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    webhook_id: str
    deleted: Literal[True] = True
    timestamp: str = msgspec.field(default_factory=utc_now)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook's URL (None if it can)."""
    if any(char.isspace() or not char.isprintable() for char in url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    return None


@requires("admin")
@operation("Add a webhook (stored in Redis: every node delivers to it)", body=WebhookBody, ok=WebhookResponse,
           audit="webhook.create")
async def add_webhook(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, WebhookBody)
    problem = url_problem(body.url)
    if problem is not None:
        raise ApiError(400, "validation_error", f"url {problem}", [ErrorDetail(field="url", message=problem,
                                                                               path="$.url")])
    for index, kind in enumerate(body.events):
        if kind not in EVENT_TYPES:
            raise ApiError(400, "validation_error", f"unknown event type {kind!r}",
                           [ErrorDetail(field=f"events[{index}]", path=f"$.events[{index}]",
                                        message=f"unknown event type; known: {', '.join(sorted(EVENT_TYPES))}")])
    spec = WebhookSpec(id=f"wh-{secrets.token_hex(8)}", url=body.url, events=list(body.events), secret=body.secret,
                       timeout=body.timeout, retries=body.retries, source="api", created_at=utc_now())
    request[AUDIT_TARGET] = spec.id
    await request.app[WEBHOOKS].add(spec)
    request.app[SYSTEM].get("webhooks").tell(RefreshWebhooks())
    return respond(request, WebhookResponse(webhook=WebhookView.of(spec)))


@requires("admin")
@operation("Webhooks, from the API and from config.yaml", ok=WebhookListResponse)
async def list_webhooks(request: web.Request) -> web.StreamResponse:
    request.app[SYSTEM].get("webhooks").tell(RefreshWebhooks())
    hooks: list[WebhookSpec] = await request.app[SYSTEM].get("webhooks").ask(ListWebhooks(), timeout=5.0)
    return respond(request, WebhookListResponse(webhooks=[WebhookView.of(hook) for hook in hooks]))


@requires("admin")
@operation("Delete a webhook added through the API", ok=WebhookDeletedResponse, path={"webhook_id": WebhookId},
           errors=(404, 409), audit="webhook.delete",
           description="404 for an unknown id, 409 for a webhook from config.yaml.")
async def delete_webhook(request: web.Request) -> web.StreamResponse:
    webhook_id = request.match_info["webhook_id"]
    if webhook_id.startswith("config-"):
        raise ApiError(409, "conflict", f"webhook {webhook_id} comes from config.yaml; remove it there")
    if not await request.app[WEBHOOKS].delete(webhook_id):
        raise ApiError(404, "not_found", f"no webhook {webhook_id[:100]!r}")
    request.app[SYSTEM].get("webhooks").tell(RefreshWebhooks())
    return respond(request, WebhookDeletedResponse(webhook_id=webhook_id))


ROUTES = [
    ("POST", "/webhooks", add_webhook),
    ("GET", "/webhooks", list_webhooks),
    ("DELETE", "/webhooks/{webhook_id}", delete_webhook),
]
