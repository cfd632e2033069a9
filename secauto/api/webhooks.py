"""Webhooks, for admins: ``POST /webhooks``, ``GET /webhooks``, ``DELETE /webhooks/{id}``.

Webhooks added here are stored in Redis, so every node delivers to them (each event once, by one
node). Webhooks from ``config.yaml`` are listed too but cannot be deleted here. Secrets are accepted
but never returned: responses say ``has_secret``.
"""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from actors.webhooks import ListWebhooks, RefreshWebhooks
from secauto.api.app import SYSTEM, read_json, requires
from secauto.api.errors import ApiError, ErrorDetail, json_response
from secauto.models import EVENT_TYPES, utc_now
from secauto.store.webhooks import WebhookSpec, WebhookStore

WEBHOOKS = web.AppKey("webhook_store", WebhookStore)

EventType = Annotated[str, msgspec.Meta(max_length=40)]


class WebhookBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(min_length=8, max_length=2000)]
    events: Annotated[list[EventType], msgspec.Meta(max_length=20)] = []
    secret: Annotated[str, msgspec.Meta(max_length=200)] = ""
    timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 10.0
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 3


@requires("admin")
async def add_webhook(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, WebhookBody)
    parts = urlsplit(body.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "validation_error", "url must be an http:// or https:// URL",
                       [ErrorDetail(field="url", message="must be an http:// or https:// URL", path="$.url")])
    for index, kind in enumerate(body.events):
        if kind not in EVENT_TYPES:
            raise ApiError(400, "validation_error", f"unknown event type {kind!r}",
                           [ErrorDetail(field=f"events[{index}]", path=f"$.events[{index}]",
                                        message=f"unknown event type; known: {', '.join(sorted(EVENT_TYPES))}")])
    spec = WebhookSpec(id=f"wh-{secrets.token_hex(8)}", url=body.url, events=list(body.events), secret=body.secret,
                       timeout=body.timeout, retries=body.retries, source="api", created_at=utc_now())
    await request.app[WEBHOOKS].add(spec)
    request.app[SYSTEM].get("webhooks").tell(RefreshWebhooks())
    return json_response({"success": True, "webhook": spec.public()})


@requires("admin")
async def list_webhooks(request: web.Request) -> web.StreamResponse:
    request.app[SYSTEM].get("webhooks").tell(RefreshWebhooks())
    hooks: list[WebhookSpec] = await request.app[SYSTEM].get("webhooks").ask(ListWebhooks(), timeout=5.0)
    return json_response({"success": True, "webhooks": [hook.public() for hook in hooks]})


@requires("admin")
async def delete_webhook(request: web.Request) -> web.StreamResponse:
    webhook_id = request.match_info["webhook_id"]
    if webhook_id.startswith("config-"):
        raise ApiError(409, "conflict", f"webhook {webhook_id} comes from config.yaml; remove it there")
    if not await request.app[WEBHOOKS].delete(webhook_id):
        raise ApiError(404, "not_found", f"no webhook {webhook_id[:100]!r}")
    request.app[SYSTEM].get("webhooks").tell(RefreshWebhooks())
    return json_response({"success": True, "webhook_id": webhook_id, "deleted": True})


ROUTES = [
    ("POST", "/webhooks", add_webhook),
    ("GET", "/webhooks", list_webhooks),
    ("DELETE", "/webhooks/{webhook_id}", delete_webhook),
]
