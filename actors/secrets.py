"""SecretsActor: keeps this node's redactor aware of every stored secret, and says when it cannot.

At start, and every :data:`REFRESH_S` seconds, it decrypts the stored secrets and registers their
values for redaction (:meth:`secauto.vault.SecretVault.load_all`), so this node masks a secret stored
through another node even in the output of a job that did not reference it. Values a step reveals or
this node stores are registered at once anyway; the refresh only closes that gap.

It logs one warning when secrets are stored but this node cannot read them (no secret key, or some
were stored under another key: jobs that use them fail here), at start and again only when that
changes. A Redis outage skips a refresh (debug log); it never crashes the actor.
"""

from __future__ import annotations

from typing import Any

import msgspec
from loguru import logger

from actors.core import Actor
from secauto.store.connection import REDIS_UNAVAILABLE
from secauto.vault import NO_KEY, SecretVault

REFRESH_S = 10.0


class RefreshSecrets(msgspec.Struct, frozen=True):
    """Timer or tell: load the stored secrets again."""


class SecretsActor(Actor):
    def __init__(self, vault: SecretVault, node_id: str, refresh_s: float = REFRESH_S) -> None:
        self.vault = vault
        self.refresh_s = refresh_s
        self._reported: tuple[str, ...] | None = None  # the unreadable names last warned about
        self.log = logger.bind(component="secrets", node_id=node_id)

    async def on_start(self) -> None:
        self.start_timer("refresh", self.refresh_s, RefreshSecrets(), initial_delay=0.0)

    async def receive(self, message: Any) -> Any:
        match message:
            case RefreshSecrets():
                await self._refresh()
            case _:
                raise TypeError(f"secrets got an unexpected message {message!r}")
        return None

    async def _refresh(self) -> None:
        try:
            report = await self.vault.load_all()
        except REDIS_UNAVAILABLE as exc:
            self.log.debug("cannot load the stored secrets ({}); retrying in {:g}s", exc, self.refresh_s)
            return
        unreadable = tuple(report.unreadable)
        if unreadable == self._reported:
            return
        self._reported = unreadable
        if not unreadable:
            return
        if not self.vault.has_key:
            self.log.warning("{} secret(s) are stored but {}: jobs that use them fail on this node",
                             report.stored, NO_KEY)
        else:
            assert self.vault.cipher is not None
            self.log.warning("secret(s) {} cannot be decrypted with this node's secret key (key id {}): they were "
                             "stored under another key; jobs that use them fail on this node",
                             ", ".join(unreadable[:20]) + (" ..." if len(unreadable) > 20 else ""),
                             self.vault.cipher.key_id)
