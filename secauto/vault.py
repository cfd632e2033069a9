"""The node's secrets: stores them sealed, reveals them to the steps that reference them, and registers
every value it handles for redaction before anyone else can see it.

The vault is what the engine's :class:`~secauto.engine.secrets.SecretSource` is on a node. It works
without a secret key for what needs none (listing names, deleting, checking that names exist); storing
and revealing need one, and say so in one line when it is missing.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import msgspec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from secauto.engine.secrets import SecretUnavailable
from secauto.models import utc_now
from secauto.redaction import REDACTOR, Redactor
from secauto.secret_cipher import SecretCipher, SecretDecryptError
from secauto.store.secrets import PutOutcome, SecretStore

NO_KEY = "this node has no secret key (set security.secret_key or $SECAUTO_SECRET_KEY)"


class NoSecretKey(Exception):
    """Storing a secret on a node without a secret key."""

    def __init__(self) -> None:
        super().__init__(f"secrets cannot be stored: {NO_KEY}")


class SecretInfo(msgspec.Struct, kw_only=True):
    """A stored secret as the API lists it: never its value."""

    name: str
    updated_at: str


class LoadReport(msgspec.Struct, kw_only=True):
    """What :meth:`SecretVault.load_all` found."""

    stored: int  # secrets in the store
    unreadable: list[str]  # names this node cannot decrypt (another key, altered), or all of them without a key


class SecretVault:
    def __init__(self, store: SecretStore, cipher: SecretCipher | None, redactor: Redactor = REDACTOR) -> None:
        self.store = store
        self.cipher = cipher
        self.redactor = redactor

    @property
    def has_key(self) -> bool:
        return self.cipher is not None

    async def put(self, name: str, value: str) -> tuple[PutOutcome, SecretInfo]:
        """Seal and store ``value`` under ``name`` (``full``: nothing stored, the store holds the
        maximum number of secrets). Raises :class:`NoSecretKey` without a key, and redis-py's errors."""
        if self.cipher is None:
            raise NoSecretKey
        self.redactor.add([value])  # before anything else can see it
        sealed = self.cipher.seal(name, value, updated_at=utc_now())
        return await self.store.put(name, sealed), SecretInfo(name=name, updated_at=sealed.updated_at)

    async def delete(self, name: str) -> bool:
        return await self.store.delete(name)

    async def catalog(self) -> list[SecretInfo]:
        """Every stored secret's name and update time, by name."""
        stored = await self.store.all()
        return [SecretInfo(name=name, updated_at=sealed.updated_at) for name, sealed in sorted(stored.items())]

    async def missing(self, names: Collection[str]) -> list[str]:
        """Those of ``names`` that are not stored (sorted, no duplicates)."""
        return await self.store.missing(sorted(set(names)))

    async def reveal(self, names: Collection[str]) -> dict[str, str]:
        """The values of ``names``, registered for redaction before they are returned.

        Raises :class:`SecretUnavailable` naming the first secret that is unknown, cannot be decrypted
        or cannot be read (no key on this node, Redis unreachable).
        """
        wanted: Sequence[str] = sorted(set(names))
        if not wanted:
            return {}
        if self.cipher is None:
            raise SecretUnavailable(f"secret {wanted[0]!r} cannot be used: {NO_KEY}")
        try:
            stored = await self.store.get_many(wanted)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise SecretUnavailable(f"cannot read secret {wanted[0]!r}: the store is unreachable ({exc})") from None
        values: dict[str, str] = {}
        for name in wanted:
            sealed = stored.get(name)
            if sealed is None:
                raise SecretUnavailable(f"unknown secret {name!r}")
            try:
                values[name] = self.cipher.open(name, sealed)
            except SecretDecryptError as exc:
                raise SecretUnavailable(f"secret {name!r} cannot be decrypted: {exc}") from None
        self.redactor.add(values.values())
        return values

    async def load_all(self) -> LoadReport:
        """Decrypt every stored secret and register the values for redaction, so that this node masks
        them even in output of jobs that did not reference them. Raises redis-py's errors."""
        stored = await self.store.all()
        if self.cipher is None:
            return LoadReport(stored=len(stored), unreadable=sorted(stored))
        values: list[str] = []
        unreadable: list[str] = []
        for name, sealed in sorted(stored.items()):
            try:
                values.append(self.cipher.open(name, sealed))
            except SecretDecryptError:
                unreadable.append(name)
        self.redactor.add(values, current=values)
        return LoadReport(stored=len(stored), unreadable=unreadable)
