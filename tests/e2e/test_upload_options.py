"""Options per upload (issue 26) through a real server process, the embedded default:
each option applied to a real picture, each refusal with the field it names, the
options shown by GET and bound to an Idempotency-Key."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import ExifTags, Image

from e2e.test_detection_preset import black, expected_hidden, lifted_png
from photo_metadata import DATETIME_ORIGINAL, photo
from support import BILL, BILL_FACE, Server, decode, detail, run_server, wait_status


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("options") / "data") as running:
        yield running


def _upload(client: httpx.Client, data: bytes, **fields: str) -> httpx.Response:
    # The options go before the file part, as a streaming client sends them.
    return client.post(
        "/picture", data=fields, files={"image": ("bill-gates.jpg", data, "image/jpeg")}
    )


def _done(server: Server, client: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    final = server.wait_done(client, response.json()["id"])
    assert final["status"] == "done", final
    return final


def _face(client: httpx.Client, image_id: str) -> np.ndarray:
    pixels = decode(client.get(f"/picture/{image_id}/image").content)
    x0, y0, x1, y1 = BILL_FACE
    # The middle of the face: inside the mask whatever its shape.
    return pixels[
        y0 + (y1 - y0) // 4 : y1 - (y1 - y0) // 4, x0 + (x1 - x0) // 4 : x1 - (x1 - x0) // 4
    ]


def test_solid_mode_fills_the_face_with_one_colour(server: Server) -> None:
    with server.client() as client:
        final = _done(server, client, _upload(client, BILL.read_bytes(), mode="solid"))
        assert final["options"] == {"mode": "solid"}
        face = _face(client, final["id"]).astype(float)
        # One colour, up to the JPEG's rounding; a blur keeps the face's shading.
        assert face.std(axis=(0, 1)).max() < 3, face.std(axis=(0, 1))
        plain = _done(server, client, _upload(client, BILL.read_bytes()))
        assert plain["options"] is None
        assert _face(client, plain["id"]).astype(float).std(axis=(0, 1)).max() > 3


def test_query_parameters_of_a_raw_upload_are_options(server: Server) -> None:
    with server.client() as client:
        response = client.post(
            "/picture?mode=pixelate&keep_metadata=gps",
            content=BILL.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
        )
        final = _done(server, client, response)
        assert final["options"] == {"mode": "pixelate", "keep_metadata": ["gps"]}


def test_keep_metadata_datetime_keeps_only_the_date(server: Server) -> None:
    data = photo("JPEG", orientation=6, width=120, height=80)  # GPS, date, camera, ...
    with server.client() as client:
        final = _done(server, client, _upload(client, data, keep_metadata="datetime"))
        assert final["options"] == {"keep_metadata": ["datetime"]}
        out = client.get(f"/picture/{final['id']}/image").content
    exif = Image.open(io.BytesIO(out)).getexif()
    assert exif.get_ifd(ExifTags.IFD.Exif)[0x9003] == DATETIME_ORIGINAL
    assert not exif.get_ifd(ExifTags.IFD.GPSInfo)  # the server keeps nothing by default
    assert set(exif) <= {0x0112, 0x0132, ExifTags.IFD.Exif}


@pytest.mark.parametrize(
    ("fields", "status", "code", "field"),
    [
        ({"mode": "crayon"}, 422, "invalid_option", "mode"),
        ({"preset": "sloppy"}, 422, "invalid_option", "preset"),
        ({"keep_metadata": "gps,serial"}, 422, "invalid_option", "keep_metadata"),
        ({"review": "off"}, 422, "invalid_option", "review"),
        ({"hide": "[{}]"}, 422, "invalid_option", "hide"),
        ({"hide": "not json"}, 422, "invalid_option", "hide"),
        (
            {"hide": json.dumps([{"x": 0, "y": 0, "width": 1, "height": 1}] * 101)},
            422,
            "invalid_option",
            "hide",
        ),
        ({"ignore": "[]"}, 403, "option_not_allowed", "ignore"),  # not allowed by default
    ],
)
def test_refusals_name_their_field(
    server: Server, fields: dict[str, str], status: int, code: str, field: str
) -> None:
    with server.client() as client:
        response = _upload(client, BILL.read_bytes(), **fields)
        assert response.status_code == status, response.text
        assert response.json()["error"] == code
        assert response.json()["field"] == field
        assert client.get("/pictures").json()["total"] >= 0  # the server still answers


def test_the_operator_forbids_options(tmp_path: Path) -> None:
    env = {"IMAGEBLUR_ALLOWED_OPTIONS": "keep_metadata"}
    with run_server(tmp_path / "data", env=env) as running, running.client() as client:
        response = _upload(client, BILL.read_bytes(), mode="solid")
        assert response.status_code == 403, response.text
        assert response.json() | {"message": ""} == {
            "error": "option_not_allowed",
            "message": "",
            "field": "mode",
        }
        raw = client.post(
            "/picture?mode=solid", content=BILL.read_bytes(), headers={"Content-Type": "image/jpeg"}
        )
        assert raw.status_code == 403 and raw.json()["field"] == "mode"
        assert _upload(client, BILL.read_bytes(), keep_metadata="gps").status_code == 202


def test_an_idempotency_key_is_bound_to_the_options(server: Server) -> None:
    data = BILL.read_bytes()
    with server.client() as client:
        key = {"Idempotency-Key": "options-key-1"}
        first = client.post(
            "/picture", data={"mode": "solid"}, files={"image": ("b.jpg", data)}, headers=key
        )
        assert first.status_code == 202, first.text
        again = client.post(
            "/picture", data={"mode": "solid"}, files={"image": ("b.jpg", data)}, headers=key
        )
        assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
        other = client.post(
            "/picture", data={"mode": "blur"}, files={"image": ("b.jpg", data)}, headers=key
        )
        assert other.status_code == 409, other.text
        assert other.json()["error"] == "idempotency_key_reused"
        none = client.post("/picture", files={"image": ("b.jpg", data)}, headers=key)
        assert none.status_code == 409, none.text


# --- a re-render keeps the upload's options ----------------------------------------------

KEY = base64.b64encode(bytes(range(32))).decode()
API_TOKEN = "api-token-0123456789abcdef"
REVIEWER_TOKEN = "reviewer-token-0123456789abcdef"
REVIEW_ENV = {
    "IMAGEBLUR_REVIEW": "required",
    "IMAGEBLUR_ORIGINALS_KEY": KEY,
    "IMAGEBLUR_API_TOKEN": API_TOKEN,
    "IMAGEBLUR_REVIEWER_TOKEN": REVIEWER_TOKEN,
}
MANUAL_BOX = (400, 300, 200, 200)  # away from the face, with detail to lose


@pytest.fixture(scope="module")
def review_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("options-review") / "data"
    with run_server(data, env=REVIEW_ENV) as running:
        yield running


def _as(server: Server, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def test_a_re_render_keeps_the_options(review_server: Server) -> None:
    with _as(review_server, API_TOKEN) as api, _as(review_server, REVIEWER_TOKEN) as reviewer:
        response = _upload(api, BILL.read_bytes(), mode="solid")
        assert response.status_code == 202, response.text
        image_id = response.json()["id"]
        held = wait_status(api, image_id, {"review", "failed"}, context=review_server.logs)
        assert held["status"] == "review", held
        listed = reviewer.get(f"/picture/{image_id}/regions")
        x, y, w, h = MANUAL_BOX
        wanted = [{"id": r["id"], "hidden": r["hidden"]} for r in listed.json()["regions"]]
        wanted.append({"x": x, "y": y, "width": w, "height": h, "hidden": True})
        corrected = reviewer.put(
            f"/picture/{image_id}/regions",
            json={"regions": wanted},
            headers={"If-Match": listed.headers["etag"]},
        )
        assert corrected.status_code == 202, corrected.text
        assert corrected.json()["status"] == "pending"
        rendered = wait_status(api, image_id, {"review"}, context=review_server.logs)
        assert rendered["revision"] == 1 and rendered["options"] == {"mode": "solid"}
        pixels = decode(api.get(f"/picture/{image_id}/image").content).astype(float)
        # The reviewer's box is hidden with the upload's mode: one flat colour.
        box = pixels[y + 8 : y + h - 8, x + 8 : x + w - 8]
        assert box.std(axis=(0, 1)).max() < 3, box.std(axis=(0, 1))
        actions = [e["action"] for e in api.get(f"/picture/{image_id}/history").json()["events"]]
        assert actions == ["uploaded", "processed", "corrected", "rendered"]


# --- hide ---------------------------------------------------------------------------------

HIDE = {"x": 400, "y": 300, "width": 200, "height": 200}  # away from the face, with detail


def _hidden_corner(pixels: np.ndarray) -> np.ndarray:
    x, y, w, h = HIDE["x"], HIDE["y"], HIDE["width"], HIDE["height"]
    return pixels[y + 8 : y + h - 8, x + 8 : x + w - 8].astype(float)


def test_a_hide_rectangle_is_hidden_and_listed_as_requested(server: Server) -> None:
    with server.client() as client:
        fields = {"mode": "solid", "hide": json.dumps([HIDE])}
        final = _done(server, client, _upload(client, BILL.read_bytes(), **fields))
        assert final["options"] == {"mode": "solid", "hide": [HIDE]}
        pixels = decode(client.get(f"/picture/{final['id']}/image").content)
        corner = _hidden_corner(pixels)
        assert corner.std(axis=(0, 1)).max() < 3  # one flat colour
        before = _hidden_corner(decode(BILL.read_bytes()))
        assert np.abs(corner - before).mean() > 5  # and not the picture's own
        listed = client.get(f"/picture/{final['id']}/regions").json()["regions"]
        requested = [r for r in listed if r["source"] == "request"]
        assert requested == [
            {
                "id": "q1", **HIDE, "score": None, "source": "request", "kind": "face",
                "uncertain": False, "hidden": True, "ignored": False,
            }
        ]  # fmt: skip
        assert final["faces"] == 1  # the face found, not the rectangle


def test_a_hide_rectangle_outside_the_picture_is_refused(server: Server) -> None:
    outside = [{"x": 5000, "y": 0, "width": 10, "height": 10}]
    with server.client() as client:
        response = _upload(client, BILL.read_bytes(), hide=json.dumps(outside))
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "hide"


def test_a_reviewer_cannot_show_a_hide_rectangle(review_server: Server) -> None:
    with _as(review_server, API_TOKEN) as api, _as(review_server, REVIEWER_TOKEN) as reviewer:
        response = _upload(api, BILL.read_bytes(), hide=json.dumps([HIDE]))
        assert response.status_code == 202, response.text
        image_id = response.json()["id"]
        assert wait_status(api, image_id, {"review", "failed"})["status"] == "review"
        listed = reviewer.get(f"/picture/{image_id}/regions")
        etag, regions = listed.headers["etag"], listed.json()["regions"]
        shown = [{"id": r["id"], "hidden": r["source"] != "request"} for r in regions]
        refused = reviewer.put(
            f"/picture/{image_id}/regions", json={"regions": shown}, headers={"If-Match": etag}
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == "invalid_regions"
        # Left out of a correction, it stays, hidden.
        others = [
            {"id": r["id"], "hidden": r["hidden"]} for r in regions if r["source"] != "request"
        ]
        kept = reviewer.put(
            f"/picture/{image_id}/regions", json={"regions": others}, headers={"If-Match": etag}
        )
        assert kept.status_code == 202, kept.text
        rendered = wait_status(api, image_id, {"review"}, context=review_server.logs)
        assert rendered["revision"] == 1
        after = reviewer.get(f"/picture/{image_id}/regions").json()["regions"]
        assert [r["id"] for r in after if r["source"] == "request" and r["hidden"]] == ["q1"]
        pixels = decode(api.get(f"/picture/{image_id}/image").content)
        before = _hidden_corner(decode(BILL.read_bytes()))
        assert detail(_hidden_corner(pixels)) < 0.3 * detail(before)


# --- ignore -------------------------------------------------------------------------------

OVER_FACE = {"x": 650, "y": 250, "width": 850, "height": 1000}  # BILL_FACE, and room


def test_ignore_spares_a_detection_and_lists_it_ignored(tmp_path: Path) -> None:
    env = {"IMAGEBLUR_ALLOWED_OPTIONS": "mode,ignore,hide", "IMAGEBLUR_API_TOKEN": API_TOKEN}
    with run_server(tmp_path / "data", env=env) as running, _as(running, API_TOKEN) as api:
        final = _done(running, api, _upload(api, BILL.read_bytes(), ignore=json.dumps([OVER_FACE])))
        assert final["options"] == {"ignore": [OVER_FACE]}
        assert final["faces"] == 0
        listed = api.get(f"/picture/{final['id']}/regions").json()["regions"]
        confident = [r for r in listed if not r["uncertain"]]
        assert confident and all(r["ignored"] and not r["hidden"] for r in confident), listed
        x0, y0, x1, y1 = BILL_FACE
        face = (slice(y0 + 200, y1 - 200), slice(x0 + 150, x1 - 150))
        out = decode(api.get(f"/picture/{final['id']}/image").content)
        assert detail(out[face]) > 0.8 * detail(decode(BILL.read_bytes())[face])  # shown
        events = api.get(f"/picture/{final['id']}/history").json()["events"]
        fingerprint = hashlib.sha256(API_TOKEN.encode()).hexdigest()[:8]
        assert events[0]["detail"] == f"options: ignore; ignore asked by token {fingerprint}"

        # `hide` wins: a detection that touches a hide rectangle is hidden.
        inside = {"x": 1000, "y": 600, "width": 20, "height": 20}
        both = {"ignore": json.dumps([OVER_FACE]), "hide": json.dumps([inside])}
        final = _done(running, api, _upload(api, BILL.read_bytes(), **both))
        assert final["faces"] == 1
        listed = api.get(f"/picture/{final['id']}/regions").json()["regions"]
        assert not [r for r in listed if r["ignored"]]
        out = decode(api.get(f"/picture/{final['id']}/image").content)
        assert detail(out[face]) < 0.25 * detail(decode(BILL.read_bytes())[face])


# --- review -------------------------------------------------------------------------------


def test_review_required_holds_a_picture_on_a_server_without_review(tmp_path: Path) -> None:
    env = {k: v for k, v in REVIEW_ENV.items() if k != "IMAGEBLUR_REVIEW"}  # review off
    with (
        run_server(tmp_path / "data", env=env) as running,
        _as(running, API_TOKEN) as api,
        _as(running, REVIEWER_TOKEN) as reviewer,
    ):
        response = _upload(api, BILL.read_bytes(), review="required")
        assert response.status_code == 202, response.text
        image_id = response.json()["id"]
        held = wait_status(api, image_id, {"review", "done", "failed"}, context=running.logs)
        assert held["status"] == "review" and held["review"] == "pending", held
        assert held["options"] == {"review": "required"}
        approved = reviewer.post(f"/picture/{image_id}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "done"
        # Without the option the server holds nothing.
        plain = _done(running, api, _upload(api, BILL.read_bytes()))
        assert plain["review"] is None


def test_review_required_needs_a_server_that_can_hold(server: Server) -> None:
    with server.client() as client:  # no originals key, no reviewers
        response = _upload(client, BILL.read_bytes(), review="required")
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "review_unavailable"
        assert response.json()["field"] == "review"


# --- preset -------------------------------------------------------------------------------


def test_a_preset_sets_its_values_but_those_the_operator_set(tmp_path: Path) -> None:
    source, rgb = lifted_png(tmp_path)
    data = source.read_bytes()
    env = {"IMAGEBLUR_MASK_SCALE": "1.6"}  # explicit: a preset never changes it
    with run_server(tmp_path / "data", env=env) as running, running.client() as client:

        def hidden(**fields: str) -> np.ndarray:
            files = {"image": ("linus.png", data, "image/png")}
            response = client.post("/picture", data={"mode": "solid", **fields}, files=files)
            final = _done(running, client, response)
            return black(client.get(f"/picture/{final['id']}/image").content)

        tidy = hidden(preset="tidy")
        assert np.array_equal(tidy, expected_hidden(rgb, detection_preset="tidy", mask_scale=1.6))
        privacy = hidden()
        assert np.array_equal(privacy, expected_hidden(rgb, mask_scale=1.6))
        assert not np.array_equal(tidy, privacy)
        # Its extra looks too, on a server that runs privacy (a detector loaded for it).
        thorough = hidden(preset="thorough")
        wanted = expected_hidden(rgb, detection_preset="thorough", mask_scale=1.6)
        assert np.array_equal(thorough, wanted)
