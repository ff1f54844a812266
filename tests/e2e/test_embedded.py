"""The whole embedded path through a real server process: HTTP upload -> worker ->
anonymized result, with real pictures."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from metrics_scrape import delta, scrape
from support import (
    BILL,
    BILL_FACE,
    LINUS,
    LINUS_FACE,
    Server,
    decode,
    detail,
    jpeg_bytes,
    run_server,
    wait_until,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("embedded") / "data") as srv:
        yield srv


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def inner(box: tuple[int, int, int, int], keep: float = 0.6) -> tuple[slice, slice]:
    """The central part of a face box: certainly face, whatever the mask's margin."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * (1 - keep) / 2, (y1 - y0) * (1 - keep) / 2
    return slice(int(y0 + dy), int(y1 - dy)), slice(int(x0 + dx), int(x1 - dx))


def outside(shape: tuple[int, ...], box: tuple[int, int, int, int], grow: float) -> np.ndarray:
    """True away from the face (box grown by `grow` of its size on each side)."""
    x0, y0, x1, y1 = box
    gx, gy = (x1 - x0) * grow, (y1 - y0) * grow
    mask = np.ones(shape[:2], bool)
    mask[max(int(y0 - gy), 0) : int(y1 + gy), max(int(x0 - gx), 0) : int(x1 + gx)] = False
    return mask


@pytest.mark.parametrize(("picture", "face"), [(BILL, BILL_FACE), (LINUS, LINUS_FACE)])
def test_example_pictures_come_back_with_the_face_blurred(
    server: Server, client: httpx.Client, picture: Path, face: tuple[int, int, int, int]
) -> None:
    original = picture.read_bytes()
    response = client.post("/picture", files={"image": (picture.name, original, "image/jpeg")})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "pending"
    assert body["name"] == picture.name
    assert response.headers["location"] == f"/picture/{body['id']}"

    done = server.wait_done(client, body["id"])
    assert done["status"] == "done", done
    assert done["faces"] >= 1
    assert done["url"]

    result = client.get(f"/picture/{body['id']}/image")
    assert result.status_code == 200
    assert result.headers["content-type"] == "image/jpeg"
    before, after = decode(original), decode(result.content)
    assert before.shape == after.shape

    rows, cols = inner(face)
    assert detail(after[rows, cols]) < 0.25 * detail(before[rows, cols])
    away = outside(before.shape, face, grow=0.5)
    diff = np.abs(before.astype(int) - after.astype(int))[away]
    # Away from the face, the original's blocks as they were (a mask snapped outward to
    # 16 px MCUs may reach a little past half a small face's size).
    assert (diff == 0).all(axis=1).mean() > 0.99
    if picture == BILL:
        assert changed_16px_blocks(before, after) <= 0.45


def changed_16px_blocks(before: np.ndarray, after: np.ndarray) -> float:
    """Share of 16 x 16 blocks whose inside (one-pixel border ignored) changed."""
    diff = (before != after).any(axis=2)
    rows, cols = diff.shape[0] // 16, diff.shape[1] // 16
    blocks = diff[: rows * 16, : cols * 16].reshape(rows, 16, cols, 16)
    return float(blocks[:, 1:15, :, 1:15].any(axis=(1, 3)).mean())


def test_exif_orientation_applied_and_metadata_removed(
    server: Server, client: httpx.Client
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010F] = "SecretCam"  # Make
    gps = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}
    exif[0x8825] = gps
    data = jpeg_bytes(80, 40, exif=exif)
    assert b"SecretCam" in data

    response = client.post("/picture", files={"image": ("gps.jpg", data, "image/jpeg")})
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (40, 80)
    assert server.wait_done(client, body["id"])["status"] == "done"

    out = client.get(f"/picture/{body['id']}/image").content
    img = Image.open(io.BytesIO(out))
    assert img.size == (40, 80)  # upright: portrait
    assert not img.getexif()
    assert "exif" not in img.info and "xmp" not in img.info and "comment" not in img.info
    assert b"SecretCam" not in out and b"Exif" not in out


