"""API keys at run time, for admins: ``POST /keys``, ``GET /keys``, ``DELETE /keys/{name}``.

A new key is answered once and stored only as its SHA-256 digest (in Redis, so every node accepts
it). Deleting one revokes it on every node within a second (see ``actors/keys.py``). Keys from
``config.yaml`` are listed (source ``config``) but cannot be deleted here (409); names are unique
across both sources.
"""

from __future__ import annotations

import datetime
import secrets
import time
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from actors.keys import ReloadKeys
from secauto.api.errors import ApiError, ErrorDetail
from secauto.api.inputs import read_json
from secauto.api.roles import requires
from secauto.api.spec import operation, respond, whole
from secauto.api.state import AUDIT_TARGET, IDENTITY, KEY_STORE, KEYRING, SYSTEM
from secauto.config import ApiKey, KeySource, MaxPending, RateLimit, Role
from secauto.keyring import digest_of
from secauto.models import format_timestamp, utc_now
from secauto.store.apikeys import StoredKey

KeyName = Annotated[str, msgspec.Meta(pattern=whole(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"),
                                      description="a key name: letters, digits, . _ - (up to 64)")]
# Generated keys: 256 random bits, with a prefix that secret scanners and people can recognise.
KEY_PREFIX = "secauto_"


class KeyBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /keys``."""

    name: KeyName
    role: Role
    expires_at: Annotated[datetime.datetime, msgspec.Meta(tz=True)] | None = None  # RFC 3339 with a time zone
    rate_limit: RateLimit | None = None  # overrides security.rate_limit for this key
    max_pending: MaxPending | None = None  # jobs waiting, pending or running that this key submitted


class RateLimitView(msgspec.Struct, kw_only=True):
    per_second: float
    burst: int


class KeyView(msgspec.Struct, kw_only=True):
    """A key as the API shows it: never the key itself."""

    name: str
    role: Role
    source: KeySource  # config (config.yaml: not deletable here) or api
    created_at: str | None  # null for config keys
    created_by: str | None  # the admin key that made it (api keys)
    expires_at: str | None  # RFC 3339 UTC; null: never
    expired: bool
    last_used_at: str | None  # cluster-wide, up to a few seconds late (usage is written in batches)
    rate_limit: RateLimitView | None  # null: security.rate_limit applies
    max_pending: int | None  # null: no quota


class KeyCreatedResponse(msgspec.Struct, kw_only=True):
    """The new key, shown this once: store it now."""

    success: Literal[True] = True
    api_key: str
    key: KeyView
    timestamp: str = msgspec.field(default_factory=utc_now)


class KeyListResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    keys: list[KeyView]  # config keys first, then API keys by name
    timestamp: str = msgspec.field(default_factory=utc_now)


class KeyDeletedResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    name: str
    deleted: Literal[True] = True
    timestamp: str = msgspec.field(default_factory=utc_now)


def _time(epoch: float | None) -> str | None:
    return format_timestamp(epoch) if epoch is not None else None


def _view(key: ApiKey, *, created_at: str | None, created_by: str | None, last_used: float | None,
          now: float) -> KeyView:
    return KeyView(name=key.name, role=key.role, source=key.source, created_at=created_at, created_by=created_by,
                   expires_at=_time(key.expires_at), expired=key.expired(now), last_used_at=_time(last_used),
                   rate_limit=RateLimitView(per_second=key.rate_limit.per_second, burst=key.rate_limit.burst)
                   if key.rate_limit is not None else None, max_pending=key.max_pending)


def _expiry(body: KeyBody, now: float) -> float | None:
    if body.expires_at is None:
        return None
    try:
        expires = body.expires_at.timestamp()
    except (OverflowError, ValueError):
        expires = float("-inf")
    if expires <= now:
        raise ApiError(400, "validation_error", "expires_at must be in the future",
                       [ErrorDetail(field="expires_at", message="must be in the future", path="$.expires_at")])
    return expires


@requires("admin")
@operation("Create an API key (answered once; stored only as a hash)", body=KeyBody, ok=KeyCreatedResponse,
           errors=(409,), audit="key.create",
           description="Every node accepts the key at once. The key is in this answer and nowhere else: "
                       "409 if a key (from config.yaml or the API) already has the name.")
async def create_key(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, KeyBody)
    request[AUDIT_TARGET] = body.name
    now = time.time()
    expires_at = _expiry(body, now)
    keyring = request.app[KEYRING]
    if body.name in keyring.config_names:
        raise ApiError(409, "conflict", f"a key from config.yaml is named {body.name!r}")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    identity = request.get(IDENTITY)
    stored = StoredKey(name=body.name, sha256=digest_of(secret).hex(), role=body.role, created_at=utc_now(),
                       created_by=identity.name if identity is not None else None, expires_at=expires_at,
                       rate_limit=body.rate_limit, max_pending=body.max_pending)
    if not await request.app[KEY_STORE].create(stored):
        raise ApiError(409, "conflict", f"a key named {body.name!r} exists; delete it first")
    await request.app[SYSTEM].get("keys").ask(ReloadKeys(), timeout=5.0)
    view = _view(stored.as_api_key(), created_at=stored.created_at, created_by=stored.created_by, last_used=None,
                 now=now)
    return respond(request, KeyCreatedResponse(api_key=secret, key=view))


@requires("admin")
@operation("API keys: name, role, source, created_at, last_used_at (never the keys)", ok=KeyListResponse)
async def list_keys(request: web.Request) -> web.StreamResponse:
    """Read from Redis (not this node's copy), so the list is current; ``last_used_at`` is the newest
    of the cluster-wide record and this node's uses not written yet."""
    store, keyring = request.app[KEY_STORE], request.app[KEYRING]
    _, stored = await store.load()
    usage = {name: ms / 1000 for name, ms in (await store.usage()).items()}
    for name, when in keyring.pending_usage().items():
        usage[name] = max(when, usage.get(name, 0.0))
    now = time.time()
    views = [_view(key, created_at=None, created_by=None, last_used=usage.get(key.name), now=now)
             for key in keyring.config_keys]
    for item in stored:
        if item.name in keyring.config_names:
            continue  # shadowed by a config key (logged by the keys actor)
        try:
            key = item.as_api_key()
        except ValueError:
            continue  # malformed record, refused by every node (logged by the keys actor)
        views.append(_view(key, created_at=item.created_at, created_by=item.created_by, last_used=usage.get(item.name),
                           now=now))
    return respond(request, KeyListResponse(keys=views))


@requires("admin")
@operation("Revoke an API key on every node", ok=KeyDeletedResponse, path={"name": KeyName}, errors=(404, 409),
           audit="key.delete",
           description="The key is refused by this node when this answers and by every node within a second. "
                       "404 for an unknown name, 409 for a key from config.yaml.")
async def delete_key(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name in request.app[KEYRING].config_names:
        raise ApiError(409, "conflict", f"key {name!r} comes from config.yaml; remove it there")
    if not await request.app[KEY_STORE].delete(name):
        raise ApiError(404, "not_found", f"no API key named {name[:100]!r}")
    await request.app[SYSTEM].get("keys").ask(ReloadKeys(), timeout=5.0)
    return respond(request, KeyDeletedResponse(name=name))


ROUTES = [
    ("POST", "/keys", create_key),
    ("GET", "/keys", list_keys),
    ("DELETE", "/keys/{name}", delete_key),
]
