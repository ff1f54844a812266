"""Keys, hostile and mistaken: a worker started with the wrong originals key (or none)
keeps every held original and says it is not ready; a plaintext original slipped into
the store is refused; a key check object that does not open makes the API not ready;
`imageblur reseal` seals what was left; keeping originals without a key refuses to start.
Real processes (`imageblur serve`, `api`, `worker`, `reseal`) on SQLite and a local folder.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from imageblur.adapters.encrypted_store import EncryptedStore, Keyring, key_id
from imageblur.adapters.local_store import LocalObjectStore
from imageblur.adapters.sqlite_repo import SqliteImageRepository
from imageblur.bootstrap import build
from imageblur.config import load_settings
from imageblur.domain import ErrorCode, Status
from imageblur.jobs import Outcome
from support import BILL, free_port, jpeg_bytes, run_server, wait_status, wait_until

KEY_A, KEY_B = bytes(range(32)), bytes(range(100, 132))
A, B = base64.b64encode(KEY_A).decode(), base64.b64encode(KEY_B).decode()
API_TOKEN = "api-token-0123456789abcdef"
REVIEWER_TOKEN = "reviewer-token-0123456789abcdef"
METRICS_TOKEN = "metrics-token-0123456789abcdef"
REVIEW = {
    "IMAGEBLUR_REVIEW": "required",
    "IMAGEBLUR_API_TOKEN": API_TOKEN,
    "IMAGEBLUR_REVIEWER_TOKEN": REVIEWER_TOKEN,
}
# Retries every half second; one attempt and almost no outage patience: were a key
# error counted as either, the first retries would dead-letter and delete.
IMPATIENT = {
    "IMAGEBLUR_RETRY_BASE_DELAY_S": "0.2",
    "IMAGEBLUR_RETRY_MAX_DELAY_S": "0.5",
    "IMAGEBLUR_MAX_ATTEMPTS": "1",
    "IMAGEBLUR_OUTAGE_PATIENCE_S": "0.1",
}


def imageblur(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imageblur.entrypoints.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "IMAGEBLUR_LOG_FORMAT": "json", **env},
        timeout=300,
    )


def secrets_of(*keys: bytes) -> list[str]:
    return [text for key in keys for text in (base64.b64encode(key).decode(), key.hex())]


class Worker:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def logs(self) -> list[dict[str, object]]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def readyz(self) -> httpx.Response:
        return httpx.get(f"{self.url}/readyz", timeout=5)

    def metrics(self) -> str:
        auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        return httpx.get(f"{self.url}/metrics", headers=auth, timeout=5).text


@contextmanager
def worker(data_dir: Path, env: dict[str, str], name: str) -> Iterator[Worker]:
    """`imageblur worker` on `data_dir`, with its metrics listener (and /readyz)."""
    port = free_port()
    log = data_dir.parent / f"worker-{name}.log"
    full_env = {
        **os.environ,
        "IMAGEBLUR_DATA_DIR": str(data_dir),
        "IMAGEBLUR_LOG_FORMAT": "json",
        "IMAGEBLUR_DETECTOR_THREADS": "2",
        "IMAGEBLUR_METRICS_PORT": str(port),
        "IMAGEBLUR_METRICS_TOKEN": METRICS_TOKEN,
        **env,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "imageblur.entrypoints.cli", "worker"],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Worker(process, f"http://127.0.0.1:{port}", log)
    try:

        def listening() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return running.readyz().status_code in (200, 503)
            except httpx.TransportError:
                return False

        wait_until(listening, timeout_s=90, what="the process to listen", details=log.read_text)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def originals(data_dir: Path) -> dict[str, bytes]:
    folder = data_dir / "originals"
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def held_pictures(data_dir: Path) -> tuple[str, str, str]:
    """Three pictures whose originals are held, sealed under key A: one held for review,
    one with a correction waiting for its render, one waiting for detection."""
    env = {**REVIEW, "IMAGEBLUR_ORIGINALS_KEY": A}
    reviewer = {"Authorization": f"Bearer {REVIEWER_TOKEN}"}
    upload = {"image": (BILL.name, BILL.read_bytes(), "image/jpeg")}
    with run_server(data_dir, env=env) as serve, serve.client() as c:
        c.headers.update(reviewer)
        held, corrected = (c.post("/picture", files=upload).json()["id"] for _ in range(2))
        for image_id in (held, corrected):
            assert wait_status(c, image_id, {"review", "failed"})["status"] == "review"
    # The API alone: what it queues stays queued (its queue is in-process).
    with run_server(data_dir, command="api", env=env) as api, api.client() as c:
        c.headers.update(reviewer)
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["originals_key"] == "ok"
        pending = c.post("/picture", files=upload).json()["id"]
        listed = c.get(f"/picture/{corrected}/regions").json()
        wanted = [{"id": r["id"], "hidden": True} for r in listed["regions"]]
        wanted.append({"x": 10, "y": 10, "width": 50, "height": 50, "hidden": True})
        answer = c.put(
            f"/picture/{corrected}/regions", json={"regions": wanted}, headers={"If-Match": '"0"'}
        )
        assert answer.status_code == 202, answer.text
    return held, corrected, pending


@pytest.mark.slow
def test_a_worker_with_a_wrong_key_or_none_keeps_every_held_original_and_is_not_ready(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    held, corrected, pending = held_pictures(data_dir)
    before = originals(data_dir)
    assert {f"{i}.jpg" for i in (held, corrected, pending)} <= set(before)
    repo = SqliteImageRepository(data_dir / "imageblur.sqlite3")
    mistakes = {
        "wrong-key": {**REVIEW, "IMAGEBLUR_ORIGINALS_KEY": B},
        "no-key": {"IMAGEBLUR_REVIEW": "off"},
    }
    try:
        for name, env in mistakes.items():
            with worker(data_dir, {**env, **IMPATIENT}, name) as w:

                def refused_again_and_again() -> bool:
                    lines = [e for e in w.logs() if e["event"] == "job.original_unreadable"]
                    return all(
                        sum(e["image_id"] == i for e in lines) >= 3 for i in (corrected, pending)
                    )

                wait_until(refused_again_and_again, timeout_s=90, details=w.log.read_text)
                unready = w.readyz()
                assert unready.status_code == 503, (name, unready.text)
                assert unready.json()["checks"] == {"originals_key": "unavailable"}
                assert "imageblur_worker_ready 0.0" in w.metrics()
                events = {e["event"] for e in w.logs()}
                assert not events & {"job.failed", "job.dead_lettered", "object.collected"}
                assert not any(s in w.log.read_text() for s in secrets_of(KEY_A, KEY_B))
            # Every original untouched; and no key check object of its own, which would
            # make the processes holding the right key stop.
            assert originals(data_dir) == before, name
            statuses = {i: repo.get(i) for i in (held, corrected, pending)}
            assert {i: r.status if r else None for i, r in statuses.items()} == {
                held: Status.REVIEW,
                corrected: Status.RENDERING,
                pending: Status.PENDING,
            }, name
            # Given back at every refusal: none used up (a correction's render starts at 0).
            waiting = [statuses[corrected], statuses[pending]]
            assert all(r is not None and r.attempts == 0 for r in waiting), statuses
            assert all(r and r.error_code is ErrorCode.ORIGINAL_UNREADABLE for r in waiting)
        # The key fixed (the new one current, the one that sealed them old): all go on.
        fixed = {**REVIEW, **IMPATIENT, "IMAGEBLUR_ORIGINALS_KEY": B}
        with worker(data_dir, {**fixed, "IMAGEBLUR_ORIGINALS_OLD_KEYS": A}, "fixed") as w:

            def rendered_and_detected() -> bool:
                records = [repo.get(i) for i in (corrected, pending)]
                return all(r is not None and r.status is Status.REVIEW for r in records)

            wait_until(rendered_and_detected, timeout_s=120, details=w.log.read_text)
            assert w.readyz().status_code == 200
            assert "imageblur_worker_ready 1.0" in w.metrics()
    finally:
        repo.close()
    kept = originals(data_dir)
    assert {f"{i}.jpg" for i in (held, corrected, pending)} <= set(kept)
    assert {f"_keycheck/{key_id(KEY_A)}", f"_keycheck/{key_id(KEY_B)}"} <= set(kept)


def test_a_plaintext_original_slipped_into_the_store_is_refused(tmp_path: Path) -> None:
    """Someone with write access to the bucket replaces a held original with a picture
    of their own, unsealed: with a key set it is never processed (nor deleted)."""
    settings = load_settings(data_dir=tmp_path, originals_key=A)
    container = build(settings, with_detector=True)
    try:
        record = container.images.submit(jpeg_bytes(64, 48))
        slipped = jpeg_bytes(64, 48, seed=7)
        (tmp_path / "originals" / record.input_key).write_bytes(slipped)
        processor = container.processor()
        delivery = container.backends.queue.receive(timeout_s=5)
        assert delivery is not None
        assert processor.handle(delivery) is Outcome.RETRY
        waiting = container.backends.repository.get(record.id)
        assert waiting is not None and waiting.status is Status.PENDING
        assert waiting.error_code is ErrorCode.ORIGINAL_UNREADABLE
        assert (tmp_path / "originals" / record.input_key).read_bytes() == slipped
        problem = container.key_problem()
        assert problem is not None and "stored without encryption" in problem
    finally:
        container.close()
    # Allowed explicitly (an upgrade not resealed yet), it is read as it is.
    allowed = load_settings(data_dir=tmp_path, originals_key=A, originals_allow_plaintext=True)
    container = build(allowed, with_detector=True)
    try:
        assert container.key_problem() is None
        # The retry's message was queued in the first process: publish the job again.
        assert container.reconciler().republish(everything_pending=True) == 1
        delivery = container.backends.queue.receive(timeout_s=5)
        assert delivery is not None
        assert container.processor().handle(delivery) is Outcome.DONE
    finally:
        container.close()


def test_a_key_check_object_that_does_not_open_makes_the_api_not_ready(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = EncryptedStore(LocalObjectStore(data_dir / "originals"), Keyring(KEY_A))
    assert store.check_keys().written == key_id(KEY_A)
    check = data_dir / "originals" / "_keycheck" / key_id(KEY_A)
    sealed = check.read_bytes()
    # Altered at rest: the tag's last byte flipped (set to 0 it was unchanged 1 in 256).
    check.write_bytes(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    env = {"IMAGEBLUR_ORIGINALS_KEY": A, "IMAGEBLUR_API_TOKEN": API_TOKEN}
    with run_server(data_dir, command="api", env=env) as api:
        answer = httpx.get(f"{api.url}/readyz", timeout=10)  # open, like /healthz
        assert answer.status_code == 503
        assert answer.json()["checks"]["originals_key"] == "unavailable"
        assert all(v == "ok" for k, v in answer.json()["checks"].items() if k != "originals_key")
        assert key_id(KEY_A) not in answer.text
        logs = api.logs()
    unreadable = [json.loads(line) for line in logs.splitlines() if "keycheck.unreadable" in line]
    assert unreadable and unreadable[0]["key_ids"] == [key_id(KEY_A)]
    assert not any(secret in logs for secret in secrets_of(KEY_A))


def test_an_api_with_the_wrong_key_is_not_ready_and_leaves_no_trace(tmp_path: Path) -> None:
    """Its uploads would be sealed under a key no worker holds: out of the Service."""
    data_dir = tmp_path / "data"
    EncryptedStore(LocalObjectStore(data_dir / "originals"), Keyring(KEY_A)).check_keys()
    before = originals(data_dir)
    with run_server(data_dir, command="api", env={"IMAGEBLUR_ORIGINALS_KEY": B}) as api:
        answer = httpx.get(f"{api.url}/readyz", timeout=10)
        assert answer.status_code == 503
        assert answer.json()["checks"]["originals_key"] == "unavailable"
        logs = api.logs()
    assert originals(data_dir) == before
    events = [json.loads(line) for line in logs.splitlines() if "newest_key_not_held" in line]
    assert events and events[0]["key_ids"] == [key_id(KEY_A)]
    assert not any(secret in logs for secret in secrets_of(KEY_A, KEY_B))


def test_reseal_seals_plaintext_and_old_keys_originals_under_the_current_key(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "originals"
    inner = LocalObjectStore(folder)
    photo = jpeg_bytes(64, 48)
    inner.put("0" * 32 + ".jpg", photo, content_type="image/jpeg")  # an older release's
    EncryptedStore(inner, Keyring(KEY_A)).put("1" * 32 + ".jpg", b"old", content_type="x/y")
    EncryptedStore(inner, Keyring(KEY_B)).check_keys()  # a key check object: not resealed
    env = {
        "IMAGEBLUR_DATA_DIR": str(tmp_path),
        "IMAGEBLUR_ORIGINALS_KEY": B,
        "IMAGEBLUR_ORIGINALS_OLD_KEYS": A,
    }
    before = originals(tmp_path)
    dry = imageblur("reseal", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "1 plaintext would be sealed, 1 under old keys would be re-sealed" in dry.stdout
    assert originals(tmp_path) == before
    done = imageblur("reseal", env=env)
    assert done.returncode == 0, done.stderr
    assert f"under key id {key_id(KEY_B)}: 1 plaintext sealed, 1 under old keys re-sealed" in (
        done.stdout
    )
    again = imageblur("reseal", env=env)
    assert "0 plaintext sealed, 0 under old keys re-sealed, 2 already current" in again.stdout
    for output in (dry, done, again):
        assert not any(s in output.stdout + output.stderr for s in secrets_of(KEY_A, KEY_B))
    only_b = EncryptedStore(inner, Keyring(KEY_B))  # the old key can now be dropped
    assert only_b.get("0" * 32 + ".jpg") == photo and only_b.get("1" * 32 + ".jpg") == b"old"
    no_key = imageblur("reseal", env={"IMAGEBLUR_DATA_DIR": str(tmp_path)})
    assert no_key.returncode == 2 and "IMAGEBLUR_ORIGINALS_KEY" in no_key.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_keeping_originals_without_a_key_refuses_to_start(tmp_path: Path, command: str) -> None:
    result = imageblur(
        command, env={"IMAGEBLUR_DATA_DIR": str(tmp_path), "IMAGEBLUR_KEEP_ORIGINALS": "true"}
    )
    assert result.returncode == 2
    assert "IMAGEBLUR_KEEP_ORIGINALS" in result.stderr
    assert "IMAGEBLUR_ORIGINALS_KEY" in result.stderr
    assert not (tmp_path / "originals").exists()
