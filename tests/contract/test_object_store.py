"""The ObjectStore contract, on every adapter (local folder, S3 via a moto server) and on
the unit tests' fake."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from imageblur.domain import ObjectMissing, StoreUnavailable
from imageblur.ports import ObjectStore

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
    assert listed["in/2"].size == 2
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
