"""What the application and its requests carry: the typed keys under which ``create_app`` stores the
node's parts, and the caller's identity on each authenticated request.

Handlers read them as ``request.app[SYSTEM]``, ``request.get(IDENTITY)`` and so on. This module
imports no route module, so any route module may import it.
"""

from __future__ import annotations

import asyncio

import msgspec
from aiohttp import web
from redis.asyncio import Redis

from actors.audit import AuditActor
from actors.core import ActorSystem
from actors.submit_writer import SubmitWriter
from secauto.api.limits import RateLimiter
from secauto.config import ApiKey, Settings
from secauto.engine import EngineSettings
from secauto.keyring import KeyRing
from secauto.metrics import NodeMetrics
from secauto.store.apikeys import KeyStore
from secauto.store.audit import AuditStore
from secauto.store.webhooks import WebhookStore
from secauto.vault import SecretVault


class EventSource(msgspec.Struct, frozen=True):
    """Where a node's API reads events from (``GET /cluster/events``)."""

    redis: Redis
    channel: str


SETTINGS = web.AppKey("settings", Settings)
SYSTEM = web.AppKey("system", ActorSystem)
CLUSTER_MODE = web.AppKey("cluster_mode", bool)
ENGINE = web.AppKey("engine", EngineSettings)
METRICS = web.AppKey("metrics", NodeMetrics)
EVENTS = web.AppKey("events", EventSource)
WEBHOOKS = web.AppKey("webhook_store", WebhookStore)
VAULT = web.AppKey("vault", SecretVault)
# The dispatcher's submit writer: the submit routes hand it their jobs directly (no actor mailbox hop).
SUBMISSIONS = web.AppKey("submissions", SubmitWriter)
# The audit actor: the audit middleware hands it each entry directly (AuditActor.record).
AUDIT_LOG = web.AppKey("audit_log", AuditActor)
# Synchronous playbook runs (POST /playbook) in progress on this node: at most max_concurrent_jobs.
SYNC_SLOTS = web.AppKey("sync_slots", asyncio.Semaphore)

# The keys this node accepts (config + API keys, reloaded by the keys actor). Anything that holds a key
# beyond one request (dashboard sessions) re-checks it with KEYRING.identity_for_digest(digest).
KEYRING = web.AppKey("keyring", KeyRing)
KEY_STORE = web.AppKey("key_store", KeyStore)
AUDIT_STORE = web.AppKey("audit_store", AuditStore)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)

# Set by the auth middleware on requests that presented a valid key: who is calling. A public handler
# that authenticates by other means (the dashboard's login form) sets it too, for the audit trail.
IDENTITY = web.RequestKey("identity", ApiKey)
# Set by the auth middleware when the presented key is known but the request is refused (expired key,
# role too low, rate limit): the audit trail names it as the actor.
CALLER = web.RequestKey("caller", ApiKey)
# Set by a handler that knows what it acted on better than the path does (the id of a new job, the name
# of a new key): the audit entry's target.
AUDIT_TARGET = web.RequestKey("audit_target", str)
