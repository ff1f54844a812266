"""Webhooks on the embedded default: `imageblur serve` as a real process, its worker's
sender posting to a loopback receiver (the operator's IMAGEBLUR_WEBHOOK_URL, which the
allowed hosts do not apply to). Every signature is checked with an HMAC written from the
Standard Webhooks specification (`Receiver.verified`), under both secrets of a rotation."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

from tests.webhook_receiver import Receiver, webhook_receiver

from metrics_scrape import get, scrape
from support import BILL, run_server, wait_until

from .test_review import (
    API_TOKEN,
    MANUAL_BOX,
    REVIEWER_TOKEN,
    client,
    keep_all,
    put,
    regions,
    review_env,
    upload_in_review,
)

KEYS = [os.urandom(32), os.urandom(24)]  # the old secret and the new, while rotating
SECRETS = " ".join("whsec_" + base64.b64encode(k).decode() for k in KEYS)


def _env(receiver: Receiver) -> dict[str, str]:
    return {
        "IMAGEBLUR_WEBHOOK_URL": receiver.url,
        "IMAGEBLUR_WEBHOOK_SECRET": SECRETS,
        # Not loopback: the operator's URL is exempt from the list.
        "IMAGEBLUR_WEBHOOK_ALLOWED_HOSTS": "hooks.example",
        # A dead worker's delivery is taken over this soon.
        "IMAGEBLUR_WEBHOOK_LEASE_S": "3",
    }


def _attempts(logs: str) -> list[tuple[str, int, tuple[str, str]]]:
    """(outcome, status, (image id, webhook id)) of each `webhook.attempt` log line."""
    lines = [json.loads(line) for line in logs.splitlines() if '"webhook.attempt"' in line]
    return [(e["outcome"], e["status"], (e["image_id"], e["webhook_id"])) for e in lines]


def _upload(client: Any) -> str:
    answer = client.post("/picture", files={"image": (BILL.name, BILL.read_bytes())})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def test_a_receiver_that_fails_twice_gets_picture_done_once_signed_under_one_id(
    tmp_path: Path,
) -> None:
    with (
        webhook_receiver([500, 500]) as receiver,
        run_server(tmp_path / "data", env=_env(receiver)) as server,
        server.client() as c,
    ):
        image_id = _upload(c)
        wait_until(receiver.delivered, timeout_s=90, details=server.logs)
        history = c.get(f"/picture/{image_id}/history").json()
        url = f"{server.url}/metrics"
        series = "imageblur_webhook_deliveries_total"

        def settled() -> bool:  # the counter and the log line come after the row
            delivered = get(scrape(url), series, outcome="delivered") == 1
            return delivered and "delivered" in [a[0] for a in _attempts(server.logs())]

        wait_until(settled, timeout_s=10)
        samples, logged = scrape(url), _attempts(server.logs())
    deliveries = receiver.verified(KEYS)
    assert receiver.answered == [500, 500, 204]
    assert len({webhook_id for webhook_id, _ in deliveries}) == 1
    body = deliveries[-1][1]
    assert body["type"] == "picture.done"
    assert (body["data"]["id"], body["data"]["status"]) == (image_id, "done")
    assert body["data"]["faces"] >= 1 and body["timestamp"].endswith("Z")
    assert "webhook_given_up" not in json.dumps(history)
    assert get(samples, series, outcome="retry") == 2
    assert get(samples, "imageblur_webhook_delivery_seconds_count") == 1
    assert [(outcome, status) for outcome, status, _ in logged] == [
        ("retry", 500),
        ("retry", 500),
        ("delivered", 204),
    ]
    assert {ids for _, _, ids in logged} == {(image_id, deliveries[0][0])}
    assert SECRETS.split()[0].removeprefix("whsec_") not in server.logs()


def test_a_server_killed_mid_delivery_sends_the_event_again_after_restart(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    # 503: the answer to the killed sender's request, which nobody reads; a 204 is then
    # the answer to a delivery made after the kill.
    with webhook_receiver([503]) as receiver:
        receiver.hold()
        with run_server(data, env=_env(receiver)) as server, server.client() as c:
            image_id = _upload(c)
            wait_until(lambda: receiver.got, timeout_s=90, details=server.logs)
            server.process.kill()  # mid-delivery: the receiver has not answered
            server.process.wait()
        receiver.release()
        with run_server(data, env=_env(receiver)) as server:
            wait_until(lambda: receiver.delivered(), timeout_s=90, details=server.logs)
    deliveries = receiver.verified(KEYS)
    assert len(deliveries) >= 2
    assert len({webhook_id for webhook_id, _ in deliveries}) == 1
    assert {body["type"] for _, body in deliveries} == {"picture.done"}
    assert {body["data"]["id"] for _, body in deliveries} == {image_id}


def test_review_then_a_re_render_then_approval_are_three_events(tmp_path: Path) -> None:
    """Held: `picture.review`; corrected and re-rendered: `picture.review` again; approved
    by a reviewer through the API: `picture.done`; each its own webhook-id."""
    with (
        webhook_receiver() as receiver,
        run_server(tmp_path / "data", env={**_env(receiver), **review_env()}) as server,
        client(server, API_TOKEN) as api,
        client(server, REVIEWER_TOKEN) as reviewer,
    ):

        def events(n: int) -> bool:
            with receiver.lock:
                return receiver.answered.count(204) >= n

        image_id = upload_in_review(api)
        wait_until(lambda: events(1), timeout_s=60, details=server.logs)
        etag, listed = regions(reviewer, image_id)
        x, y, w, h = MANUAL_BOX
        wanted = [*keep_all(listed), {"x": x, "y": y, "width": w, "height": h, "hidden": True}]
        assert put(reviewer, image_id, {"regions": wanted}, etag).status_code == 202
        wait_until(lambda: events(2), timeout_s=90, details=server.logs)
        assert reviewer.post(f"/picture/{image_id}/approve").status_code == 200
        wait_until(lambda: events(3), timeout_s=60, details=server.logs)
    deliveries = receiver.verified(KEYS)
    assert [(body["type"], body["data"]["id"]) for _, body in deliveries] == [
        ("picture.review", image_id),
        ("picture.review", image_id),
        ("picture.done", image_id),
    ]
    assert len({webhook_id for webhook_id, _ in deliveries}) == 3
    assert deliveries[1][1]["data"]["revision"] == 1
    assert deliveries[2][1]["data"]["review"] == "approved"


def test_a_callback_url_gets_the_uploads_events_with_its_options_applied(
    tmp_path: Path,
) -> None:
    """Issue 26's walk-through: solid mode, only the date kept, a corner hidden, and one
    `picture.done` to the upload's own callback (no IMAGEBLUR_WEBHOOK_URL), allowed by
    the allowed-hosts list naming loopback."""
    from PIL import ExifTags, Image

    from photo_metadata import DATETIME_ORIGINAL, photo
    from support import decode

    env = {"IMAGEBLUR_WEBHOOK_SECRET": SECRETS, "IMAGEBLUR_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
    corner = {"x": 0, "y": 0, "width": 50, "height": 50}
    with (
        webhook_receiver() as receiver,
        run_server(tmp_path / "data", env=env) as server,
        server.client() as c,
    ):
        fields = {
            "mode": "solid",
            "keep_metadata": "datetime",
            "hide": json.dumps([corner]),
            "callback_url": receiver.url,
        }
        data = photo("JPEG", orientation=1, width=120, height=90)
        answer = c.post("/picture", data=fields, files={"image": ("p.jpg", data, "image/jpeg")})
        assert answer.status_code == 202, answer.text
        final = server.wait_done(c, answer.json()["id"])
        assert final["options"]["callback_url"] == receiver.url
        wait_until(receiver.delivered, timeout_s=60, details=server.logs)
        out = c.get(f"/picture/{final['id']}/image").content
    ((_, body),) = receiver.verified(KEYS)
    assert body["type"] == "picture.done" and body["data"]["id"] == final["id"]
    assert decode(out)[2:48, 2:48].std(axis=(0, 1)).max() < 3  # the corner: one flat colour
    exif = Image.open(io.BytesIO(out)).getexif()
    assert exif.get_ifd(ExifTags.IFD.Exif)[0x9003] == DATETIME_ORIGINAL
    assert not exif.get_ifd(ExifTags.IFD.GPSInfo)


def test_a_callback_url_the_server_would_not_deliver_to_is_refused(tmp_path: Path) -> None:
    """A loopback literal under the default list (any public address), or any callback
    on a server without a signing secret: 422 naming the field, nothing stored."""
    refused = [
        ({"IMAGEBLUR_WEBHOOK_SECRET": SECRETS}, "http://127.0.0.1:9/hook", "internal address"),
        ({"IMAGEBLUR_WEBHOOK_SECRET": SECRETS}, "http://[::ffff:10.0.0.1]/", "internal address"),
        ({"IMAGEBLUR_WEBHOOK_SECRET": SECRETS}, "ftp://hooks.example/", "http:// or https://"),
        ({}, "https://hooks.example/in", "IMAGEBLUR_WEBHOOK_SECRET"),
    ]
    for number, (env, url, says) in enumerate(refused):
        with run_server(tmp_path / f"data{number}", env=env) as server, server.client() as c:
            answer = c.post(
                "/picture",
                data={"callback_url": url},
                files={"image": (BILL.name, BILL.read_bytes())},
            )
            assert answer.status_code == 422, answer.text
            error = answer.json()
            assert error["error"] == "invalid_option" and error["field"] == "callback_url"
            assert says in error["message"]
            assert c.get("/pictures").json()["items"] == []
