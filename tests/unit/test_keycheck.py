"""The readiness of the originals key: the key check objects, looked at once a minute;
an original that did not open, until one does; the store's outage kept apart; the
gauge `imageblur_worker_ready` and the worker listener's `/readyz` that show it."""

from __future__ import annotations

import base64

import httpx
import pytest
from structlog.testing import capture_logs

from imageblur.adapters.encrypted_store import EncryptedStore, Keyring, key_id
from imageblur.domain import OriginalUnreadable
from imageblur.entrypoints.metrics_server import MetricsServer
from imageblur.keycheck import RECHECK_S, RETRY_S, KeyCheck
from imageblur.metrics import Metrics
from unit.fakes import FakeStore

KEY, OLD, OTHER = b"K" * 32, b"O" * 32, b"X" * 32


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _check(store: EncryptedStore, ticks: Ticks) -> KeyCheck:
    return KeyCheck(store, clock=ticks)


def test_a_process_with_a_key_writes_its_check_object_and_is_ready() -> None:
    inner, ticks = FakeStore("in"), Ticks()
    with capture_logs() as logs:
        keys = _check(EncryptedStore(inner, Keyring(KEY, [OLD])), ticks)
        assert keys.problem() is None
    assert set(inner.objects) == {f"_keycheck/{key_id(KEY)}"}
    assert [(e["event"], e.get("key_id")) for e in logs] == [("keycheck.written", key_id(KEY))]
    assert inner.puts == 1
    ticks.now += RECHECK_S
    assert keys.problem() is None and inner.puts == 1  # there: not written again


def test_a_check_object_that_does_not_open_makes_the_process_not_ready() -> None:
    inner, ticks = FakeStore("in"), Ticks()
    keys = _check(EncryptedStore(inner, Keyring(KEY)), ticks)
    assert keys.problem() is None
    name = f"_keycheck/{key_id(KEY)}"
    data, at = inner.objects[name]
    inner.objects[name] = (data[:-1] + bytes([data[-1] ^ 1]), at)
    assert keys.problem() is None  # looked at once a minute, not at every probe
    ticks.now += RECHECK_S
    with capture_logs() as logs:
        problem = keys.problem()
    assert problem is not None and key_id(KEY) in problem
    assert logs == [
        {"event": "keycheck.unreadable", "key_ids": [key_id(KEY)], "log_level": "error"}
    ]
    for secret in (KEY.decode(), base64.b64encode(KEY).decode(), KEY.hex()):
        assert secret not in problem and secret not in str(logs)
    inner.objects[name] = (data, at)  # put right again
    ticks.now += RECHECK_S
    assert keys.problem() is None


def test_a_former_keys_object_is_logged_once_and_is_no_reason_to_stop() -> None:
    """After a rotation the former key's object stays; a process without that key is
    still ready (its own originals open), and says once which key it lacks."""
    inner, ticks = FakeStore("in"), Ticks()
    EncryptedStore(inner, Keyring(OTHER)).check_keys()
    inner.age(f"_keycheck/{key_id(OTHER)}", 3600)
    EncryptedStore(inner, Keyring(KEY, [OTHER])).check_keys()  # the rotation's step 2
    keys = _check(EncryptedStore(inner, Keyring(KEY)), ticks)
    with capture_logs() as logs:
        assert keys.problem() is None
        ticks.now += RECHECK_S
        assert keys.problem() is None
    not_held = [e for e in logs if e["event"] == "keycheck.key_not_held"]
    assert not_held == [
        {"event": "keycheck.key_not_held", "key_id": key_id(OTHER), "log_level": "warning"}
    ]


