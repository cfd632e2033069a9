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

from actors.core import ActorSystem
from secauto.config import ApiKey, Settings
from secauto.engine import EngineSettings
from secauto.metrics import NodeMetrics
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
# Synchronous playbook runs (POST /playbook) in progress on this node: at most max_concurrent_jobs.
SYNC_SLOTS = web.AppKey("sync_slots", asyncio.Semaphore)

# Set by the auth middleware on requests that presented a valid key: who is calling.
IDENTITY = web.RequestKey("identity", ApiKey)
