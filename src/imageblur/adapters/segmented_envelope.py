"""The envelope of streamed originals (format version 2): sealed and opened a segment at
a time, so neither side ever holds the object, and readable by ranges.

    MAGIC (8 bytes) | version 2 (1 byte) | key id (8 ASCII hex digits)
    | segment size (4 bytes, big-endian) | nonce prefix (8 random bytes)
    | segment 0 | segment 1 | ... | segment n-1

Each segment is the AES-256-GCM ciphertext of `segment size` bytes of the object (the
last one: 0 to `segment size`) and its 16-byte tag, sealed with the nonce `prefix |
index (4 bytes, big-endian)` and the associated data `header | last (1 byte: 1 for the
last segment, else 0) | object key`. So a segment moved to another place (the index is
in its nonce), a dropped tail (the new last segment was sealed as not last), an added
one (the last was sealed as last), an edited header or an envelope copied under
another object key all fail authentication. An empty object is one empty last segment.
The segment sizes are fixed, so the segments covering a range are found by arithmetic
and only they are read and opened.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from imageblur.adapters.streams import read_exact
from imageblur.domain import OriginalUnreadable

# No image format starts with these bytes (PNG's signature is \x89PNG\r\n\x1a\n).
MAGIC = b"\x89IBLUR\r\n"
KEY_ID_CHARS = 8
TAG_BYTES = 16
VERSION = 2
SEGMENT_BYTES = 1 << 20
PREFIX_BYTES = 8
HEADER_BYTES = len(MAGIC) + 1 + KEY_ID_CHARS + 4 + PREFIX_BYTES
_SIZE_AT = len(MAGIC) + 1 + KEY_ID_CHARS
# What a reader accepts: a header is authenticated only with its first segment, so an
# edited size must not make it read gigabytes before it finds out.
_SEGMENT_RANGE = range(1 << 12, (1 << 24) + 1)
_MAX_SEGMENTS = 1 << 32  # the index is 4 bytes of the nonce


@dataclass(frozen=True, slots=True)
class Header:
    raw: bytes
    key_id: str
    segment_bytes: int
    prefix: bytes

    @property
    def sealed_bytes(self) -> int:
        """The size at rest of every segment but the last."""
        return self.segment_bytes + TAG_BYTES


def seal(
    key: str, chunks: Iterable[bytes], kid: str, cipher: AESGCM, segment_bytes: int = SEGMENT_BYTES
) -> Iterator[bytes]:
    """The envelope of the concatenated `chunks`: the header, then each sealed segment."""
    raw = (
        MAGIC
        + bytes([VERSION])
        + kid.encode("ascii")
        + segment_bytes.to_bytes(4, "big")
        + os.urandom(PREFIX_BYTES)
    )
    header = parse_header(key, raw)
    yield raw
    for index, (segment, last) in enumerate(_segments(chunks, segment_bytes)):
        if index >= _MAX_SEGMENTS:
            raise ValueError("object too large for one envelope")
        yield cipher.encrypt(_nonce(header, index), segment, _associated(header, last, key))


def _segments(chunks: Iterable[bytes], size: int) -> Iterator[tuple[bytes, bool]]:
    """The bytes in segments of `size` (the last shorter, or empty for no bytes), each
    with whether it is the last: a full segment is held until more bytes come."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        # Strictly more than a segment: the segment that ends the object is the last.
        while len(buffer) > size:
            yield bytes(buffer[:size]), False
            del buffer[:size]
    yield bytes(buffer), True


def parse_header(key: str, raw: bytes) -> Header:
    """The header at the start of `raw` (MAGIC and version 2 are the caller's check)."""
    if len(raw) < HEADER_BYTES:
        raise OriginalUnreadable(f"{key}: encrypted object is truncated")
    segment_bytes = int.from_bytes(raw[_SIZE_AT : _SIZE_AT + 4], "big")
    if segment_bytes not in _SEGMENT_RANGE:
        raise OriginalUnreadable(f"{key}: encrypted object has an invalid segment size")
    return Header(
        raw=raw[:HEADER_BYTES],
        key_id=raw[len(MAGIC) + 1 : _SIZE_AT].decode("ascii", errors="replace"),
        segment_bytes=segment_bytes,
        prefix=raw[_SIZE_AT + 4 : HEADER_BYTES],
    )