def test_raw_body_upload_with_filename(server: Server, client: httpx.Client) -> None:
    data = LINUS.read_bytes()
    response = client.post(
        "/picture?filename=torvalds.jpg", content=data, headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["name"] == "torvalds.jpg"
    assert server.wait_done(client, response.json()["id"])["status"] == "done"


def test_png_keeps_format_and_transparency(server: Server, client: httpx.Client) -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (50, 30), (200, 10, 10, 100)).save(buf, "PNG")
    response = client.post("/picture", files={"image": ("a.png", buf.getvalue(), "image/png")})
    assert response.status_code == 202
    image_id = response.json()["id"]
    assert server.wait_done(client, image_id)["status"] == "done"
    result = client.get(f"/picture/{image_id}/image")
    assert result.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(result.content))
    assert img.mode == "RGBA" and img.getpixel((3, 3)) == (200, 10, 10, 100)


def test_result_is_409_until_done_and_original_never_served(
    server: Server, client: httpx.Client
) -> None:
    # Many uploads at once: the last one is still queued when we ask.
    ids = [
        client.post("/picture", files={"image": ("b.jpg", BILL.read_bytes(), "image/jpeg")}).json()[
            "id"
        ]
        for _ in range(3)
    ]
    early = client.get(f"/picture/{ids[-1]}/image")
    assert early.status_code == 409
    assert early.json()["error"] == "not_ready"
    for image_id in ids:
        assert server.wait_done(client, image_id)["status"] == "done"
        served = client.get(f"/picture/{image_id}/image").content
        assert served != BILL.read_bytes()


def test_list_is_newest_first_and_paginated(server: Server, client: httpx.Client) -> None:
    ids = [
        client.post(
            "/picture", files={"image": (f"{i}.jpg", jpeg_bytes(seed=i), "image/jpeg")}
        ).json()["id"]
        for i in range(3)
    ]
    page = client.get("/pictures", params={"limit": 2}).json()
    assert [item["id"] for item in page["items"]] == ids[::-1][:2]
    assert page["total"] >= 3 and page["next"]
    second = client.get(page["next"]).json()
    assert second["items"][0]["id"] == ids[0]


def test_delete_removes_record_and_every_object(server: Server, client: httpx.Client) -> None:
    response = client.post("/picture", files={"image": ("x.jpg", jpeg_bytes(seed=9), "image/jpeg")})
    image_id = response.json()["id"]
    server.wait_done(client, image_id)
    assert any(image_id in p.name for p in server.stored_files())
    assert client.delete(f"/picture/{image_id}").status_code == 204
    assert client.get(f"/picture/{image_id}").status_code == 404
    assert client.get(f"/picture/{image_id}/image").status_code == 404
    assert not any(image_id in p.name for p in server.stored_files())
    assert client.delete(f"/picture/{image_id}").status_code == 404


def gradient_jpeg(width: int, height: int) -> bytes:
    """A large picture in a small file (a smooth gradient): a detection of many tiles."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=80)
    return out.getvalue()


READ_STAGE = "imageblur_job_stage_seconds_count"


def idle(client: httpx.Client) -> None:
    """Wait until no picture is queued or running: a job of an earlier test's that ran
    now would move the worker's counts too."""
    wait_until(
        lambda: all(
            p["status"] in ("done", "failed")
            for p in client.get("/pictures", params={"limit": 100}).json()["items"]
        ),
        what="the worker idle",
    )


