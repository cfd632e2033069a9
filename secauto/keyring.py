"""The keys a node accepts, in memory: the config keys plus the last loaded copy of the API keys.

Authentication never reads Redis: the keys actor (``actors/keys.py``) replaces the API keys whenever
they change (a control-channel notice, or a version counter it polls every
:data:`~actors.keys.CHECK_INTERVAL_S`), and this object answers lookups from a dict keyed by SHA-256
digest. Presented keys are hashed before the lookup, so the lookup's timing depends on digests, which
an attacker cannot steer towards a valid key. Expiry is checked at every lookup against the cached
``expires_at``, so an expired key is refused at once on every node, with no reload.

``last_used_at`` is kept here per key name (one dict assignment per request); the keys actor flushes
the changed entries every :data:`~actors.keys.USAGE_FLUSH_S` seconds in one ``ZADD GT``.

Ownership: the keys actor is the only writer of the key set; the API reads it and records usage.
Both run on the node's event loop, so no lock is needed; the key set is replaced whole, never edited.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable

from secauto.config import ApiKey

Clock = Callable[[], float]


def digest_of(key: str) -> bytes:
    """The SHA-256 digest under which a key is stored and looked up."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class KeyRing:
    """Config keys (fixed) and API keys (replaced by the keys actor), looked up by digest."""

    def __init__(self, config_keys: Iterable[ApiKey], *, clock: Clock = time.time) -> None:
        self.config_keys: tuple[ApiKey, ...] = tuple(config_keys)
        self.config_names = frozenset(key.name for key in self.config_keys)
        self.clock = clock
        self.version = -1  # of the API keys loaded; -1 before the first load
        self._api_keys: tuple[ApiKey, ...] = ()
        self._by_digest: dict[bytes, ApiKey] = {}
        self._last_used: dict[str, float] = {}  # name -> Unix seconds, since the last flush
        self._rebuild()

    def _rebuild(self) -> None:
        by_digest = {key.sha256: key for key in self._api_keys}
        by_digest.update((key.sha256, key) for key in self.config_keys)  # config wins
        self._by_digest = by_digest

    def replace_api_keys(self, keys: Iterable[ApiKey], version: int) -> list[str]:
        """Accept exactly ``keys`` as the API keys from now on (those not in it are revoked). Answers
        the names that were ignored because a config key has the same name."""
        accepted: list[ApiKey] = []
        shadowed: list[ApiKey] = []
        for key in keys:
            (shadowed if key.name in self.config_names else accepted).append(key)
        self._api_keys = tuple(accepted)
        self.version = version
        self._rebuild()
        return [key.name for key in shadowed]

    @property
    def api_keys(self) -> tuple[ApiKey, ...]:
        return self._api_keys

    def names(self) -> frozenset[str]:
        return self.config_names | {key.name for key in self._api_keys}

    def identity_for_digest(self, digest: bytes) -> ApiKey | None:
        """The key with this SHA-256 digest, or None if it is unknown, revoked or expired.

        This is the check for anything that holds on to a key after it was presented once (dashboard
        sessions keep the digest and call this on every request, so revoking or expiring the key ends
        them on every node within the keys actor's reload bound)."""
        key = self._by_digest.get(digest)
        if key is None or key.expired(self.clock()):
            return None
        return key

    def lookup(self, digest: bytes) -> ApiKey | None:
        """The key with this digest, expired or not (None if unknown or revoked)."""
        return self._by_digest.get(digest)

    def touch(self, name: str) -> None:
        """Record that key ``name`` was used now (memory only; flushed by the keys actor)."""
        self._last_used[name] = self.clock()

    def take_usage(self) -> dict[str, float]:
        """The uses recorded since the last call (name -> Unix seconds), and forget them."""
        usage, self._last_used = self._last_used, {}
        return usage

    def restore_usage(self, usage: dict[str, float]) -> None:
        """Put back uses whose flush failed (newer ones recorded meanwhile win)."""
        for name, when in usage.items():
            if when > self._last_used.get(name, 0.0):
                self._last_used[name] = when

    def pending_usage(self) -> dict[str, float]:
        """Uses recorded on this node and not flushed yet (a copy)."""
        return dict(self._last_used)
