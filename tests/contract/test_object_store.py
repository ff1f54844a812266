"""The ObjectStore contract, on every adapter (local folder, S3 via a moto server) and on
the unit tests' fake, each as it is and wrapped in the EncryptedStore of originals; then
what only the encrypted store promises (unreadable at rest, key rotation, tampering)."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from PIL import Image, UnidentifiedImageError

from imageblur.adapters.encrypted_store import EncryptedStore, Keyring, Resealed, key_id
from imageblur.bootstrap import build_backends
from imageblur.config import load_settings
from imageblur.domain import KeyCheckReport, ObjectMissing, OriginalUnreadable, StoreUnavailable
from imageblur.ports import ObjectStore
from support import wait_until

from .conftest import StoreFactory

JPEG = "image/jpeg"


def test_put_then_get_returns_the_bytes(store: ObjectStore) -> None:
    store.put("in/a.jpg", b"\xff\xd8hello", content_type=JPEG)
    assert store.get("in/a.jpg") == b"\xff\xd8hello"
    assert store.exists("in/a.jpg")


def test_put_replaces_an_existing_object(store: ObjectStore) -> None:
    store.put("k", b"one", content_type=JPEG)
    store.put("k", b"two", content_type=JPEG)
    assert store.get("k") == b"two"


def test_missing_key(store: ObjectStore) -> None:
    assert not store.exists("nope")
    with pytest.raises(ObjectMissing):
        store.get("nope")


def test_delete_removes_and_is_idempotent(store: ObjectStore) -> None:
    store.put("gone", b"x", content_type=JPEG)
    store.delete("gone")
    assert not store.exists("gone")
    store.delete("gone")  # absent: not an error
    store.delete("never-existed")


def test_large_object_round_trips(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40_000  # ~10 MB
    store.put("big", data, content_type="application/octet-stream")
    assert store.get("big") == data


def test_list_by_prefix_with_sizes_and_times(store: ObjectStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    store.put("in/1", b"a", content_type=JPEG)
    store.put("in/2", b"bb", content_type=JPEG)
    store.put("out/1", b"ccc", content_type=JPEG)
    listed = {o.key: o for o in store.list("in/")}
    assert set(listed) == {"in/1", "in/2"}
    # Sizes at rest: an encrypted store adds the same envelope to every object.
    assert listed["in/2"].size - listed["in/1"].size == 1 and listed["in/1"].size >= 1
    assert all(o.modified_at.tzinfo is not None for o in listed.values())
    assert all(o.modified_at >= before for o in listed.values())
    assert {o.key for o in store.list()} == {"in/1", "in/2", "out/1"}


def test_locations_are_isolated(store_factory: Callable[[str], ObjectStore]) -> None:
    a, b = store_factory("a"), store_factory("b")
    a.put("same", b"in a", content_type=JPEG)
    assert not b.exists("same")
    assert [o.key for o in b.list()] == []
    b.put("same", b"in b", content_type=JPEG)
    assert a.get("same") == b"in a"
    assert a.url("same") != b.url("same")


def test_url_is_stable_and_names_the_store(store: ObjectStore) -> None:
    store.put("x/y.png", b"p", content_type="image/png")
    url = store.url("x/y.png")
    assert url == store.url("x/y.png")
    assert url.startswith(("file://", "s3://", "fake://"))
    assert url.endswith("x/y.png")


def test_presigned_url_serves_the_object_or_is_absent(store: ObjectStore) -> None:
    store.put("p.jpg", b"presigned bytes", content_type=JPEG)
    url = store.presigned_url("p.jpg", expires_s=60)
    if url is None:  # stores without direct access (a local folder) say so
        return
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == b"presigned bytes"


def test_concurrent_puts_all_land(store: ObjectStore) -> None:
    errors: list[BaseException] = []

    def put(i: int) -> None:
        try:
            store.put(f"c/{i}", str(i).encode() * 1000, content_type=JPEG)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(list(store.list("c/"))) == 16
    assert store.get("c/7") == b"7" * 1000


def test_check_passes_when_reachable(store: ObjectStore) -> None:
    store.check()


def test_unreachable_store_raises_store_unavailable(broken_store: ObjectStore) -> None:
    with pytest.raises(StoreUnavailable):
        broken_store.check()
    with pytest.raises(StoreUnavailable):
        broken_store.put("k", b"x", content_type=JPEG)


# --- the encryption of originals at rest ----------------------------------------------

PLAIN_STORES = pytest.mark.parametrize("store_factory", ["local", "s3", "fake"], indirect=True)
OLD_KEY, NEW_KEY, OTHER_KEY = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(out, format="JPEG")
    return out.getvalue()


@PLAIN_STORES
def test_an_original_at_rest_is_not_a_readable_image(store_factory: StoreFactory) -> None:
    inner = store_factory("originals")
    encrypted = EncryptedStore(inner, Keyring(NEW_KEY))
    photo = _jpeg()
    encrypted.put("in/a.jpg", photo, content_type=JPEG)
    at_rest = inner.get("in/a.jpg")
    assert not at_rest.startswith(b"\xff\xd8")
    assert b"JFIF" not in at_rest and photo[100:140] not in at_rest
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(at_rest))
    assert key_id(NEW_KEY).encode() in at_rest[:32]  # the envelope names its key
    assert encrypted.get("in/a.jpg") == photo
    assert Image.open(io.BytesIO(encrypted.get("in/a.jpg"))).size == (64, 48)


@PLAIN_STORES
def test_an_original_sealed_with_a_key_now_old_still_opens(store_factory: StoreFactory) -> None:
    inner = store_factory("originals")
    EncryptedStore(inner, Keyring(OLD_KEY)).put("in/a.jpg", b"before", content_type=JPEG)
    rotated = EncryptedStore(inner, Keyring(NEW_KEY, [OLD_KEY]))
    assert rotated.get("in/a.jpg") == b"before"
    rotated.put("in/b.jpg", b"after", content_type=JPEG)
    assert key_id(NEW_KEY).encode() in inner.get("in/b.jpg")[:32]
    assert rotated.get("in/b.jpg") == b"after"


@PLAIN_STORES
def test_an_unknown_key_id_is_unreadable_naming_only_ids(store_factory: StoreFactory) -> None:
    inner = store_factory("originals")
    EncryptedStore(inner, Keyring(OLD_KEY)).put("in/a.jpg", b"secret", content_type=JPEG)
    with pytest.raises(OriginalUnreadable, match=key_id(OLD_KEY)) as caught:
        EncryptedStore(inner, Keyring(NEW_KEY)).get("in/a.jpg")
    message = str(caught.value)
    assert key_id(NEW_KEY) in message
    for key in (OLD_KEY, NEW_KEY):
        assert base64.b64encode(key).decode() not in message and key.hex() not in message


@PLAIN_STORES
def test_tampered_moved_or_truncated_ciphertext_is_refused(store_factory: StoreFactory) -> None:
    inner = store_factory("originals")
    encrypted = EncryptedStore(inner, Keyring(NEW_KEY))
    encrypted.put("in/a.jpg", _jpeg(), content_type=JPEG)
    sealed = inner.get("in/a.jpg")
    flipped = bytearray(sealed)
    flipped[-40] ^= 0x01
    inner.put("in/flipped.jpg", bytes(flipped), content_type=JPEG)
    inner.put("in/moved.jpg", sealed, content_type=JPEG)  # intact, under another key
    inner.put("in/short.jpg", sealed[:30], content_type=JPEG)
    for key in ("in/flipped.jpg", "in/moved.jpg", "in/short.jpg"):
        with pytest.raises(OriginalUnreadable, match=key):
            encrypted.get(key)


@PLAIN_STORES
def test_a_plaintext_original_is_refused_while_a_key_is_set(store_factory: StoreFactory) -> None:
    """Else anyone who can write to the store slips in an original of their choosing."""
    inner = store_factory("originals")
    photo = _jpeg()
    inner.put("in/legacy.jpg", photo, content_type=JPEG)
    encrypted = EncryptedStore(inner, Keyring(NEW_KEY))
    with pytest.raises(OriginalUnreadable, match=r"in/legacy\.jpg: stored without encryption"):
        encrypted.get("in/legacy.jpg")
    assert "in/legacy.jpg" in (encrypted.last_unreadable or "")
    allowed = EncryptedStore(inner, Keyring(NEW_KEY), allow_plaintext=True)
    assert allowed.get("in/legacy.jpg") == photo
    # Without a current key (encryption off, or switched off) it is read as it is.
    assert EncryptedStore(inner, Keyring(None)).get("in/legacy.jpg") == photo
    assert EncryptedStore(inner, Keyring(None, [OLD_KEY])).get("in/legacy.jpg") == photo


@PLAIN_STORES
def test_a_sealed_original_without_any_key_is_unreadable(store_factory: StoreFactory) -> None:
    inner = store_factory("originals")
    EncryptedStore(inner, Keyring(OLD_KEY)).put("in/a.jpg", _jpeg(), content_type=JPEG)
    no_key = EncryptedStore(inner, Keyring(None))
    with pytest.raises(OriginalUnreadable, match="no originals key is set"):
        no_key.get("in/a.jpg")
    no_key.put("in/b.jpg", b"plain", content_type=JPEG)
    assert inner.get("in/b.jpg") == b"plain"


@PLAIN_STORES
def test_the_last_refusal_is_kept_until_an_original_opens(store_factory: StoreFactory) -> None:
    inner = store_factory("originals")
    EncryptedStore(inner, Keyring(OLD_KEY)).put("in/old.jpg", b"x", content_type=JPEG)
    encrypted = EncryptedStore(inner, Keyring(NEW_KEY))
    encrypted.put("in/new.jpg", b"y", content_type=JPEG)
    assert encrypted.last_unreadable is None
    with pytest.raises(OriginalUnreadable):
        encrypted.get("in/old.jpg")
    assert key_id(OLD_KEY) in (encrypted.last_unreadable or "")
    with pytest.raises(ObjectMissing):
        encrypted.get("in/absent.jpg")
    assert encrypted.last_unreadable is not None  # a missing object proves nothing
    assert encrypted.get("in/new.jpg") == b"y"
    assert encrypted.last_unreadable is None
    altered = bytearray(inner.get("in/new.jpg"))
    altered[-1] ^= 0x01
    inner.put("in/altered.jpg", bytes(altered), content_type=JPEG)
    with pytest.raises(OriginalUnreadable) as caught:
        encrypted.get("in/altered.jpg")
    assert not caught.value.keys_at_fault
    assert encrypted.last_unreadable is None  # one altered object says nothing of the keys


@PLAIN_STORES
def test_key_check_objects_are_written_opened_and_never_listed(
    store_factory: StoreFactory,
) -> None:
    inner = store_factory("originals")
    first = EncryptedStore(inner, Keyring(OLD_KEY))
    assert first.check_keys() == KeyCheckReport(written=key_id(OLD_KEY))
    assert first.check_keys() == KeyCheckReport()  # there already: not written again
    # The next key comes later, past the store's clock tick (S3: a second).
    (written,) = [o.modified_at for o in inner.list("_keycheck/")]
    wait_until(lambda: datetime.now(UTC) > written + timedelta(seconds=1), what="the next tick")
    first.put("in/a.jpg", b"an original", content_type=JPEG)
    rotated = EncryptedStore(inner, Keyring(NEW_KEY, [OLD_KEY]))
    assert rotated.check_keys() == KeyCheckReport(written=key_id(NEW_KEY))
    at_rest = {o.key for o in inner.list()}
    assert at_rest == {"in/a.jpg", f"_keycheck/{key_id(OLD_KEY)}", f"_keycheck/{key_id(NEW_KEY)}"}
    assert [o.key for o in rotated.list()] == ["in/a.jpg"]
    assert [o.key for o in rotated.list("_keycheck/")] == []
    # A process holding only the former key cannot open what the others now seal.
    assert first.check_keys() == KeyCheckReport(
        foreign=(key_id(NEW_KEY),), newest_not_held=(key_id(NEW_KEY),)
    )
    rotated_on = EncryptedStore(inner, Keyring(NEW_KEY))  # the former key dropped
    assert rotated_on.check_keys() == KeyCheckReport(foreign=(key_id(OLD_KEY),))
    for wrong in (Keyring(None), Keyring(OTHER_KEY)):  # no key, a wrong one
        report = EncryptedStore(inner, wrong).check_keys()
        assert report.written is None and report.unreadable == ()
        assert set(report.foreign) == {key_id(OLD_KEY), key_id(NEW_KEY)}
        assert key_id(NEW_KEY) in report.newest_not_held
    assert f"_keycheck/{key_id(OTHER_KEY)}" not in {o.key for o in inner.list()}


@PLAIN_STORES
def test_a_key_check_object_that_does_not_open_is_reported(store_factory: StoreFactory) -> None:
    inner = store_factory("originals")
    encrypted = EncryptedStore(inner, Keyring(NEW_KEY, [OLD_KEY]))
    encrypted.check_keys()
    name = f"_keycheck/{key_id(NEW_KEY)}"
    altered = bytearray(inner.get(name))
    altered[-1] ^= 0x01
    inner.put(name, bytes(altered), content_type=JPEG)
    # The old key's object, but not the text every process writes: also refused.
    EncryptedStore(inner, Keyring(OLD_KEY)).put(
        f"_keycheck/{key_id(OLD_KEY)}", b"something else", content_type=JPEG
    )
    report = encrypted.check_keys()
    assert report.written is None
    assert sorted(report.unreadable) == sorted([key_id(NEW_KEY), key_id(OLD_KEY)])


@PLAIN_STORES
def test_reseal_brings_every_original_under_the_current_key(store_factory: StoreFactory) -> None:
    inner = store_factory("originals")
    photo = _jpeg()
    inner.put("in/plain.jpg", photo, content_type=JPEG)
    EncryptedStore(inner, Keyring(OLD_KEY)).put("in/old.jpg", b"old", content_type=JPEG)
    EncryptedStore(inner, Keyring(OTHER_KEY)).put("in/lost.jpg", b"?", content_type=JPEG)
    store = EncryptedStore(inner, Keyring(NEW_KEY, [OLD_KEY]))
    store.put("in/new.jpg", b"new", content_type=JPEG)
    before = {o.key: inner.get(o.key) for o in inner.list()}
    assert store.reseal("in/plain.jpg", dry_run=True) is Resealed.SEALED
    assert store.reseal("in/old.jpg", dry_run=True) is Resealed.RESEALED
    assert {o.key: inner.get(o.key) for o in inner.list()} == before  # a dry run
    assert store.reseal("in/plain.jpg") is Resealed.SEALED
    assert store.reseal("in/old.jpg") is Resealed.RESEALED
    assert store.reseal("in/new.jpg") is Resealed.CURRENT
    assert inner.get("in/new.jpg") == before["in/new.jpg"]  # left as it was
    with pytest.raises(OriginalUnreadable, match=key_id(OTHER_KEY)):
        store.reseal("in/lost.jpg")
    assert inner.get("in/lost.jpg") == before["in/lost.jpg"]
    only_new = EncryptedStore(inner, Keyring(NEW_KEY))
    assert only_new.get("in/plain.jpg") == photo and only_new.get("in/old.jpg") == b"old"
    assert only_new.reseal("in/old.jpg") is Resealed.CURRENT
    with pytest.raises(ObjectMissing):
        only_new.reseal("in/gone.jpg")


@PLAIN_STORES
def test_old_keys_alone_open_but_no_longer_seal(store_factory: StoreFactory) -> None:
    inner = store_factory("originals")
    EncryptedStore(inner, Keyring(OLD_KEY)).put("in/a.jpg", b"sealed", content_type=JPEG)
    switched_off = EncryptedStore(inner, Keyring(None, [OLD_KEY]))
    switched_off.put("in/b.jpg", b"plain", content_type=JPEG)
    assert inner.get("in/b.jpg") == b"plain"
    assert switched_off.get("in/a.jpg") == b"sealed"


def test_the_keyring_shows_ids_never_keys() -> None:
    ring = Keyring(NEW_KEY, [OLD_KEY, OTHER_KEY])
    assert key_id(NEW_KEY) == hashlib.sha256(NEW_KEY).hexdigest()[:8]
    assert repr(ring) == (
        f"Keyring(current={key_id(NEW_KEY)!r}, "
        f"ids={[key_id(NEW_KEY), key_id(OLD_KEY), key_id(OTHER_KEY)]!r})"
    )
    with pytest.raises(ValueError, match="32 bytes"):
        Keyring(b"short")


def test_with_a_key_only_the_originals_are_encrypted(tmp_path: Path) -> None:
    key = base64.b64encode(NEW_KEY).decode()
    backends = build_backends(load_settings(data_dir=tmp_path, originals_key=key))
    try:
        photo = _jpeg()
        backends.originals.put("a.jpg", photo, content_type=JPEG)
        backends.results.put("a.jpg", photo, content_type=JPEG)
        assert not (tmp_path / "originals" / "a.jpg").read_bytes().startswith(b"\xff\xd8")
        assert backends.originals.get("a.jpg") == photo
        assert (tmp_path / "results" / "a.jpg").read_bytes() == photo
    finally:
        backends.close()
