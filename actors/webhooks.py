"""WebhookActor: delivers cluster events to webhooks.

Each delivery is a JSON POST of the event (the exact bytes published on the event channel) with
``X-SecAuto-Event`` (its type), ``X-SecAuto-Delivery`` (a unique id), ``X-SecAuto-Timestamp`` (Unix
seconds) and, for a webhook with a secret, ``X-SecAuto-Signature: sha256=<hex HMAC-SHA256 of
"timestamp.body">``. TLS certificates are verified. A failure or non-2xx answer is retried
``retries`` times with exponential backoff (1 s, 2 s, 4 s ... capped at 60 s). Every node hears every
event; a Redis ``SET NX`` per (webhook, event) lets exactly one of them deliver it.

The actor subscribes to the event channel only while at least one webhook exists. Webhooks come from
``config.yaml`` and from the API (stored in Redis, re-read every few seconds and at once after a change
on this node). Deliveries run in an aiojobs scheduler (at most 32 at a time, 10,000 waiting; beyond
that new deliveries are dropped with an error log). Secrets and URLs' query strings are never logged.
Secret values known to this node are masked in the body (and so in the signature) before delivery;
the claim uses the event as published, so every node claims the same delivery.

Deliveries obey the same outbound policy as ``http_request`` (``engine.http_allow`` / ``http_deny``,
:mod:`secauto.engine.netguard`): before each attempt the webhook's host is resolved and every address
checked, and the connection goes to those addresses (pinned: no second lookup that DNS rebinding could
answer differently), so a webhook cannot reach link-local or cloud metadata addresses. Redirects are not
followed (a 3xx answer is a failed attempt), so no hop escapes the check. A refused address is not
retried: the delivery fails at once with an error log naming it; a host that does not resolve is an
ordinary failed attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import aiojobs
import msgspec
from loguru import logger
from yarl import URL

from actors.context import NodeContext
from actors.core import Actor
from secauto.engine.errors import StepError
from secauto.engine.netguard import AddressRefused, OutboundGuard, PinnedResolver
from secauto.models import Event, event_decoder
from secauto.redaction import REDACTOR
from secauto.store.connection import REDIS_UNAVAILABLE
from secauto.store.events import RESUBSCRIBED, subscribe
from secauto.store.webhooks import WebhookSpec, WebhookStore

REFRESH_S = 5.0
BACKOFF_CAP_S = 60.0


class RefreshWebhooks(msgspec.Struct, frozen=True):
    """Tell or timer: re-read the stored webhooks."""


class ListWebhooks(msgspec.Struct, frozen=True):
    """Ask: every webhook this node delivers to (config and API)."""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-SecAuto-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``timestamp.body``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _where(url: str) -> str:
    """A URL fit for logs: scheme, host and path, without credentials or query (they may be secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


class WebhookActor(Actor):
    def __init__(self, ctx: NodeContext, store: WebhookStore, configured: list[WebhookSpec]) -> None:
        self.ctx = ctx
        self.store = store
        self.configured = configured
        self.hooks: list[WebhookSpec] = list(configured)
        self._session: aiohttp.ClientSession | None = None
        self._resolver: PinnedResolver | None = None
        self._scheduler: aiojobs.Scheduler | None = None
        self._listener: asyncio.Task[None] | None = None
        self.log = logger.bind(component="webhooks", node_id=ctx.node_id)

    async def on_start(self) -> None:
        # Each attempt pins the addresses it checked (see _post); no DNS cache besides those pins.
        self._resolver = PinnedResolver(OutboundGuard(self.ctx.engine.http_policy))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=self._resolver, use_dns_cache=False))
        self._scheduler = aiojobs.Scheduler(limit=32, pending_limit=10_000, close_timeout=2.0)
        self.start_timer("refresh", REFRESH_S, RefreshWebhooks(), initial_delay=0.0)
        self._listener = None
        self._follow_events()

    async def on_stop(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.close()  # deliveries still retrying are given up at shutdown
            self._scheduler = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def receive(self, message: Any) -> Any:
        match message:
            case RefreshWebhooks():
                await self._refresh()
            case ListWebhooks():
                return list(self.hooks)
            case _:
                raise TypeError(f"webhooks got an unexpected message {message!r}")
        return None

    async def _refresh(self) -> None:
        try:
            stored = await self.store.all()
        except REDIS_UNAVAILABLE as exc:
            self.log.warning("cannot read stored webhooks ({}); keeping the current list", exc)
            return
        self.hooks = [*self.configured, *stored]
        self._follow_events()

    def _follow_events(self) -> None:
        """Subscribe while there are webhooks; unsubscribe when the last one is gone."""
        if self.hooks and self._listener is None:
            self._listener = self.run_task(self._listen(), name="webhook-events")
        elif not self.hooks and self._listener is not None:
            self._listener.cancel()
            self._listener = None

    async def _listen(self) -> None:
        async for payload in subscribe(self.ctx.queue.redis, self.ctx.queue.keys.channel, component="webhooks"):
            if payload == RESUBSCRIBED:
                continue
            event = event_decoder.decode(payload)
            for hook in self.hooks:
                if not hook.events or event.type in hook.events:
                    await self._schedule(hook, event, payload)

    async def _schedule(self, hook: WebhookSpec, event: Event, payload: bytes) -> None:
        scheduler = self._scheduler
        if scheduler is None:
            return
        if scheduler.pending_count >= scheduler.pending_limit:
            self.log.error("webhook {}: {} deliveries waiting; dropping {} {}", hook.id, scheduler.pending_count,
                           event.type, event.job_id or "")
            self.ctx.metrics.webhook_deliveries.labels(outcome="dropped").inc()
            return
        await scheduler.spawn(self._deliver(hook, event, payload))

    @contextlib.asynccontextmanager
    async def _post(self, hook: WebhookSpec, payload: bytes, headers: dict[str, str]
                    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST to ``hook.url`` once its host passed the outbound policy (see the module docstring);
        raises AddressRefused, StepError (no such host), aiohttp.ClientError or TimeoutError."""
        assert self._session is not None and self._resolver is not None
        url = URL(hook.url)
        async with asyncio.timeout(hook.timeout):
            await self._resolver.vet_and_pin(url)
            async with self._session.post(url, data=payload, headers=headers, allow_redirects=False) as response:
                yield response

    async def _deliver(self, hook: WebhookSpec, event: Event, payload: bytes) -> None:
        """Deliver one event to one webhook, if this node wins the claim; retry with backoff."""
        try:
            if not await self.store.claim_delivery(hook.id, payload, self.ctx.node_id):
                return  # another node delivers this one
        except REDIS_UNAVAILABLE as exc:
            self.log.warning("webhook {}: cannot claim {} ({}); another node may deliver it", hook.id,
                             event.type, exc)
            return
        assert self._session is not None
        payload = REDACTOR.json_bytes(payload)
        delivery = uuid.uuid4().hex
        log = self.log.bind(job_id=event.job_id, webhook=hook.id, delivery=delivery)
        metrics = self.ctx.metrics.webhook_deliveries
        problem = ""
        for attempt in range(hook.retries + 1):
            if attempt:
                metrics.labels(outcome="retried").inc()
                await asyncio.sleep(min(BACKOFF_CAP_S, 2.0 ** (attempt - 1)))
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "User-Agent": "secauto-webhooks",
                       "X-SecAuto-Event": event.type, "X-SecAuto-Delivery": delivery,
                       "X-SecAuto-Timestamp": timestamp}
            if hook.secret:
                headers["X-SecAuto-Signature"] = signature(hook.secret, timestamp, payload)
            try:
                async with self._post(hook, payload, headers) as response:
                    if 200 <= response.status < 300:
                        metrics.labels(outcome="delivered").inc()
                        log.info("webhook delivered: {} to {} ({}, attempt {})", event.type, _where(hook.url),
                                 response.status, attempt + 1)
                        return
                    problem = f"HTTP {response.status}"
            except AddressRefused as exc:  # the policy will not change between attempts
                metrics.labels(outcome="failed").inc()
                log.error("webhook delivery of {} to {} refused by the outbound policy: {}", event.type,
                          _where(hook.url), exc.message)
                return
            except (aiohttp.ClientError, TimeoutError, StepError) as exc:  # StepError: the host does not resolve
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning("webhook delivery of {} to {} failed ({}), attempt {} of {}", event.type, _where(hook.url),
                        problem, attempt + 1, hook.retries + 1)
        metrics.labels(outcome="failed").inc()
        log.error("webhook delivery of {} to {} given up after {} attempts ({})", event.type, _where(hook.url),
                  hook.retries + 1, problem)
