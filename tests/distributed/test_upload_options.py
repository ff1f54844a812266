"""Options per upload (issue 26) on the distributed set-up (API and workers as
processes, PostgreSQL, RabbitMQ, S3): applied by a worker of the `options` kind, from its
own queue, and shown by GET."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import ExifTags, Image

import support
from e2e.test_detection_preset import black, expected_hidden, lifted_png
from photo_metadata import DATETIME_ORIGINAL, photo

from .conftest import DeploymentFactory
from .harness import EXAMPLES, Backends, Deployment

pytestmark = pytest.mark.slow


def _upload(app: Deployment, data: bytes, **fields: str) -> str:
    response = httpx.post(
        f"{app.url}/picture",
        data=fields,
        files={"image": ("upload.jpg", data, "image/jpeg")},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _done(app: Deployment, client: httpx.Client, image_id: str) -> dict[str, Any]:
    final = support.wait_status(client, image_id, {"done", "failed"}, context=app.logs)
    assert final["status"] == "done", final
    return final


@pytest.fixture(scope="module")
def thorough_mask(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """What a thorough server hides of `lifted_png`, computed in this process: before the
    tests count their threads (a detector here keeps its runtime's)."""
    _, rgb = lifted_png(tmp_path_factory.mktemp("thorough"))
    return expected_hidden(rgb, detection_preset="thorough")


def test_options_are_applied_by_the_workers(
    backends: Backends, deploy: DeploymentFactory, tmp_path: Path, thorough_mask: np.ndarray
) -> None:
    app = deploy(backends, workers=1)
    bill = (EXAMPLES / "bill-gates.jpg").read_bytes()
    hide = {"x": 400, "y": 300, "width": 200, "height": 200}
    solid = _upload(app, bill, mode="solid", hide=json.dumps([hide]))
    dated = _upload(app, photo("JPEG", width=120, height=80), keep_metadata="datetime")
    source, _ = lifted_png(tmp_path)
    tidy = _upload(app, source.read_bytes(), mode="solid", preset="tidy")
    privacy = _upload(app, source.read_bytes(), mode="solid")
    # On a privacy server: the worker loads the thorough detector for it.
    thorough = _upload(app, source.read_bytes(), mode="solid", preset="thorough")
    with httpx.Client(base_url=app.url, timeout=30) as client:
        final = _done(app, client, solid)
        assert final["options"] == {"mode": "solid", "hide": [hide]}
        pixels = support.decode(client.get(f"/picture/{solid}/image").content).astype(float)
        x0, y0, x1, y1 = support.BILL_FACE
        face = pixels[y0 + 250 : y1 - 250, x0 + 200 : x1 - 200]
        assert face.std(axis=(0, 1)).max() < 3
        assert pixels[308:492, 408:592].std(axis=(0, 1)).max() < 3  # the hide rectangle
        listed = client.get(f"/picture/{solid}/regions").json()["regions"]
        assert [
            (r["id"], r["source"], r["hidden"]) for r in listed if r["source"] == "request"
        ] == [("q1", "request", True)]
        assert _done(app, client, dated)["options"] == {"keep_metadata": ["datetime"]}
        exif = Image.open(io.BytesIO(client.get(f"/picture/{dated}/image").content)).getexif()
        assert _done(app, client, tidy)["options"] == {"mode": "solid", "preset": "tidy"}
        tidy_out = client.get(f"/picture/{tidy}/image").content
        _done(app, client, privacy)
        privacy_out = client.get(f"/picture/{privacy}/image").content
        _done(app, client, thorough)
        thorough_out = client.get(f"/picture/{thorough}/image").content
    assert exif.get_ifd(ExifTags.IFD.Exif)[0x9003] == DATETIME_ORIGINAL
    assert not exif.get_ifd(ExifTags.IFD.GPSInfo)
    # The exact mask is checked on the embedded default (tests/e2e/test_upload_options.py);
    # here, that the worker took the preset: another mask than the server's own preset.
    assert black(tidy_out).any() and not np.array_equal(black(tidy_out), black(privacy_out))
    assert np.array_equal(black(thorough_out), thorough_mask)
    # Claimed as the `options` kind: statuses an older worker never claims.
    assert backends.transitions(solid)[:2] == [
        (None, "options_pending"),
        ("options_pending", "options_processing"),
    ]


KEY = base64.b64encode(bytes(range(1, 33))).decode()
API_TOKEN = "distributed-api-token-0123456789"
DESK_TOKEN = "photo-desk-token-0123456789"
OVER_FACE = {"x": 650, "y": 250, "width": 850, "height": 1000}


def test_review_and_ignore_and_a_re_render_keep_the_options(
    backends: Backends, deploy: DeploymentFactory
) -> None:
    """Review off on the server: the upload asks for it. The re-render of a correction
    (kind `options_render`) keeps the mode and what `ignore` spared."""
    app = deploy(
        backends,
        workers=1,
        originals_key=KEY,
        api_token=API_TOKEN,
        reviewer_tokens=f"photo-desk:{DESK_TOKEN}",
        allowed_options="mode,ignore,review",
    )
    desk = {"Authorization": f"Bearer {DESK_TOKEN}"}
    bill = (EXAMPLES / "bill-gates.jpg").read_bytes()
    fields = {"mode": "solid", "review": "required", "ignore": json.dumps([OVER_FACE])}
    response = httpx.post(
        f"{app.url}/picture",
        data=fields,
        files={"image": ("bill.jpg", bill, "image/jpeg")},
        headers=desk,
        timeout=30,
    )
    assert response.status_code == 202, response.text
    image_id = response.json()["id"]
    with httpx.Client(base_url=app.url, timeout=30, headers=desk) as client:
        held = support.wait_status(client, image_id, {"review", "done", "failed"}, context=app.logs)
        assert held["status"] == "review", held
        listed = client.get(f"/picture/{image_id}/regions")
        regions = listed.json()["regions"]
        assert [r for r in regions if r["ignored"] and not r["hidden"]], regions
        box = {"x": 400, "y": 300, "width": 200, "height": 200, "hidden": True}
        wanted = [{"id": r["id"], "hidden": r["hidden"]} for r in regions] + [box]
        corrected = client.put(
            f"/picture/{image_id}/regions",
            json={"regions": wanted},
            headers={"If-Match": listed.headers["etag"]},
        )
        assert corrected.status_code == 202, corrected.text
        rendered = support.wait_status(client, image_id, {"review"}, context=app.logs)
        assert rendered["revision"] == 1 and rendered["options"]["mode"] == "solid"
        pixels = support.decode(client.get(f"/picture/{image_id}/image").content).astype(float)
        assert pixels[308:492, 408:592].std(axis=(0, 1)).max() < 3  # solid, as uploaded
        x0, y0, x1, y1 = support.BILL_FACE
        original = support.decode(bill)[y0 + 200 : y1 - 200, x0 + 150 : x1 - 150]
        face = pixels[y0 + 200 : y1 - 200, x0 + 150 : x1 - 150]
        assert support.detail(face) > 0.8 * support.detail(original)  # still spared
        assert client.post(f"/picture/{image_id}/approve").status_code == 200
    renders = [b for _, b in backends.transitions(image_id)]
    assert "options_rendering" in renders and "rendering" not in renders
