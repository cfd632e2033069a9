"""Encryption of stored secrets: AES-256-GCM under a key derived from ``security.secret_key``.

* **Key format**: ``security.secret_key`` (or ``$SECAUTO_SECRET_KEY``) is any text of at least
  :data:`MIN_KEY_LENGTH` characters; it should be random (``python -c "import secrets;
  print(secrets.token_urlsafe(32))"``). Every node of a cluster needs the same one.
* **KDF**: HKDF-SHA256 over the key's UTF-8 bytes, salt ``secauto-secrets-v1``, gives the 32-byte
  AES key (info ``aes-256-gcm``) and, separately, a key id (info ``key-id``, 8 bytes shown as hex)
  stored beside each ciphertext. HKDF suits a random key; it does not slow down guessing a weak one.
* **Sealing**: a fresh random 96-bit nonce per encryption; the associated data binds the secret's
  name (``secauto-secret-v1:<name>``), so a ciphertext copied to another name does not decrypt.
* **Opening** fails with :class:`SecretDecryptError` when the value was sealed under another key
  (the key ids differ), for another name, or was altered. Keys are not rotated: changing the key makes
  the stored secrets unreadable until they are stored again.
"""

from __future__ import annotations

import os

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_KEY_LENGTH = 32
_SALT = b"secauto-secrets-v1"
_NONCE_BYTES = 12


class SealedSecret(msgspec.Struct, kw_only=True, frozen=True):
    """A stored secret: what ``secauto:secrets:<cluster>`` holds per name (bytes are base64 in JSON)."""

    ciphertext: bytes  # AES-GCM output: the encrypted value followed by the 16-byte tag
    nonce: bytes
    key_id: str  # which key sealed it (hex), to tell "another key" from "altered"
    updated_at: str  # RFC 3339 UTC
    version: int = 1


class SecretDecryptError(Exception):
    """A stored secret cannot be opened with this key (the message says why, without the value)."""


def _derive(secret_key: str, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=info).derive(secret_key.encode())


def _associated_data(name: str) -> bytes:
    return b"secauto-secret-v1:" + name.encode()


class SecretCipher:
    """Seals and opens secret values under one key. Raises ValueError for a key that is too short."""

    def __init__(self, secret_key: str) -> None:
        if len(secret_key) < MIN_KEY_LENGTH:
            raise ValueError(f"a secret key needs at least {MIN_KEY_LENGTH} characters")
        self._aead = AESGCM(_derive(secret_key, b"aes-256-gcm", 32))
        self.key_id = _derive(secret_key, b"key-id", 8).hex()

    def seal(self, name: str, value: str, *, updated_at: str) -> SealedSecret:
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = self._aead.encrypt(nonce, value.encode(), _associated_data(name))
        return SealedSecret(ciphertext=ciphertext, nonce=nonce, key_id=self.key_id, updated_at=updated_at)

    def open(self, name: str, sealed: SealedSecret) -> str:
        """The value of ``sealed``; raises :class:`SecretDecryptError`."""
        if sealed.key_id != self.key_id:
            raise SecretDecryptError(f"it was stored under another secret key (key id {sealed.key_id}; this node's "
                                     f"is {self.key_id})")
        try:
            return self._aead.decrypt(sealed.nonce, sealed.ciphertext, _associated_data(name)).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError):
            raise SecretDecryptError("it does not decrypt (altered, or stored under another name)") from None
