"""The review workflow on the distributed set-up (API and workers as processes,
PostgreSQL, RabbitMQ, S3), and its faults: a worker killed during a re-render, a
correction while a render is running, approval during a re-render, two reviewers
sending the same revision."""

from __future__ import annotations

import base64
import io
import os
import signal
import threading
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import support
from imageblur.domain import Status

from .conftest import DeploymentFactory
from .harness import EXAMPLES, Backends, Deployment, generated_jpeg

pytestmark = pytest.mark.slow

KEY = base64.b64encode(bytes(range(1, 33))).decode()
API_TOKEN = "distributed-api-token-0123456789"
PHOTO_DESK, NIGHT_DESK = "photo-desk-token-0123456789", "night-desk-token-0123456789"
REVIEW = {
    "review": "required",
    "originals_key": KEY,
    "api_token": API_TOKEN,
    "reviewer_tokens": f"photo-desk:{PHOTO_DESK},night-desk:{NIGHT_DESK}",
}
DESK = {"Authorization": f"Bearer {PHOTO_DESK}"}  # a reviewer's token: allowed everywhere
BOX = {"x": 400, "y": 300, "width": 200, "height": 200, "hidden": True}


def wait_status(app: Deployment, image_id: str, wanted: str, timeout_s: float = 120) -> Any:
    with httpx.Client(base_url=app.url, timeout=10, headers=DESK) as client:
        return support.wait_status(
            client, image_id, {wanted}, timeout_s=timeout_s, context=app.logs
        )


def upload(app: Deployment, data: bytes, name: str = "bill.jpg") -> str:
    return app.submit(data, name=name)


def regions(app: Deployment, image_id: str) -> tuple[str, list[dict[str, Any]]]:
    response = httpx.get(f"{app.url}/picture/{image_id}/regions", timeout=10, headers=DESK)
    assert response.status_code == 200, response.text
    return response.headers["etag"], response.json()["regions"]


def correct(
    app: Deployment, image_id: str, etag: str, extra: list[Any], token: str = PHOTO_DESK
) -> httpx.Response:
    _, listed = regions(app, image_id)
    wanted = [{"id": r["id"], "hidden": r["hidden"]} for r in listed] + extra
    return httpx.put(
        f"{app.url}/picture/{image_id}/regions",
        json={"regions": wanted},
        headers={"If-Match": etag, "Authorization": f"Bearer {token}"},
        timeout=30,
    )


def bill() -> bytes:
    return (EXAMPLES / "bill-gates.jpg").read_bytes()


def big_photo(seed: int) -> bytes:
    """A 24 MP JPEG, so that a render takes long enough to be caught mid-way."""
    tile = Image.open(io.BytesIO(generated_jpeg(seed, 1500, 1000)))
    canvas = Image.new("RGB", (6000, 4000))
    for x in range(0, 6000, 1500):
        for y in range(0, 4000, 1000):
            canvas.paste(tile, (x, y))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=90)
    return out.getvalue()


def keys(backends: Backends, role: str, image_id: str) -> list[str]:
    """The picture's objects in the originals' ("input") or results' ("output") bucket."""
    store = backends.store(role)
    try:
        return sorted(o.key for o in store.list() if o.key.startswith(image_id))
    finally:
        store.close()


def test_review_workflow_end_to_end(backends: Backends, deploy: DeploymentFactory) -> None:
    app = deploy(backends, workers=1, **REVIEW)
    image_id = upload(app, bill())
    assert wait_status(app, image_id, "review")["review"] == "pending"

    (key,) = keys(backends, "input", image_id)
    raw = backends.store("input").get(key)  # the bytes at rest, as S3 holds them
    assert b"\xff\xd8\xff" not in raw[:64]
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(raw))

    etag, _ = regions(app, image_id)
    response = correct(app, image_id, etag, [BOX])
    assert response.status_code == 202, response.text
    assert correct(app, image_id, etag, [BOX]).status_code == 412
    wait_status(app, image_id, "review")
    result = httpx.get(f"{app.url}/picture/{image_id}/image", timeout=30, headers=DESK)
    after = np.asarray(Image.open(io.BytesIO(result.content)).convert("RGB"), dtype=np.float32)
    before = np.asarray(Image.open(io.BytesIO(bill())).convert("RGB"), dtype=np.float32)
    inside = (slice(300, 500), slice(400, 600))
    assert np.abs(after[inside] - before[inside]).mean() > 2  # hidden now
    assert len(keys(backends, "output", image_id)) == 1  # the replaced result is deleted

    approved = httpx.post(f"{app.url}/picture/{image_id}/approve", timeout=30, headers=DESK)
    assert approved.status_code == 200 and approved.json()["status"] == "done"
    assert keys(backends, "input", image_id) == []
    events = httpx.get(f"{app.url}/picture/{image_id}/history", timeout=10, headers=DESK).json()[
        "events"
    ]
    assert [(e["action"], e["reviewer"]) for e in events] == [
        ("uploaded", None),
        ("processed", None),
        ("corrected", "photo-desk"),
        ("rendered", None),
        ("approved", "photo-desk"),
    ]
    assert app.statuses[500] == 0


