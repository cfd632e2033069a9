"""API keys and roles.

Keys arrive as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. Only SHA-256 digests of the
configured keys are kept; a presented key is hashed and compared with every configured digest in
constant time (no early exit), so neither timing nor length reveals anything.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from aiohttp import web

from secauto.config import ApiKey, Role

ROLE_RANK: dict[Role, int] = {"viewer": 0, "operator": 1, "admin": 2}


def presented_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = request.headers.get("X-API-Key", "").strip()
    return api_key or None


def key_digest(key: str) -> bytes:
    """The SHA-256 of a presented key: what is compared, and what a dashboard session keeps."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def authenticate(key: str, keys: Sequence[ApiKey]) -> ApiKey | None:
    """The identity of a presented key, or None."""
    return identity_for_digest(key_digest(key), keys)


def identity_for_digest(digest: bytes, keys: Sequence[ApiKey]) -> ApiKey | None:
    """The identity whose key has this SHA-256, or None (unknown, revoked or expired key). Dashboard
    sessions call this on every request, so a key that stops being valid ends its sessions."""
    match: ApiKey | None = None
    for candidate in keys:
        if hmac.compare_digest(digest, candidate.sha256):
            match = candidate
    return match


def allows(granted: Role, required: Role) -> bool:
    return ROLE_RANK[granted] >= ROLE_RANK[required]