def test_deleting_a_running_job_stops_it(
    server: Server, client: httpx.Client, record_property: pytest.RecordProperty
) -> None:
    """48 MP: about 60 detection tiles, many seconds of work. Deleted while processing,
    the job stops at its next checkpoint once its keeper reads the record (every 2 s),
    not at the next renewal (every 100 s): the test would time out waiting for that.
    The time from the deletion to the job's end is recorded from the server's log."""
    data = gradient_jpeg(8000, 6000)
    # Deleted between its claim and the read of its original, the job would end
    # original_missing, stopped by nothing this test is about: it deletes once the
    # worker has read the original (the read stage counted, on an idle worker).
    idle(client)
    reads = scrape(f"{server.url}/metrics")
    response = client.post("/picture", files={"image": ("big.jpg", data, "image/jpeg")})
    image_id = response.json()["id"]
    wait_until(
        lambda: delta(reads, scrape(f"{server.url}/metrics"), READ_STAGE, stage="read") >= 1,
        interval_s=0.1,
        what="the original read",
        details=server.logs,
    )
    assert client.get(f"/picture/{image_id}").json()["status"] == "processing"
    assert client.delete(f"/picture/{image_id}").status_code == 204

    def events() -> dict[str, datetime]:
        lines = (json.loads(line) for line in server.logs().splitlines() if line.startswith("{"))
        mine = (e for e in lines if e.get("image_id") == image_id)
        return {e["event"]: datetime.fromisoformat(e["timestamp"]) for e in mine}

    def stopped() -> dict[str, datetime] | None:
        found = events()
        return found if "job.lease_lost" in found else None

    seen = wait_until(
        stopped,
        timeout_s=60,
        what="the deleted job to stop",
        details=server.logs,
    )
    assert "job.done" not in seen and "job.cancelled" in seen
    stopped_after_s = (seen["job.lease_lost"] - seen["image.deleted"]).total_seconds()
    record_property("stopped_after_s", round(stopped_after_s, 2))
    print(f"deleted job stopped after {stopped_after_s:.2f} s")
    assert not any(image_id in p.name for p in server.stored_files())
    small = client.post("/picture", files={"image": ("s.jpg", jpeg_bytes(seed=11), "image/jpeg")})
    assert server.wait_done(client, small.json()["id"])["status"] == "done"  # the worker is free


def test_original_is_deleted_once_done(server: Server, client: httpx.Client) -> None:
    response = client.post("/picture", files={"image": ("o.jpg", jpeg_bytes(seed=5), "image/jpeg")})
    image_id = response.json()["id"]
    server.wait_done(client, image_id)
    # The worker deletes the original just after the record reads done.
    wait_until(
        lambda: not list((server.data_dir / "originals").glob(f"{image_id}*")),
        what="the original deleted",
    )
    results = list((server.data_dir / "results").glob(f"{image_id}*"))
    assert len(results) == 1


def test_idempotency_key_returns_the_same_record(server: Server, client: httpx.Client) -> None:
    files = {"image": ("k.jpg", jpeg_bytes(seed=11), "image/jpeg")}
    first = client.post("/picture", files=files, headers={"Idempotency-Key": "abc-123"})
    second = client.post("/picture", files=files, headers={"Idempotency-Key": "abc-123"})
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]


