"""API keys and roles.

Keys arrive as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. Only SHA-256 digests of keys are
kept (config keys once loaded, API keys in Redis); a presented key is hashed and looked up in the
node's :class:`~secauto.keyring.KeyRing` (memory only, no Redis call per request).

For code that authenticates a key once and holds on to it (the dashboard's sessions):
:func:`authenticate` at login, keep :func:`key_digest`, then :func:`identity_for_digest` on every later
request, which answers None as soon as the key is revoked (on any node) or expired.
"""

from __future__ import annotations

from aiohttp import web

from secauto.config import ApiKey, Role
from secauto.keyring import KeyRing, digest_of

ROLE_RANK: dict[Role, int] = {"viewer": 0, "operator": 1, "admin": 2}


def presented_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = request.headers.get("X-API-Key", "").strip()
    return api_key or None


def key_digest(key: str) -> bytes:
    """The SHA-256 of a presented key: what is looked up, and what a dashboard session keeps."""
    return digest_of(key)


def authenticate(key: str, keyring: KeyRing) -> ApiKey | None:
    """The valid key ``key`` is (None if unknown, revoked or expired)."""
    return keyring.identity_for_digest(digest_of(key))


def identity_for_digest(digest: bytes, keyring: KeyRing) -> ApiKey | None:
    """The identity whose key has this SHA-256, or None (unknown, revoked or expired key). Dashboard
    sessions call this on every request, so a key that stops being valid ends its sessions on every
    node (within the keys actor's reload bound, a second)."""
    return keyring.identity_for_digest(digest)


def allows(granted: Role, required: Role) -> bool:
    return ROLE_RANK[granted] >= ROLE_RANK[required]
