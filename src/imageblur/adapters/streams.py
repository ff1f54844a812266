"""What the stores share to stream objects: a readable stream over a driver's reads that
turns their failures into `StoreUnavailable`, and the range arguments' check."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import BinaryIO

from imageblur.domain import StoreUnavailable

# Python's default buffer (8 KiB) would split a large read into many small driver calls.
READ_BUFFER_BYTES = 1 << 20


class _GuardedRaw(io.RawIOBase):
    """A raw stream over `read(n) -> bytes` and `release()` (a file, an HTTP body)."""

    def __init__(self, read: Callable[[int], bytes], release: Callable[[], None], what: str):
        self._read = read
        self._release = release
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        try:
            data = self._read(len(buffer))
        except Exception as exc:  # OSError, or a driver's own (botocore's have no common base)
            raise StoreUnavailable(f"read of {self._what} failed: {exc}") from exc
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._release()
            finally:
                super().close()


def guarded_reader(
    read: Callable[[int], bytes], release: Callable[[], None], what: str
) -> BinaryIO:
    """A buffered binary stream over a driver's reads; its errors raise
    `StoreUnavailable` naming `what`."""
    raw = _GuardedRaw(read, release, what)
    return io.BufferedReader(raw, buffer_size=READ_BUFFER_BYTES)


def check_range(start: int, end: int) -> None:
    if not 0 <= start <= end:
        raise ValueError(f"invalid range [{start}, {end})")


def read_exact(stream: BinaryIO, n: int) -> bytes:
    """`n` bytes, fewer only at the end of the stream (one read may return fewer)."""
    parts = []
    while n > 0:
        part = stream.read(n)
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


class _Chained(io.RawIOBase):
    """`head`, then the rest of `tail`."""

    def __init__(self, head: bytes, tail: BinaryIO) -> None:
        self._head = memoryview(head)
        self._tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._tail.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._tail.close()
            finally:
                super().close()


def chained(head: bytes, tail: BinaryIO) -> BinaryIO:
    """A stream of `head` then `tail` (what was read to tell an object's format, put
    back); closing it closes `tail`."""
    return io.BufferedReader(_Chained(head, tail), buffer_size=READ_BUFFER_BYTES)
