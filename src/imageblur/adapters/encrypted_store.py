"""Originals encrypted at rest: an ObjectStore that wraps another one (local folder, S3)
and seals every object with AES-256-GCM (the `cryptography` package).

An object at rest is an envelope:

    MAGIC (8 bytes) | version (1 byte) | key id (8 ASCII hex digits) | nonce (12 bytes)
    | ciphertext | tag (16 bytes)

The key id is the first 8 hex digits of the key's SHA-256, so an object names the key
that opens it and keys can be rotated: the current key seals, old keys only open. The
header and the object key are the associated data: an envelope copied under another key,
or with its header edited, fails authentication. An object without MAGIC was stored
before encryption was switched on and is returned as it is.

Key material is never logged, shown in a repr, or put in a message: only key ids.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from imageblur.domain import OriginalUnreadable, StoredObject
from imageblur.ports import ObjectStore

# No image format starts with these bytes (PNG's signature is \x89PNG\r\n\x1a\n).
MAGIC = b"\x89IBLUR\r\n"
VERSION = 1
KEY_BYTES = 32
KEY_ID_CHARS = 8
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + 1 + KEY_ID_CHARS + NONCE_BYTES


def key_id(key: bytes) -> str:
    """The id an envelope records: the first 8 hex digits of the key's SHA-256."""
    return hashlib.sha256(key).hexdigest()[:KEY_ID_CHARS]


class Keyring:
    """The current key (seals; None: new objects are stored unencrypted, for switching
    encryption off while old objects stay readable) and the old keys (open only)."""

    def __init__(self, current: bytes | None, old: Sequence[bytes] = ()) -> None:
        self._ciphers: dict[str, AESGCM] = {}
        self._keys: dict[str, bytes] = {}
        for key in [k for k in (current,) if k is not None] + list(old):
            if len(key) != KEY_BYTES:
                raise ValueError(f"an originals key must be {KEY_BYTES} bytes, not {len(key)}")
            kid = key_id(key)
            if self._keys.get(kid, key) != key:
                # 32-bit ids: two keys sharing one is all but impossible, but would make
                # one of them unusable without anyone noticing.
                raise ValueError(f"two different originals keys share the key id {kid}")
            self._keys[kid] = key
            self._ciphers[kid] = AESGCM(key)
        self.current_id = key_id(current) if current is not None else None

    def sealer(self) -> tuple[str, AESGCM] | None:
        """The current key's id and cipher, or None when new objects stay unencrypted."""
        if self.current_id is None:
            return None
        return self.current_id, self._ciphers[self.current_id]

    @property
    def ids(self) -> list[str]:
        return list(self._ciphers)

    def cipher(self, kid: str) -> AESGCM | None:
        return self._ciphers.get(kid)

    def __repr__(self) -> str:
        return f"Keyring(current={self.current_id!r}, ids={self.ids!r})"


class EncryptedStore:
    """`ObjectStore` sealing what it puts into `inner` and opening what it gets.

    `get` raises `OriginalUnreadable` for an envelope whose key is not in the keyring or
    that fails authentication (altered, truncated, or moved from another object key)."""

    def __init__(self, inner: ObjectStore, keyring: Keyring) -> None:
        self._inner = inner
        self._keyring = keyring

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        sealer = self._keyring.sealer()
        if sealer is None:
            self._inner.put(key, data, content_type=content_type)
            return
        kid, cipher = sealer
        nonce = os.urandom(NONCE_BYTES)
        header = MAGIC + bytes([VERSION]) + kid.encode("ascii") + nonce
        sealed = cipher.encrypt(nonce, data, _associated(header, key))
        # The inner store sees only ciphertext: its content type says nothing more.
        self._inner.put(key, header + sealed, content_type="application/octet-stream")

    def get(self, key: str) -> bytes:
        stored = self._inner.get(key)
        if not stored.startswith(MAGIC):
            return stored  # stored before encryption was switched on
        return self._open(key, stored)

    def _open(self, key: str, stored: bytes) -> bytes:
        if len(stored) < HEADER_BYTES + TAG_BYTES:
            raise OriginalUnreadable(f"{key}: encrypted object is truncated")
        version = stored[len(MAGIC)]
        if version != VERSION:
            raise OriginalUnreadable(f"{key}: unknown encryption format version {version}")
        kid_end = len(MAGIC) + 1 + KEY_ID_CHARS
        kid = stored[len(MAGIC) + 1 : kid_end].decode("ascii", errors="replace")
        cipher = self._keyring.cipher(kid)
        if cipher is None:
            raise OriginalUnreadable(
                f"{key}: encrypted with key id {kid}, which is neither the current "
                f"originals key nor an old one (keys known: {', '.join(self._keyring.ids)})"
            )
        header, sealed = stored[:HEADER_BYTES], stored[HEADER_BYTES:]
        try:
            return cipher.decrypt(header[kid_end:], sealed, _associated(header, key))
        except InvalidTag:
            raise OriginalUnreadable(
                f"{key}: encrypted object failed authentication (altered, or copied from "
                "another key)"
            ) from None

    def delete(self, key: str) -> None:
        self._inner.delete(key)

    def exists(self, key: str) -> bool:
        return self._inner.exists(key)

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        """The inner store's objects; sizes are the sizes at rest (of the envelopes)."""
        return self._inner.list(prefix)

    def url(self, key: str) -> str:
        return self._inner.url(key)

    def presigned_url(self, key: str, *, expires_s: int) -> str | None:
        return None  # a direct URL would serve the ciphertext

    def check(self) -> None:
        self._inner.check()

    def close(self) -> None:
        self._inner.close()


def _associated(header: bytes, key: str) -> bytes:
    # The header is fixed-length, so header + key is unambiguous.
    return header + key.encode("utf-8")
