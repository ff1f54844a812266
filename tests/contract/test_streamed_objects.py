"""The ObjectStore contract for large objects (`put_stream`, `open`, `get_range`), on
every adapter and the fake, each as it is and wrapped in the encryption of originals: a
gigabyte streams through in bounded memory, ranges read what they name, and a write that
fails midway leaves nothing behind (no object, no temp file, no pending multipart
upload)."""

from __future__ import annotations

import gc
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageblur.adapters.s3_store import S3ObjectStore
from imageblur.domain import ObjectMissing
from imageblur.ports import ObjectStore

MIB = 1 << 20
GIB = 1 << 30
# The process may grow by less than this while a GB streams through it (the moto server
# is another process: what it holds does not count).
RSS_BOUND = 64 * MIB
BINARY = "application/octet-stream"


class ClientGoneError(Exception):
    """What the tests' chunk generators raise midway (a client that went away)."""


_PATTERN = os.urandom(MIB)


def _blocks(total: int, *, block: int = MIB, fail_after: int | None = None) -> Iterator[bytes]:
    """`total` bytes in chunks of `block` (at most a MiB): one random block, each copy
    numbered (cheap to make, and no two chunks alike, so a chunk lost or repeated
    shows). The same `total` gives the same bytes."""
    pattern = _PATTERN[:block]
    for i in range(-(-total // block)):
        if fail_after is not None and i == fail_after:
            raise ClientGoneError(f"after {i} chunks")
        chunk = i.to_bytes(8, "big") + pattern[8:]
        yield chunk[: total - i * block]


def _data(total: int) -> bytes:
    return b"".join(_blocks(total, block=MIB))


def _inner(store: ObjectStore) -> ObjectStore:
    inner: ObjectStore = getattr(store, "_inner", store)  # under the encryption, if any
    return inner


def _pending_uploads(store: ObjectStore) -> list[object]:
    """The bucket's multipart uploads in progress (none outside S3)."""
    inner = _inner(store)
    if not isinstance(inner, S3ObjectStore):
        return []
    answer = inner._client.list_multipart_uploads(Bucket=inner._bucket)
    return list(answer.get("Uploads", []))


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_a_streamed_object_reads_back_every_way(store: ObjectStore) -> None:
    data = _data(20 * MIB + 12345)  # several S3 parts, the last short
    store.put_stream("v/a.mp4", _blocks(len(data)), content_type="video/mp4")
    assert store.exists("v/a.mp4")
    assert store.get("v/a.mp4") == data
    with store.open("v/a.mp4") as stream:
        assert stream.read(10) == data[:10]
        assert stream.read() == data[10:]
        assert stream.read() == b""
    whole = store.get_range("v/a.mp4", 0, len(data))
    assert (whole.data, whole.start, whole.size) == (data, 0, len(data))


def test_ranges_read_what_they_name_clipped_to_the_object(store: ObjectStore) -> None:
    data = _data(3 * MIB + 100)
    store.put_stream("v/r", _blocks(len(data)), content_type=BINARY)
    size = len(data)
    for start, end in [
        (0, 10),
        (MIB - 5, MIB + 5),  # across a block (and an envelope segment)
        (MIB, 2 * MIB),
        (2 * MIB - 1, 3 * MIB + 1),
        (size - 7, size),
        (size - 7, size + 1000),  # past the end: clipped
        (5, 5),
        (size, size + 10),
        (size + 10, size + 20),
    ]:
        got = store.get_range("v/r", start, end)
        assert (got.data, got.start, got.size) == (data[start:end], start, size), (start, end)


def test_whole_objects_stream_and_streamed_ones_are_whole(store: ObjectStore) -> None:
    store.put("p.jpg", b"\xff\xd8a picture", content_type="image/jpeg")
    with store.open("p.jpg") as stream:
        assert stream.read() == b"\xff\xd8a picture"
    assert store.get_range("p.jpg", 2, 4).data == b"a "
    assert store.get_range("p.jpg", 2, 4).size == 11
    store.put_stream("s", iter([b"one ", b"", b"two"]), content_type=BINARY)
    assert store.get("s") == b"one two"
    store.put_stream("s", iter([b"three"]), content_type=BINARY)  # replaced
    assert store.get("s") == b"three"


def test_an_empty_stream_is_an_empty_object(store: ObjectStore) -> None:
    store.put_stream("empty", iter(()), content_type=BINARY)
    assert store.exists("empty")
    assert store.get("empty") == b""
    with store.open("empty") as stream:
        assert stream.read() == b""
    got = store.get_range("empty", 0, 10)
    assert (got.data, got.size) == (b"", 0)


def test_missing_objects_and_wrong_ranges(store: ObjectStore) -> None:
    with pytest.raises(ObjectMissing):
        store.open("nope")
    with pytest.raises(ObjectMissing):
        store.get_range("nope", 0, 10)
    with pytest.raises(ObjectMissing):
        store.get_range("nope", 3, 3)
    store.put("k", b"x", content_type=BINARY)
    for start, end in [(-1, 2), (3, 2)]:
        with pytest.raises(ValueError, match="range"):
            store.get_range("k", start, end)


@pytest.mark.parametrize("fail_after", [1, 20], ids=["within-a-part", "after-parts"])
def test_an_interrupted_write_leaves_nothing_behind(
    store: ObjectStore, tmp_path: Path, fail_after: int
) -> None:
    """A fresh key stays absent; an existing one keeps its object. No temp file (local
    folder) and no multipart upload (S3) is left: they may hold an original's bytes."""
    store.put("old", b"the object before", content_type=BINARY)
    for key in ("new", "old"):
        with pytest.raises(ClientGoneError):
            store.put_stream(key, _blocks(40 * MIB, fail_after=fail_after), content_type=BINARY)
    assert not store.exists("new")
    assert [o.key for o in store.list()] == ["old"]
    assert store.get("old") == b"the object before"
    assert _pending_uploads(store) == []
    assert sorted(p.name for p in _files(tmp_path)) in ([], ["old"])


def _vm(field: str) -> int:
    """A memory figure of this process, in bytes, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


class _PeakRss:
    """The process's peak RSS from now on: the kernel's high-water mark, reset here
    (`/proc/self/clear_refs`), else the largest of the samples taken."""

    def __init__(self) -> None:
        gc.collect()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._hwm = True
        except OSError:
            self._hwm = False
        self.start = _vm("VmRSS")
        self._sampled = self.start

    def sample(self) -> None:
        self._sampled = max(self._sampled, _vm("VmRSS"))

    def growth(self) -> int:
        self.sample()
        return (_vm("VmHWM") if self._hwm else self._sampled) - self.start


def _checksummed(total: int, peak: _PeakRss, sums: list[int]) -> Iterator[bytes]:
    crc = 0
    for i, chunk in enumerate(_blocks(total)):
        crc = zlib.crc32(chunk, crc)
        if i % 64 == 0:
            peak.sample()
        yield chunk
    sums.append(crc)


# Every store, and the encryption once: its segments are the same around any store, and
# each gigabyte through the moto server costs some 40 s of the CI's two cores.
@pytest.mark.slow
@pytest.mark.parametrize("store_factory", ["local", "s3", "fake", "local-encrypted"], indirect=True)
def test_a_gigabyte_streams_through_in_bounded_memory(store: ObjectStore) -> None:
    # Once small first: the drivers' lazy start-up (botocore's models, a first
    # connection) is not the streaming's memory.
    store.put_stream("warm", _blocks(20 * MIB), content_type=BINARY)
    with store.open("warm") as stream:
        while stream.read(MIB):
            pass
    store.delete("warm")
    peak = _PeakRss()
    written: list[int] = []
    store.put_stream("big", _checksummed(GIB, peak, written), content_type=BINARY)
    crc, size = 0, 0
    with store.open("big") as stream:
        while chunk := stream.read(MIB):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            if size % (64 * MIB) == 0:
                peak.sample()
    assert (size, crc) == (GIB, written[0])
    growth = peak.growth()
    print(f"RSS grew by {growth / MIB:.1f} MiB")  # shown with -s: the figure, not just the verdict
    assert growth < RSS_BOUND, f"RSS grew by {growth / MIB:.0f} MiB"
    store.delete("big")
