"""The envelope of streamed originals (format version 2, `segmented_envelope`) around
each store (local folder, S3 via moto, the fake): it round-trips, reads by ranges,
refuses a truncated, reordered, altered or moved envelope and a key it does not hold,
follows key rotation, and leaves version 1 envelopes (whole pictures) readable."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from imageblur.adapters import segmented_envelope as v2
from imageblur.adapters.encrypted_store import EncryptedStore, Keyring, Resealed, key_id
from imageblur.domain import OriginalUnreadable
from imageblur.ports import ObjectStore

from .conftest import StoreFactory

PLAIN_STORES = pytest.mark.parametrize("store_factory", ["local", "s3", "fake"], indirect=True)
OLD_KEY, NEW_KEY, OTHER_KEY = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
SEG = v2.SEGMENT_BYTES
SEALED_SEG = SEG + v2.TAG_BYTES
H = v2.HEADER_BYTES
BINARY = "application/octet-stream"


def _stream(data: bytes, chunk: int = 300_001) -> list[bytes]:
    """`data` in chunks that do not line up with the segments."""
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def _put(store: ObjectStore, key: str, data: bytes) -> None:
    store.put_stream(key, _stream(data), content_type=BINARY)


def _read(store: ObjectStore, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()


@PLAIN_STORES
@pytest.mark.parametrize(
    "size", [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG, 3 * SEG + 5], ids=lambda n: f"{n}B"
)
def test_round_trip_at_every_size_that_matters(store_factory: StoreFactory, size: int) -> None:
    """Empty, under, at and over a segment, and an exact multiple of the segment size
    (whose last segment is a full one, marked last: no empty segment after it)."""
    inner = store_factory("originals")
    store = EncryptedStore(inner, Keyring(NEW_KEY))
    data = os.urandom(size)
    _put(store, "in/v", data)
    at_rest = inner.get("in/v")
    segments = max(1, -(-size // SEG))
    assert len(at_rest) == H + size + segments * v2.TAG_BYTES
    assert at_rest.startswith(v2.MAGIC + bytes([2]) + key_id(NEW_KEY).encode())
    assert size < 64 or data[:64] not in at_rest
    assert store.get("in/v") == data
    assert _read(store, "in/v") == data
    got = store.get_range("in/v", 0, size + 10)
    assert (got.data, got.size) == (data, size)


@PLAIN_STORES
def test_ranges_across_segment_boundaries(store_factory: StoreFactory) -> None:
    inner = store_factory("originals")
    store = EncryptedStore(inner, Keyring(NEW_KEY))
    data = os.urandom(3 * SEG + 100)
    _put(store, "in/v", data)
    for start, end in [
        (0, 1),
        (SEG - 5, SEG + 5),
        (SEG, 2 * SEG),
        (SEG - 1, 3 * SEG + 1),
        (3 * SEG, 3 * SEG + 100),
        (3 * SEG + 50, 5 * SEG),
        (len(data), len(data) + 1),
        (7, 7),
        (0, len(data)),
    ]:
        got = store.get_range("in/v", start, end)
        assert (got.data, got.start, got.size) == (data[start:end], start, len(data))


def _segment(at_rest: bytes, index: int) -> bytes:
    return at_rest[H + index * SEALED_SEG : H + (index + 1) * SEALED_SEG]


def _flip(at: int) -> Callable[[bytes], bytes]:
    def flip(at_rest: bytes) -> bytes:
        altered = bytearray(at_rest)
        altered[at] ^= 0x01
        return bytes(altered)

    return flip


# Each way to alter an envelope of 3.5 segments at rest.
TAMPER: dict[str, Callable[[bytes], bytes]] = {
    "dropped-last": lambda at_rest: at_rest[: H + 3 * SEALED_SEG],
    "cut-short": lambda at_rest: at_rest[:-5],
    "swapped": lambda at_rest: (
        at_rest[:H] + _segment(at_rest, 1) + _segment(at_rest, 0) + at_rest[H + 2 * SEALED_SEG :]
    ),
    "extended": lambda at_rest: at_rest + _segment(at_rest, 3),
    "flipped": _flip(H + SEALED_SEG + 10),  # in segment 1
    "header": _flip(H - 1),  # the nonce prefix's last byte
}


@PLAIN_STORES
def test_truncated_reordered_or_altered_envelopes_are_refused(
    store_factory: StoreFactory,
) -> None:
    inner = store_factory("originals")
    store = EncryptedStore(inner, Keyring(NEW_KEY))
    data = os.urandom(3 * SEG + SEG // 2)
    for name, tamper in TAMPER.items():
        key = f"in/{name}"
        _put(store, key, data)
        inner.put(key, tamper(inner.get(key)), content_type=BINARY)
        with pytest.raises(OriginalUnreadable, match=key) as caught:
            store.get(key)
        assert not caught.value.keys_at_fault  # an altered object says nothing of the keys
        with pytest.raises(OriginalUnreadable):
            _read(store, key)
    for name in ("dropped-last", "cut-short", "extended", "header"):
        for start in (len(data) - 10, len(data) + 10):  # reaching the end, or past it
            with pytest.raises(OriginalUnreadable):
                store.get_range(f"in/{name}", start, len(data) + 20)
    # A range is checked where it is read: before what was altered it reads true.
    assert store.get_range("in/dropped-last", 0, 100).data == data[:100]
    assert store.get_range("in/flipped", 5, SEG).data == data[5:SEG]
    with pytest.raises(OriginalUnreadable, match="segment 1"):
        store.get_range("in/flipped", SEG - 1, SEG + 1)
    with pytest.raises(OriginalUnreadable, match="segment 0"):
        store.get_range("in/swapped", 0, 10)


@PLAIN_STORES
def test_an_envelope_moved_to_another_key_is_refused(store_factory: StoreFactory) -> None:
    inner = store_factory("originals")
    store = EncryptedStore(inner, Keyring(NEW_KEY))
    _put(store, "in/a", os.urandom(SEG + 10))
    inner.put("in/b", inner.get("in/a"), content_type=BINARY)
    for read in (store.get, lambda k: _read(store, k), lambda k: store.get_range(k, 0, 5)):
        with pytest.raises(OriginalUnreadable, match="in/b"):
            read("in/b")


@PLAIN_STORES
def test_an_edited_segment_size_is_refused_before_reading_it(
    store_factory: StoreFactory,
) -> None:
    inner = store_factory("originals")
    store = EncryptedStore(inner, Keyring(NEW_KEY))
    _put(store, "in/v", os.urandom(100))
    at_rest = bytearray(inner.get("in/v"))
    at_rest[H - v2.PREFIX_BYTES - 4 : H - v2.PREFIX_BYTES] = (1 << 31).to_bytes(4, "big")
    inner.put("in/v", bytes(at_rest), content_type=BINARY)
    with pytest.raises(OriginalUnreadable, match="invalid segment size"):
        _read(store, "in/v")


@PLAIN_STORES
def test_a_key_not_held_is_refused_naming_only_key_ids(store_factory: StoreFactory) -> None:
    inner = store_factory("originals")
    EncryptedStore(inner, Keyring(OTHER_KEY)).put_stream(
        "in/v", _stream(os.urandom(SEG + 1)), content_type=BINARY
    )
    store = EncryptedStore(inner, Keyring(NEW_KEY, [OLD_KEY]))
    reads = [store.get, lambda k: _read(store, k), lambda k: store.get_range(k, 0, 5)]
    for read in reads:
        with pytest.raises(OriginalUnreadable, match=key_id(OTHER_KEY)) as caught:
            read("in/v")
        assert caught.value.keys_at_fault
        assert NEW_KEY.hex() not in str(caught.value) and OTHER_KEY.hex() not in str(caught.value)
        assert key_id(OTHER_KEY) in (store.last_unreadable or "")
    _put(store, "in/mine", b"opens")
    assert store.get_range("in/mine", 0, 5).data == b"opens"
    assert store.last_unreadable is None  # an object opened since


@PLAIN_STORES
def test_rotation_reads_through_old_keys_and_reseal_streams(store_factory: StoreFactory) -> None:
    inner = store_factory("originals")
    data = os.urandom(2 * SEG + 7)
    _put(EncryptedStore(inner, Keyring(OLD_KEY)), "in/v", data)
    rotated = EncryptedStore(inner, Keyring(NEW_KEY, [OLD_KEY]))
    assert _read(rotated, "in/v") == data
    assert rotated.get_range("in/v", SEG - 3, SEG + 3).data == data[SEG - 3 : SEG + 3]
    before = inner.get("in/v")
    assert rotated.reseal("in/v", dry_run=True) is Resealed.RESEALED
    assert inner.get("in/v") == before
    assert rotated.reseal("in/v") is Resealed.RESEALED
    at_rest = inner.get("in/v")
    assert at_rest.startswith(v2.MAGIC + bytes([2]) + key_id(NEW_KEY).encode())
    only_new = EncryptedStore(inner, Keyring(NEW_KEY))
    assert only_new.get("in/v") == data and _read(only_new, "in/v") == data
    assert only_new.reseal("in/v") is Resealed.CURRENT
    assert inner.get("in/v") == at_rest  # left as it was


@PLAIN_STORES
def test_a_reseal_that_fails_midway_leaves_the_envelope(store_factory: StoreFactory) -> None:
    inner = store_factory("originals")
    data = os.urandom(3 * SEG)
    _put(EncryptedStore(inner, Keyring(OLD_KEY)), "in/v", data)
    altered = bytearray(inner.get("in/v"))
    altered[H + 2 * SEALED_SEG + 3] ^= 0x01  # segment 2: found after two are re-sealed
    inner.put("in/v", bytes(altered), content_type=BINARY)
    with pytest.raises(OriginalUnreadable, match="segment 2"):
        EncryptedStore(inner, Keyring(NEW_KEY, [OLD_KEY])).reseal("in/v")
    assert inner.get("in/v") == bytes(altered)


@PLAIN_STORES
def test_version_1_and_plaintext_objects_read_by_every_method(
    store_factory: StoreFactory,
) -> None:
    inner = store_factory("originals")
    picture = b"\xff\xd8 a JPEG"
    EncryptedStore(inner, Keyring(OLD_KEY)).put("in/picture", picture, content_type=BINARY)
    assert inner.get("in/picture")[len(v2.MAGIC)] == 1
    inner.put("in/plain", b"stored before encryption", content_type=BINARY)
    store = EncryptedStore(inner, Keyring(NEW_KEY, [OLD_KEY]), allow_plaintext=True)
    assert _read(store, "in/picture") == b"\xff\xd8 a JPEG"
    got = store.get_range("in/picture", 3, 100)
    assert (got.data, got.size) == (b"a JPEG", 9)
    assert _read(store, "in/plain") == b"stored before encryption"
    assert store.get_range("in/plain", 7, 13).data == b"before"
    refusing = EncryptedStore(inner, Keyring(NEW_KEY))
    for read in (lambda k: _read(refusing, k), lambda k: refusing.get_range(k, 0, 5)):
        with pytest.raises(OriginalUnreadable, match="stored without encryption"):
            read("in/plain")
    # Without a current key, a streamed object is stored as it comes.
    EncryptedStore(inner, Keyring(None)).put_stream("in/off", [b"as ", b"is"], content_type=BINARY)
    assert inner.get("in/off") == b"as is"