def plaintext_size(key: str, header: Header, size_at_rest: int) -> tuple[int, int]:
    """(segments, bytes of the object) of an envelope `size_at_rest` bytes long."""
    body = size_at_rest - HEADER_BYTES
    segments = max(1, -(-body // header.sealed_bytes))
    last = body - (segments - 1) * header.sealed_bytes - TAG_BYTES
    if last < 0:
        raise OriginalUnreadable(f"{key}: encrypted object is truncated")
    return segments, (segments - 1) * header.segment_bytes + last


def open_segment(
    key: str, header: Header, cipher: AESGCM, index: int, sealed: bytes, *, last: bool
) -> bytes:
    if len(sealed) < TAG_BYTES:
        raise OriginalUnreadable(f"{key}: encrypted object is truncated")
    try:
        return cipher.decrypt(_nonce(header, index), sealed, _associated(header, last, key))
    except InvalidTag:
        raise OriginalUnreadable(
            f"{key}: encrypted segment {index} failed authentication (altered, truncated, "
            "reordered, or copied from another key)"
        ) from None


@dataclass(frozen=True, slots=True)
class Span:
    """Where the segments covering a range lie at rest: from `start_at` to `end_at`,
    the first one's index `first`; `segments` and `size`: the envelope's."""

    first: int
    start_at: int
    end_at: int
    segments: int
    size: int


def span(key: str, header: Header, size_at_rest: int, start: int, end: int) -> Span:
    """The segments that hold the object's bytes [start, end), clipped to its size
    (none, `start_at == end_at`, for an empty range; the last one for a range past
    the end)."""
    segments, size = plaintext_size(key, header, size_at_rest)
    if start >= size and end > start:
        # Past the end: the last segment is read, so that an envelope cut short after
        # a whole segment does not pass for a shorter object.
        last_at = HEADER_BYTES + (segments - 1) * header.sealed_bytes
        return Span(segments - 1, last_at, size_at_rest, segments, size)
    end = min(end, size)
    if start >= end:
        return Span(segments, size_at_rest, size_at_rest, segments, size)
    first, last = start // header.segment_bytes, (end - 1) // header.segment_bytes
    return Span(
        first=first,
        start_at=HEADER_BYTES + first * header.sealed_bytes,
        end_at=min(HEADER_BYTES + (last + 1) * header.sealed_bytes, size_at_rest),
        segments=segments,
        size=size,
    )


def open_span(key: str, header: Header, cipher: AESGCM, where: Span, sealed: bytes) -> bytes:
    """The plaintext of the sealed segments `where` names, read from rest (`sealed`)."""
    if len(sealed) != where.end_at - where.start_at:
        raise OriginalUnreadable(f"{key}: encrypted object is truncated")
    out = bytearray()
    for at in range(0, len(sealed), header.sealed_bytes):
        index = where.first + at // header.sealed_bytes
        piece = sealed[at : at + header.sealed_bytes]
        out += open_segment(key, header, cipher, index, piece, last=index == where.segments - 1)
    return bytes(out)


class _Opened(io.RawIOBase):
    """The plaintext of an envelope read from `inner` (positioned after the header), a
    segment at a time; the segment after the current one is peeked at by one byte, to
    know whether the current one is the last."""

    def __init__(self, key: str, header: Header, cipher: AESGCM, inner: BinaryIO) -> None:
        self._key, self._header, self._cipher, self._inner = key, header, cipher, inner
        self._index = 0
        self._carry = b""
        self._plain = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def next_segment(self) -> None:
        want = self._header.sealed_bytes
        data = self._carry + read_exact(self._inner, want + 1 - len(self._carry))
        last = len(data) <= want
        self._carry = b"" if last else data[want:]
        plain = open_segment(
            self._key, self._header, self._cipher, self._index, data[:want], last=last
        )
        self._plain, self._index, self._done = memoryview(plain), self._index + 1, last

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        while not self._plain and not self._done:
            self.next_segment()
        n = min(len(buffer), len(self._plain))
        buffer[:n] = self._plain[:n]
        self._plain = self._plain[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                self._inner.close()
            finally:
                super().close()


def opened(key: str, header: Header, cipher: AESGCM, inner: BinaryIO) -> BinaryIO:
    """The object as a stream, from `inner` positioned after the header. The first
    segment is opened here: a wrong key or an altered start fails now, not at a read."""
    raw = _Opened(key, header, cipher, inner)
    try:
        raw.next_segment()
    except BaseException:
        raw.close()
        raise
    return io.BufferedReader(raw, buffer_size=header.segment_bytes)


def _nonce(header: Header, index: int) -> bytes:
    return header.prefix + index.to_bytes(4, "big")


def _associated(header: Header, last: bool, key: str) -> bytes:
    # The header is fixed-length and the flag one byte, so this is unambiguous.
    return header.raw + (b"\x01" if last else b"\x00") + key.encode("utf-8")