def test_a_worker_killed_during_a_re_render(backends: Backends, deploy: DeploymentFactory) -> None:
    # The lease is short so that the survivor takes the render over soon after the kill,
    # but long enough for a loaded machine: with 3 s, every attempt of a 24 MP detection
    # lost its lease and the picture never reached review (a CI run at load 24 on 2
    # cores, when renewals ended after MAX_LEASE_RENEWALS leases; past those they now
    # need a detection tile or a stage done in every third of a lease).
    app = deploy(backends, workers=2, lease_s="10", **REVIEW)
    image_id = upload(app, big_photo(1), name="big.jpg")
    wait_status(app, image_id, "review", timeout_s=180)
    etag, _ = regions(app, image_id)
    big_box = {"x": 100, "y": 100, "width": 5000, "height": 3000, "hidden": True}
    assert correct(app, image_id, etag, [big_box]).status_code == 202

    repo = backends.repository()
    pids = {p.pid for p in app.workers}
    killed: list[int] = []

    def kill_the_renderer() -> bool:
        record = repo.get(image_id)
        owner = record.lease_owner if record else None
        pid = int(owner.split(":")[1]) if owner else -1
        if record is not None and record.status is Status.RENDERING and pid in pids:
            os.kill(pid, signal.SIGKILL)  # mid-render: claimed, result not stored
            killed.append(pid)
        return bool(killed)

    support.wait_until(kill_the_renderer, timeout_s=60)
    repo.close()
    assert killed, "never saw the re-render in progress"
    body = wait_status(app, image_id, "review", timeout_s=180)
    assert body["revision"] == 1
    assert len(keys(backends, "output", image_id)) == 1
    actions = [
        e["action"]
        for e in httpx.get(f"{app.url}/picture/{image_id}/history", headers=DESK).json()["events"]
    ]
    assert actions.count("rendered") == 1


def test_corrections_while_rendering_end_at_the_last_revision(
    backends: Backends, deploy: DeploymentFactory
) -> None:
    app = deploy(backends, workers=0, **REVIEW)
    image_id = upload(app, bill())
    early = correct(app, image_id, '"0"', [BOX])  # detection has not run yet
    assert early.status_code == 409 and early.json()["error"] == "rendering"
    app.start_worker()
    wait_status(app, image_id, "review")
    etag = '"0"'
    for n in range(3):  # each arrives while the previous render may still run
        response = correct(app, image_id, etag, [{**BOX, "x": 100 + 300 * n}])
        assert response.status_code == 202, response.text
        etag = response.headers["etag"]
    body = wait_status(app, image_id, "review")
    assert body["revision"] == 3
    _, listed = regions(app, image_id)
    assert sorted(r["x"] for r in listed if r["source"] == "manual") == [100, 400, 700]
    assert len(keys(backends, "output", image_id)) == 1


def test_approval_waits_for_a_re_render_then_succeeds(
    backends: Backends, deploy: DeploymentFactory
) -> None:
    app = deploy(backends, workers=1, **REVIEW)
    image_id = upload(app, bill())
    wait_status(app, image_id, "review")
    worker = app.workers[0]
    worker.send_signal(signal.SIGTERM)  # no worker: the re-render stays pending
    worker.wait(timeout=60)
    assert correct(app, image_id, '"0"', [BOX]).status_code == 202
    refused = httpx.post(f"{app.url}/picture/{image_id}/approve", timeout=30, headers=DESK)
    assert refused.status_code == 409 and refused.json()["error"] == "rendering"
    app.start_worker()
    wait_status(app, image_id, "review")
    approved = httpx.post(f"{app.url}/picture/{image_id}/approve", timeout=30, headers=DESK)
    assert approved.status_code == 200 and approved.json()["review"] == "approved"


def test_two_reviewers_with_the_same_revision_exactly_one_wins(
    backends: Backends, deploy: DeploymentFactory
) -> None:
    app = deploy(backends, workers=1, **REVIEW)
    image_id = upload(app, bill())
    wait_status(app, image_id, "review")
    for round_ in range(3):
        etag, _ = regions(app, image_id)
        codes = race(
            # A box of its own each round: a box already in the list is a duplicate (422).
            lambda n, etag=etag, x=50 + 10 * round_: correct(
                app,
                image_id,
                etag,
                [{**BOX, "x": x + n}],
                (PHOTO_DESK, NIGHT_DESK)[n],
            )
        )
        assert sorted(codes) == [202, 412], (round_, codes)
        wait_status(app, image_id, "review")
    assert httpx.get(f"{app.url}/picture/{image_id}", headers=DESK).json()["revision"] == 3


def race(send: Any) -> list[int]:
    """Two requests released at once; their statuses."""
    start = threading.Barrier(2)
    codes: list[int] = []

    def run(n: int) -> None:
        start.wait(timeout=30)
        codes.append(send(n).status_code)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return codes
