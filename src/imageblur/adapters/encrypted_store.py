"""Originals encrypted at rest: an ObjectStore that wraps another one (local folder, S3)
and seals every object with AES-256-GCM (the `cryptography` package).

An object at rest is an envelope:

    MAGIC (8 bytes) | version (1 byte) | key id (8 ASCII hex digits) | nonce (12 bytes)
    | ciphertext | tag (16 bytes)

The key id is the first 8 hex digits of the key's SHA-256, so an object names the key
that opens it and keys can be rotated: the current key seals, old keys only open. The
header and the object key are the associated data: an envelope copied under another key,
or with its header edited, fails authentication. An object without MAGIC was stored
before encryption was switched on: with a current key it is refused unless plaintext is
allowed (an attacker who can write to the store must not be able to slip in an original
of their own), without one it is returned as it is. `reseal` brings such objects, and
those under old keys, under the current key.

That is format version 1, for whole objects (`put`, `get`: pictures). Streamed objects
(`put_stream`) are sealed a segment at a time in format version 2
(`segmented_envelope`), which `open` and `get_range` read a segment at a time and
`get` reads whole; both formats, and objects stored without encryption, are read by
every reading method.

Key check objects (`_keycheck/<key id>`, a fixed text sealed under the key it names)
let every process show that it opens what the others seal; listings leave them out, so
nothing that lists originals (garbage collection, `reseal`) ever sees them.

Key material is never logged, shown in a repr, or put in a message: only key ids.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from enum import StrEnum
from typing import BinaryIO, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from imageblur.adapters import segmented_envelope as v2
from imageblur.adapters.segmented_envelope import KEY_ID_CHARS, MAGIC, TAG_BYTES
from imageblur.adapters.streams import chained, check_range, read_exact
from imageblur.domain import (
    KeyCheckReport,
    ObjectMissing,
    ObjectRange,
    OriginalUnreadable,
    StoredObject,
)
from imageblur.ports import ObjectStore

VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
HEADER_BYTES = len(MAGIC) + 1 + KEY_ID_CHARS + NONCE_BYTES
KEY_ID_END = len(MAGIC) + 1 + KEY_ID_CHARS
# Not a key `object_key` makes (ids are hex), so no record ever claims one.
KEY_CHECK_PREFIX = "_keycheck/"
KEY_CHECK_TEXT = b"imageblur originals key check\n"
SEALED_TYPE = "application/octet-stream"
# Enough of an object's start to tell its format and read either version's header.
_HEAD_BYTES = v2.HEADER_BYTES  # a version 1 header is as long: both are read whole
_T = TypeVar("_T")


class Resealed(StrEnum):
    """What `EncryptedStore.reseal` did with one object."""

    SEALED = "sealed"  # it was stored without encryption
    RESEALED = "resealed"  # it was sealed under an old key
    CURRENT = "current"  # already under the current key: left as it is


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
    that fails authentication (altered, truncated, or moved from another object key), and
    for an object without an envelope when the keyring has a current key, unless
    `allow_plaintext`. `last_unreadable` keeps the reason of the last refusal the keys
    were at fault for until an object opens again: the process's readiness shows it."""

    def __init__(
        self, inner: ObjectStore, keyring: Keyring, *, allow_plaintext: bool = False
    ) -> None:
        self._inner = inner
        self._keyring = keyring
        self._allow_plaintext = allow_plaintext
        self._lock = threading.Lock()
        self._last_unreadable: str | None = None

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    @property
    def last_unreadable(self) -> str | None:
        """Why the last `get` was refused, or None if an object opened since (or none was
        refused)."""
        with self._lock:
            return self._last_unreadable

    def put(self, key: str, data: bytes, *, content_type: str) -> None:
        sealer = self._keyring.sealer()
        if sealer is None:
            self._inner.put(key, data, content_type=content_type)
            return
        self._inner.put(key, self._seal(key, data, *sealer), content_type=SEALED_TYPE)

    def _seal(self, key: str, data: bytes, kid: str, cipher: AESGCM) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        header = MAGIC + bytes([VERSION]) + kid.encode("ascii") + nonce
        # The inner store sees only ciphertext: its content type says nothing more.
        return header + cipher.encrypt(nonce, data, _associated(header, key))

    def put_stream(self, key: str, chunks: Iterable[bytes], *, content_type: str) -> None:
        sealer = self._keyring.sealer()
        if sealer is None:
            self._inner.put_stream(key, chunks, content_type=content_type)
            return
        self._inner.put_stream(key, v2.seal(key, chunks, *sealer), content_type=SEALED_TYPE)

    def get(self, key: str) -> bytes:
        stored = self._inner.get(key)
        return self._noting(lambda: self._read(key, stored))

    def open(self, key: str) -> BinaryIO:
        inner = self._inner.open(key)
        try:
            return self._noting(lambda: self._open_stream(key, inner))
        except BaseException:
            inner.close()
            raise

    def get_range(self, key: str, start: int, end: int) -> ObjectRange:
        check_range(start, end)
        return self._noting(lambda: self._read_range(key, start, end))

    def _noting(self, read: Callable[[], _T]) -> _T:
        """`read()`, keeping why it was refused if the keys are at fault, and forgetting
        the last refusal once an object opens."""
        try:
            result = read()
        except OriginalUnreadable as exc:
            if exc.keys_at_fault:  # one altered object says nothing of the keys
                with self._lock:
                    self._last_unreadable = str(exc)
            raise
        with self._lock:
            self._last_unreadable = None
        return result

    def _read(self, key: str, stored: bytes) -> bytes:
        if stored.startswith(MAGIC):
            return self._open(key, stored)
        self._refuse_plaintext(key)
        return stored  # stored before encryption was switched on

    def _open_stream(self, key: str, inner: BinaryIO) -> BinaryIO:
        head = read_exact(inner, _HEAD_BYTES)
        if not head.startswith(MAGIC):
            self._refuse_plaintext(key)
            return chained(head, inner)  # stored before encryption was switched on
        if self._version(key, head) == VERSION:  # a picture's: small, opened whole
            with inner:
                return io.BytesIO(self._open(key, head + inner.read()))
        header = v2.parse_header(key, head)
        return v2.opened(key, header, self._cipher(key, header.key_id), inner)

    def _read_range(self, key: str, start: int, end: int) -> ObjectRange:
        head = self._inner.get_range(key, 0, _HEAD_BYTES)
        if not head.data.startswith(MAGIC):
            self._refuse_plaintext(key)
            return self._inner.get_range(key, start, end)
        if self._version(key, head.data) == VERSION:
            data = self._open(key, self._inner.get(key))
            return ObjectRange(data=data[start:end], start=start, size=len(data))
        header = v2.parse_header(key, head.data)
        cipher = self._cipher(key, header.key_id)
        where = v2.span(key, header, head.size, start, end)
        if where.start_at == where.end_at:
            return ObjectRange(data=b"", start=start, size=where.size)
        # Only the segments that hold the range are read and opened.
        sealed = self._inner.get_range(key, where.start_at, where.end_at).data
        plain = v2.open_span(key, header, cipher, where, sealed)
        offset = start - where.first * header.segment_bytes
        stop = max(0, min(end, where.size) - start)
        return ObjectRange(data=plain[offset : offset + stop], start=start, size=where.size)

    def _refuse_plaintext(self, key: str) -> None:
        if self._keyring.current_id is not None and not self._allow_plaintext:
            raise OriginalUnreadable(
                f"{key}: stored without encryption, and plaintext originals are refused "
                f"while an originals key is set (current key id {self._keyring.current_id}; "
                "`imageblur reseal` seals them)",
                keys_at_fault=True,
            )

    def _version(self, key: str, stored: bytes) -> int:
        """The format version of an envelope (which starts with MAGIC), if this release
        reads it."""
        if len(stored) <= len(MAGIC):
            raise OriginalUnreadable(f"{key}: encrypted object is truncated")
        version = stored[len(MAGIC)]
        if version not in (VERSION, v2.VERSION):
            raise OriginalUnreadable(
                f"{key}: unknown encryption format version {version}", keys_at_fault=True
            )
        return version

    def _cipher(self, key: str, kid: str) -> AESGCM:
        cipher = self._keyring.cipher(kid)
        if cipher is None:
            known = ", ".join(self._keyring.ids) or "none: no originals key is set"
            raise OriginalUnreadable(
                f"{key}: encrypted with key id {kid}, which is neither the current "
                f"originals key nor an old one (keys known: {known})",
                keys_at_fault=True,
            )
        return cipher

    def _open(self, key: str, stored: bytes) -> bytes:
        """A whole envelope's object, of either version."""
        if self._version(key, stored) == v2.VERSION:
            segmented = v2.parse_header(key, stored)
            body = io.BytesIO(stored[v2.HEADER_BYTES :])
            with v2.opened(key, segmented, self._cipher(key, segmented.key_id), body) as plain:
                return plain.read()
        if len(stored) < HEADER_BYTES + TAG_BYTES:
            raise OriginalUnreadable(f"{key}: encrypted object is truncated")
        cipher = self._cipher(key, _key_id_of(stored))
        header, sealed = stored[:HEADER_BYTES], stored[HEADER_BYTES:]
        try:
            return cipher.decrypt(header[KEY_ID_END:], sealed, _associated(header, key))
        except InvalidTag:
            raise OriginalUnreadable(
                f"{key}: encrypted object failed authentication (altered, or copied from "
                "another key)"
            ) from None

    def reseal(self, key: str, *, dry_run: bool = False) -> Resealed:
        """Bring one object under the current key: seal it if it is stored without
        encryption, re-seal it if an old key sealed it. Raises `OriginalUnreadable` if it
        cannot be opened, `ObjectMissing` if it is gone. An object deleted while it was
        being read is not written back (a finished picture's original must stay gone).
        A streamed (version 2) object is re-sealed as it streams, in version 2."""
        sealer = self._keyring.sealer()
        if sealer is None:
            raise ValueError("resealing needs a current originals key")
        head = self._inner.get_range(key, 0, _HEAD_BYTES).data
        if head.startswith(MAGIC) and self._version(key, head) == v2.VERSION:
            return self._reseal_stream(key, v2.parse_header(key, head), sealer, dry_run)
        stored = self._inner.get(key)
        if stored.startswith(MAGIC) and _key_id_of(stored) == sealer[0]:
            self._open(key, stored)  # counted as current only if it opens
            return Resealed.CURRENT
        outcome = Resealed.RESEALED if stored.startswith(MAGIC) else Resealed.SEALED
        data = self._open(key, stored) if outcome is Resealed.RESEALED else stored
        if not dry_run:
            sealed = self._seal(key, data, *sealer)
            if not self._inner.exists(key):
                raise ObjectMissing(key)
            self._inner.put(key, sealed, content_type=SEALED_TYPE)
        return outcome

    def _reseal_stream(
        self, key: str, header: v2.Header, sealer: tuple[str, AESGCM], dry_run: bool
    ) -> Resealed:
        outcome = Resealed.CURRENT if header.key_id == sealer[0] else Resealed.RESEALED
        with self._open_stream(key, self._inner.open(key)) as plain:
            if outcome is Resealed.CURRENT or dry_run:
                for _ in _chunks(plain):  # counted only if every segment opens
                    pass
                return outcome
            if not self._inner.exists(key):
                raise ObjectMissing(key)
            # Written as it is read: a segment that does not open interrupts the write,
            # which leaves the object as it was.
            self.put_stream(key, _chunks(plain), content_type=SEALED_TYPE)
        return outcome

    def check_keys(self) -> KeyCheckReport:
        """Open every key check object whose key this process holds, note the newest
        one (the key most recently brought in), and write the current key's object if
        it is missing and all is well: a process that cannot open what the others seal
        must not make its own key the newest, or the others would stop. Raises
        `StoreUnavailable` if the store cannot be reached."""
        at = {
            o.key.removeprefix(KEY_CHECK_PREFIX): o.modified_at
            for o in self._inner.list(KEY_CHECK_PREFIX)
        }
        foreign = [kid for kid in at if self._keyring.cipher(kid) is None]
        unreadable = [
            kid for kid in at if kid not in foreign and not self._opens(KEY_CHECK_PREFIX + kid)
        ]
        newest_at = max(at.values(), default=None)
        newest = [kid for kid in at if at[kid] == newest_at]
        # Objects written within one tick of the store's clock (S3: a second) are all
        # the newest: holding one of them is enough.
        not_held = all(kid in foreign for kid in newest)
        report = KeyCheckReport(
            unreadable=tuple(unreadable),
            foreign=tuple(foreign),
            newest_not_held=tuple(newest) if not_held else (),
        )
        current = self._keyring.current_id
        if current is None or current in at or report.unreadable or report.newest_not_held:
            return report
        self.put(KEY_CHECK_PREFIX + current, KEY_CHECK_TEXT, content_type=SEALED_TYPE)
        return replace(report, written=current)

    def _opens(self, key: str) -> bool:
        try:
            return self._open(key, self._inner.get(key)) == KEY_CHECK_TEXT
        except OriginalUnreadable:
            return False
        except ObjectMissing:
            return True  # deleted by hand meanwhile: nothing against the key

    def delete(self, key: str) -> None:
        self._inner.delete(key)

    def exists(self, key: str) -> bool:
        return self._inner.exists(key)

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        """The inner store's objects but the key check objects; sizes are the sizes at
        rest (of the envelopes)."""
        return (o for o in self._inner.list(prefix) if not o.key.startswith(KEY_CHECK_PREFIX))

    def url(self, key: str) -> str:
        return self._inner.url(key)

    def presigned_url(self, key: str, *, expires_s: int) -> str | None:
        return None  # a direct URL would serve the ciphertext

    def check(self) -> None:
        self._inner.check()

    def close(self) -> None:
        self._inner.close()


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(v2.SEGMENT_BYTES):
        yield chunk


def _key_id_of(stored: bytes) -> str:
    return stored[len(MAGIC) + 1 : KEY_ID_END].decode("ascii", errors="replace")


def _associated(header: bytes, key: str) -> bytes:
    # The header is fixed-length, so header + key is unambiguous.
    return header + key.encode("utf-8")
