"""The vault over the embedded store: what it registers for redaction, what it refuses, the store's cap."""

from __future__ import annotations

import pytest

from secauto.engine.secrets import SecretUnavailable
from secauto.redaction import Redactor
from secauto.secret_cipher import SecretCipher
from secauto.store import secrets as secret_store
from secauto.store.connection import open_embedded
from secauto.store.keys import Keys
from secauto.store.secrets import SecretStore
from secauto.vault import NoSecretKey, SecretVault

KEY = "vault-test-secret-key-0123456789abcdef"


def vault(redis: object, key: str | None = KEY) -> tuple[SecretVault, Redactor]:
    redactor = Redactor()
    return SecretVault(SecretStore(redis, Keys("c")), SecretCipher(key) if key else None, redactor), redactor  # type: ignore[arg-type]


async def test_reveal_registers_values_before_returning_them() -> None:
    redis = open_embedded()
    writer, _ = vault(redis)
    await writer.put("a", "value-aaaaaaaa")
    await writer.put("b", "value-bbbbbbbb")
    reader, redactor = vault(redis)  # another node: knows nothing yet
    assert redactor.text("value-aaaaaaaa") == "value-aaaaaaaa"
    assert await reader.reveal(["a"]) == {"a": "value-aaaaaaaa"}
    assert redactor.text("value-aaaaaaaa value-bbbbbbbb") == "*** value-bbbbbbbb"
    report = await reader.load_all()  # the periodic refresh: every stored value
    assert report.stored == 2 and report.unreadable == []
    assert redactor.text("value-bbbbbbbb") == "***"
    assert await reader.missing(["a", "c", "c"]) == ["c"]
    assert [info.name for info in await reader.catalog()] == ["a", "b"]


async def test_refusals_name_the_secret() -> None:
    redis = open_embedded()
    writer, _ = vault(redis)
    await writer.put("a", "value-aaaaaaaa")
    keyless, _ = vault(redis, key=None)
    with pytest.raises(NoSecretKey):
        await keyless.put("x", "value-xxxxxxxx")
    with pytest.raises(SecretUnavailable, match="secret 'a' cannot be used: this node has no secret key"):
        await keyless.reveal(["a"])
    assert (await keyless.load_all()).unreadable == ["a"]
    with pytest.raises(SecretUnavailable, match=r"^unknown secret 'zz'$"):
        await writer.reveal(["a", "zz"])
    other, redactor = vault(redis, key="another-vault-key-0123456789abcdefgh")
    with pytest.raises(SecretUnavailable, match="secret 'a' cannot be decrypted: it was stored under another"):
        await other.reveal(["a"])
    assert (await other.load_all()).unreadable == ["a"] and not redactor.active


async def test_the_store_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secret_store, "MAX_SECRETS", 2)
    writer, _ = vault(open_embedded())
    assert (await writer.put("a", "value-aaaaaaaa"))[0] == "created"
    assert (await writer.put("b", "value-bbbbbbbb"))[0] == "created"
    assert (await writer.put("c", "value-cccccccc"))[0] == "full"
    assert (await writer.put("a", "value-aaaaaaa2"))[0] == "replaced"  # replacing is always possible
    assert await writer.delete("b") and (await writer.put("c", "value-cccccccc"))[0] == "created"
