"""A bucket batch's one `batch.done` webhook event (issue 27), through the outbox and the
worker's sender to a loopback receiver (the operator's IMAGEBLUR_WEBHOOK_URL), signed as
every event is: one when the batch is done, one when it is cancelled (its data's
`status` says which), and no `picture.*` event for its items."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.webhook_receiver import Receiver, webhook_receiver

from support import BILL, Server, jpeg_bytes, png_bytes, run_server, wait_until

from .test_webhooks import KEYS, SECRETS


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch-hooks-root")


@pytest.fixture(scope="module")
def server(
    receiver: Receiver, root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {
        "IMAGEBLUR_BATCH_ROOTS": str(root),
        "IMAGEBLUR_BATCH_PUMP_INTERVAL_S": "0.2",
        "IMAGEBLUR_BATCH_WINDOW": "1",
        "IMAGEBLUR_WEBHOOK_URL": receiver.url,
        "IMAGEBLUR_WEBHOOK_SECRET": SECRETS,
    }
    with run_server(tmp_path_factory.mktemp("batch-hooks") / "data", env=env) as running:
        yield running


def _events(receiver: Receiver, batch_id: str) -> list[dict[str, Any]]:
    return [body for _, body in receiver.verified(KEYS) if body["data"]["id"] == batch_id]


def _post(server: Server, source: Path, target: Path) -> str:
    with server.client() as client:
        answer = client.post(
            "/batches",
            json={
                "source": {"bucket": f"file:{source}", "prefix": ""},
                "target": {"bucket": f"file:{target}", "prefix": ""},
            },
        )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def test_a_done_batch_sends_one_batch_done_and_no_picture_events(
    server: Server, receiver: Receiver, root: Path
) -> None:
    source = root / "in"
    source.mkdir()
    (source / "bill.jpg").write_bytes(BILL.read_bytes())
    (source / "b.png").write_bytes(png_bytes())
    batch_id = _post(server, source, root / "out")
    wait_until(
        lambda: bool(_events(receiver, batch_id)),
        timeout_s=120,
        interval_s=0.2,
        what="the batch.done event",
        details=server.logs,
    )
    with server.client() as client:
        assert client.get(f"/batches/{batch_id}").json()["status"] == "done"
    (event,) = _events(receiver, batch_id)
    assert event["type"] == "batch.done"
    data = event["data"]
    assert (data["status"], data["total"], data["done"], data["failed"]) == ("done", 2, 2, 0)
    assert data["faces"] >= 1 and data["url"] == f"/batches/{batch_id}"
    assert not [b for _, b in receiver.verified(KEYS) if b["type"].startswith("picture.")]


def test_a_cancelled_batch_sends_one_batch_done_saying_so(
    server: Server, receiver: Receiver, root: Path
) -> None:
    source = root / "many"
    source.mkdir()
    for n in range(20):
        (source / f"{n:02}.jpg").write_bytes(jpeg_bytes(seed=n))
    batch_id = _post(server, source, root / "many-out")
    with server.client() as client:
        assert client.delete(f"/batches/{batch_id}").json()["status"] == "cancelled"
        client.delete(f"/batches/{batch_id}")  # again: it has ended already, no new event
    wait_until(
        lambda: bool(_events(receiver, batch_id)),
        timeout_s=60,
        interval_s=0.2,
        what="the batch.done event",
        details=server.logs,
    )
    (event,) = _events(receiver, batch_id)
    assert (event["type"], event["data"]["status"]) == ("batch.done", "cancelled")
