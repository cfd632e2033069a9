"""Sealing secrets: AES-256-GCM under an HKDF-derived key, bound to the secret's name."""

from __future__ import annotations

import msgspec
import pytest

from secauto.secret_cipher import SealedSecret, SecretCipher, SecretDecryptError

KEY = "unit-test-secret-key-0123456789abcdef"


def test_round_trip_and_fresh_nonces() -> None:
    cipher = SecretCipher(KEY)
    first = cipher.seal("token", "value-0123456789", updated_at="2024-01-01T00:00:00.000Z")
    second = cipher.seal("token", "value-0123456789", updated_at="2024-01-01T00:00:00.000Z")
    assert first.nonce != second.nonce and first.ciphertext != second.ciphertext
    assert b"value-0123456789" not in msgspec.json.encode(first)
    assert cipher.open("token", first) == "value-0123456789"
    # another node with the same key reads it (the key is derived, not random)
    assert SecretCipher(KEY).open("token", msgspec.json.decode(msgspec.json.encode(first), type=SealedSecret)) \
        == "value-0123456789"


def test_a_ciphertext_moved_to_another_name_does_not_open() -> None:
    cipher = SecretCipher(KEY)
    sealed = cipher.seal("token", "value-0123456789", updated_at="t")
    with pytest.raises(SecretDecryptError, match="another name"):
        cipher.open("other", sealed)


def test_altered_ciphertext_does_not_open() -> None:
    cipher = SecretCipher(KEY)
    sealed = cipher.seal("token", "value-0123456789", updated_at="t")
    tampered = msgspec.structs.replace(sealed, ciphertext=bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:])
    with pytest.raises(SecretDecryptError, match="altered"):
        cipher.open("token", tampered)


def test_another_key_is_told_apart_by_its_key_id() -> None:
    sealed = SecretCipher(KEY).seal("token", "value-0123456789", updated_at="t")
    other = SecretCipher("another-secret-key-0123456789abcdef")
    assert other.key_id != sealed.key_id
    with pytest.raises(SecretDecryptError, match=f"another secret key \\(key id {sealed.key_id}"):
        other.open("token", sealed)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 characters"):
        SecretCipher("too-short")