@pytest.mark.parametrize("keyring", [Keyring(OTHER), Keyring(None), Keyring(OTHER, [OLD])])
def test_a_process_without_the_newest_key_is_not_ready_before_its_first_job(
    keyring: Keyring,
) -> None:
    """Started with a wrong key (or none), it cannot open what the others seal: not
    ready at once, and it writes no object of its own, which would stop the others."""
    inner, ticks = FakeStore("in"), Ticks()
    EncryptedStore(inner, Keyring(OLD)).check_keys()
    inner.age(f"_keycheck/{key_id(OLD)}", 3600)
    EncryptedStore(inner, Keyring(KEY, [OLD])).check_keys()
    with capture_logs() as logs:
        problem = _check(EncryptedStore(inner, keyring), ticks).problem()
    assert problem is not None and key_id(KEY) in problem and "newest" in problem
    assert set(inner.objects) == {f"_keycheck/{key_id(KEY)}", f"_keycheck/{key_id(OLD)}"}
    errors = [e for e in logs if e["log_level"] == "error"]
    assert errors == [
        {"event": "keycheck.newest_key_not_held", "key_ids": [key_id(KEY)], "log_level": "error"}
    ]
    # Its keys fixed, it is ready, and still writes nothing: the newest key is there.
    assert _check(EncryptedStore(inner, Keyring(KEY, [OLD])), ticks).problem() is None


def test_an_original_that_did_not_open_makes_it_not_ready_until_one_opens() -> None:
    inner, ticks = FakeStore("in"), Ticks()
    EncryptedStore(inner, Keyring(OTHER)).put("a.jpg", b"a", content_type="image/jpeg")
    store = EncryptedStore(inner, Keyring(KEY))
    store.put("b.jpg", b"b", content_type="image/jpeg")
    keys = _check(store, ticks)
    assert keys.problem() is None
    with pytest.raises(OriginalUnreadable):
        store.get("a.jpg")
    problem = keys.problem()
    assert problem is not None and key_id(OTHER) in problem and "a.jpg" in problem
    assert store.get("b.jpg") == b"b"
    assert keys.problem() is None


def test_a_store_outage_keeps_the_keys_verdict() -> None:
    """The store's own check reports an outage; the key is not blamed for it."""
    inner, ticks = FakeStore("in"), Ticks()
    keys = _check(EncryptedStore(inner, Keyring(KEY)), ticks)
    inner.down = True
    assert keys.problem() is None  # never looked yet: nothing against the key
    assert inner.objects == {}
    inner.down = False
    ticks.now += RETRY_S  # asked again soon after an outage, not a minute later
    assert keys.problem() is None
    assert set(inner.objects) == {f"_keycheck/{key_id(KEY)}"}


def test_the_gauge_and_the_listeners_readyz_follow_the_check() -> None:
    inner, ticks = FakeStore("in"), Ticks()
    EncryptedStore(inner, Keyring(OTHER)).put("a.jpg", b"a", content_type="image/jpeg")
    store = EncryptedStore(inner, Keyring(KEY))
    keys = _check(store, ticks)
    metrics = Metrics()
    metrics.watch_worker_ready(lambda: keys.problem() is None)
    metrics.watch_worker_ready(lambda: False)  # a second runtime: the first one stays
    server = MetricsServer(
        metrics.registry,
        host="127.0.0.1",
        port=0,
        token="t" * 20,
        readiness=lambda: {"originals_key": keys.problem()},
    )
    url = f"http://127.0.0.1:{server.start()}"
    try:
        assert metrics.registry.get_sample_value("imageblur_worker_ready") == 1.0
        ready = httpx.get(f"{url}/readyz", timeout=5)  # no token: a kubelet has none
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"originals_key": "ok"}}
        with pytest.raises(OriginalUnreadable):
            store.get("a.jpg")
        assert metrics.registry.get_sample_value("imageblur_worker_ready") == 0.0
        with capture_logs() as logs:
            unready = httpx.get(f"{url}/readyz", timeout=5)
        assert unready.status_code == 503
        assert unready.json() == {
            "status": "unavailable",
            "checks": {"originals_key": "unavailable"},
        }
        assert "a.jpg" not in unready.text and key_id(OTHER) not in unready.text
        assert logs[0]["event"] == "readiness.failed" and key_id(OTHER) in logs[0]["error"]
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 401  # still guarded
    finally:
        server.stop()