def test_health_readiness_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    spec = client.get("/openapi.json").json()
    assert "/picture" in spec["paths"] and "/picture/{image_id}/image" in spec["paths"]
    body = spec["paths"]["/picture"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body


def test_openapi_declares_the_errors_of_each_route(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    expected = {
        ("/picture", "post"): {"400", "401", "403", "409", "413", "415", "422", "503"},
        ("/picture/{image_id}", "get"): {"401", "404", "422", "503"},
        ("/picture/{image_id}", "delete"): {"401", "404", "422", "503"},
        ("/picture/{image_id}/image", "get"): {"401", "404", "409", "422", "503"},
        ("/pictures", "get"): {"401", "422", "503"},
    }
    for (path, method), statuses in expected.items():
        responses = spec["paths"][path][method]["responses"]
        errors = {s for s in responses if s[0] in "45"}
        assert errors == statuses, (path, method, errors)
        for status in statuses:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)


def test_logs_are_json_lines_with_the_image_id(server: Server, client: httpx.Client) -> None:
    import json

    response = client.post("/picture", files={"image": ("l.jpg", jpeg_bytes(seed=3), "image/jpeg")})
    image_id = response.json()["id"]
    server.wait_done(client, image_id)
    events = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    mine = {e["event"] for e in events if e.get("image_id") == image_id}
    assert {"image.accepted", "job.claimed", "job.done"} <= mine


def test_an_api_token_guards_every_endpoint_but_health_and_docs(tmp_path: Path) -> None:
    secret = "s3cret-token-for-tests-0123456789"
    with run_server(tmp_path / "data", env={"IMAGEBLUR_API_TOKEN": secret}) as srv:
        with srv.client() as anonymous:
            refused = anonymous.post("/picture", files={"image": ("a.jpg", jpeg_bytes())})
            assert refused.status_code == 401
            assert refused.json()["error"] == "unauthorized"
            assert refused.headers["WWW-Authenticate"] == "Bearer"
            assert anonymous.get("/pictures").status_code == 401
            wrong = {"Authorization": "Bearer not-the-token-at-all-000"}
            assert anonymous.get("/pictures", headers=wrong).status_code == 401
            assert anonymous.get("/picture/0123456789abcdef0123456789abcdef").status_code == 401
            for path in ("/healthz", "/readyz", "/openapi.json"):
                assert anonymous.get(path).status_code == 200, path
        assert srv.stored_files() == []  # nothing refused was stored
        with httpx.Client(
            base_url=srv.url, timeout=30, headers={"Authorization": f"Bearer {secret}"}
        ) as client:
            created = client.post("/picture", files={"image": ("a.jpg", jpeg_bytes())})
            assert created.status_code == 202
            assert srv.wait_done(client, created.json()["id"])["status"] == "done"
            assert client.get("/pictures").json()["total"] == 1
        assert secret not in srv.logs()


def test_with_review_off_a_picture_is_done_with_its_regions_and_cannot_be_corrected(
    server: Server, client: httpx.Client
) -> None:
    """Without tokens nobody is a reviewer: a correction or approval answers 401 before
    anything else (tests/e2e/test_review.py: a reviewer gets 409 original_gone)."""
    data = BILL.read_bytes()
    image_id = client.post("/picture", files={"image": ("b.jpg", data, "image/jpeg")}).json()["id"]
    done = server.wait_done(client, image_id)
    assert done["status"] == "done" and done["review"] is None
    listed = client.get(f"/picture/{image_id}/regions")
    assert listed.status_code == 200 and listed.headers["etag"] == '"0"'
    assert any(r["hidden"] for r in listed.json()["regions"])
    body = {"regions": [{"x": 1, "y": 1, "width": 10, "height": 10, "hidden": True}]}
    refused = client.put(f"/picture/{image_id}/regions", json=body, headers={"If-Match": '"0"'})
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    approve = client.post(f"/picture/{image_id}/approve")
    assert approve.status_code == 401 and approve.json()["error"] == "unauthorized"
    assert client.get("/picture/0123456789abcdef0123456789abcdef/regions").status_code == 404


def test_work_folders_are_swept_after_a_crash_and_left_empty(tmp_path: Path) -> None:
    """The embedded worker's work folders live under DATA_DIR/imageblur-work: a job's is
    gone once it is done, a killed server's is removed at the next start, and a clean
    stop leaves none."""
    data = tmp_path / "data"
    space = data / "imageblur-work"

    def owners() -> list[Path]:
        return sorted(p for p in space.iterdir() if p.is_dir())

    with run_server(data) as first, first.client() as client:
        created = client.post("/picture", files={"image": ("a.jpg", jpeg_bytes())}).json()
        assert first.wait_done(client, created["id"])["status"] == "done"
        [crashed] = owners()
        # The job's folder goes with the job, just after its record reads done.
        wait_until(lambda: list(crashed.iterdir()) == [], what="the job's folder removed")
        (crashed / "job.x").mkdir()  # as if a job were in hand at the kill
        (crashed / "job.x" / "spool").write_bytes(b"x" * 1000)
        first.process.kill()
        first.process.wait()
    with run_server(data) as second, second.client() as client:
        [live] = owners()
        assert live != crashed and not crashed.exists()
        assert not (space / f"{crashed.name}.lock").exists()
        created = client.post("/picture", files={"image": ("b.jpg", jpeg_bytes(seed=3))}).json()
        assert second.wait_done(client, created["id"])["status"] == "done"
        wait_until(lambda: list(live.iterdir()) == [], what="the job's folder removed")
    assert owners() == [] and list(space.iterdir()) == []  # stopped cleanly: nothing left
