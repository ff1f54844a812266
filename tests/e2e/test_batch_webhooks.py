"""A bucket batch's one `batch.done` webhook event (issue 27), through the outbox and the
worker's sender to a loopback receiver (the operator's IMAGEBLUR_WEBHOOK_URL), signed as
every event is: one when the batch is done, one when it is cancelled (its data's
`status` says which), and no `picture.*` event for its items. A batch's own
`callback_url` gets its event instead of the operator's URL, checked as an upload's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
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
        # A batch's own callback may lead to loopback (the test's receivers), no further.
        "IMAGEBLUR_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    }
    with run_server(tmp_path_factory.mktemp("batch-hooks") / "data", env=env) as running:
        yield running


def _events(receiver: Receiver, batch_id: str) -> list[dict[str, Any]]:
    return [body for _, body in receiver.verified(KEYS) if body["data"]["id"] == batch_id]


def _answer(server: Server, source: Path, target: Path, **options: str) -> httpx.Response:
    with server.client() as client:
        return client.post(
            "/batches",
            json={
                "source": {"bucket": f"file:{source}", "prefix": ""},
                "target": {"bucket": f"file:{target}", "prefix": ""},
                "options": options,
            },
        )


def _post(server: Server, source: Path, target: Path, **options: str) -> str:
    answer = _answer(server, source, target, **options)
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


def test_a_batch_with_its_own_callback_url_sends_its_event_there_only(
    server: Server, receiver: Receiver, root: Path
) -> None:
    source = root / "own"
    source.mkdir()
    (source / "bill.jpg").write_bytes(BILL.read_bytes())
    with webhook_receiver() as own:
        answer = _answer(server, source, root / "own-out", callback_url=own.url, mode="solid")
        assert answer.status_code == 202, answer.text
        batch = answer.json()
        assert batch["options"] == {"mode": "solid", "callback_url": own.url}
        wait_until(
            lambda: bool(_events(own, batch["id"])),
            timeout_s=120,
            interval_s=0.2,
            what="the batch.done event at the batch's own callback",
            details=server.logs,
        )
        (event,) = _events(own, batch["id"])
    assert (event["type"], event["data"]["status"], event["data"]["done"]) == (
        "batch.done",
        "done",
        1,
    )
    # One outbox row, to one place: the operator's URL got nothing of this batch.
    assert _events(receiver, batch["id"]) == []
    # The callback is in no key: the same batch posted with another is the same one.
    again = _answer(server, source, root / "own-out", callback_url=receiver.url, mode="solid")
    assert again.status_code == 200 and again.json()["id"] == batch["id"]
    assert again.json()["options"]["callback_url"] == own.url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://10.0.0.1/hook", "10.0.0.1"),  # not in IMAGEBLUR_WEBHOOK_ALLOWED_HOSTS
        ("ftp://127.0.0.1/hook", "http:// or https://"),
    ],
)
def test_a_batch_callback_url_the_server_would_not_deliver_to_is_refused(
    server: Server, root: Path, url: str, says: str
) -> None:
    answer = _answer(server, root / "never", root / "never-out", callback_url=url)
    assert answer.status_code == 422, answer.text
    error = answer.json()
    assert (error["error"], error["field"]) == ("invalid_option", "callback_url")
    assert says in error["message"]
