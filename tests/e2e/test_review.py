"""The review workflow through a real server process (embedded: SQLite, local folder):
regions listed, a manual box hidden by a re-render from the encrypted original, a false
alarm unhidden, stale revisions refused, roles checked, approval deletes the original,
and an unreviewed hold expires."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, UnidentifiedImageError

from imageblur.adapters.encrypted_store import EncryptedStore, Keyring
from imageblur.adapters.local_store import LocalObjectStore
from review_support import API_TOKEN, KEY, REVIEWER_TOKEN, client, review_env
from support import (
    BILL,
    BILL_FACE,
    Server,
    decode,
    detail,
    run_server,
    wait_status,
    wait_until,
)

# An area of bill-gates.jpg away from the face, with detail to lose when hidden.
MANUAL_BOX = (400, 300, 200, 200)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("review") / "data", env=review_env()) as srv:
        yield srv


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with client(server, API_TOKEN) as c:
        yield c


@pytest.fixture
def reviewer(server: Server) -> Iterator[httpx.Client]:
    with client(server, REVIEWER_TOKEN) as c:
        yield c


def upload(api: httpx.Client) -> str:
    response = api.post("/picture", files={"image": (BILL.name, BILL.read_bytes(), "image/jpeg")})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def upload_in_review(api: httpx.Client) -> str:
    image_id = upload(api)
    held = wait_status(api, image_id, {"review", "failed"})
    assert held["status"] == "review" and held["review"] == "pending", held
    return image_id


def regions(c: httpx.Client, image_id: str) -> tuple[str, dict[str, Any]]:
    response = c.get(f"/picture/{image_id}/regions")
    assert response.status_code == 200, response.text
    return response.headers["etag"], response.json()


def put(
    c: httpx.Client, image_id: str, body: Any, etag: str | None = None, **headers: str
) -> httpx.Response:
    if etag is not None:
        headers["If-Match"] = etag
    content = body if isinstance(body, bytes) else None
    return c.put(
        f"/picture/{image_id}/regions",
        content=content,
        json=None if content is not None else body,
        headers=headers,
    )


def keep_all(listed: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": r["id"], "hidden": r["hidden"]} for r in listed["regions"]]


def originals_at_rest(server: Server, image_id: str) -> list[Path]:
    return [
        p
        for p in server.stored_files()
        if p.name.startswith(image_id) and p.parent.name == "originals"
    ]


def test_a_held_picture_lists_its_regions_and_serves_its_result(
    server: Server, api: httpx.Client
) -> None:
    image_id = upload_in_review(api)
    etag, listed = regions(api, image_id)
    assert etag == '"0"' and listed["revision"] == 0
    faces = [r for r in listed["regions"] if r["hidden"] and r["source"] == "detector"]
    assert faces, listed
    first = faces[0]
    assert set(first) == {
        "id", "x", "y", "width", "height", "score", "source", "kind", "uncertain", "hidden",
        "ignored",
    }  # fmt: skip
    x0, y0, x1, y1 = BILL_FACE
    assert first["x"] < x1 and first["x"] + first["width"] > x0
    assert first["y"] < y1 and first["y"] + first["height"] > y0
    assert all(r["uncertain"] == (not r["hidden"]) for r in listed["regions"])
    result = api.get(f"/picture/{image_id}/image")
    assert result.status_code == 200 and result.headers["content-type"] == "image/jpeg"
    assert result.headers["cache-control"] == "no-store"  # a correction will replace it
    events = api.get(f"/picture/{image_id}/history").json()["events"]
    assert [e["action"] for e in events] == ["uploaded", "processed"]
    assert [e["role"] for e in events] == ["api", "worker"]
    assert events[-1]["status"] == "review"


def test_the_original_at_rest_is_not_a_readable_image(server: Server, api: httpx.Client) -> None:
    image_id = upload_in_review(api)
    stored = originals_at_rest(server, image_id)
    assert stored, server.stored_files()
    data = stored[0].read_bytes()
    assert b"\xff\xd8\xff" not in data[:64]
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(data))


def test_a_manual_box_is_hidden_by_a_re_render_then_approval_deletes_the_original(
    server: Server, api: httpx.Client, reviewer: httpx.Client
) -> None:
    image_id = upload_in_review(api)
    etag, listed = regions(reviewer, image_id)
    x, y, w, h = MANUAL_BOX
    wanted = [*keep_all(listed), {"x": x, "y": y, "width": w, "height": h, "hidden": True}]
    response = put(reviewer, image_id, {"regions": wanted}, etag)
    assert response.status_code == 202, response.text
    assert response.headers["etag"] == '"1"'
    assert response.json()["status"] == "pending" and response.json()["revision"] == 1

    stale = put(reviewer, image_id, {"regions": wanted}, etag)
    assert stale.status_code == 412 and stale.json()["error"] == "stale_revision"

    wait_status(api, image_id, {"review"})
    etag, listed = regions(api, image_id)
    assert etag == '"1"'
    manual = [r for r in listed["regions"] if r["source"] == "manual"]
    assert manual == [
        {
            "id": manual[0]["id"], "x": x, "y": y, "width": w, "height": h, "score": None,
            "source": "manual", "kind": "face", "uncertain": False, "hidden": True,
            "ignored": False,
        }
    ]  # fmt: skip
    before = decode(BILL.read_bytes())[y : y + h, x : x + w]
    after = decode(api.get(f"/picture/{image_id}/image").content)[y : y + h, x : x + w]
    assert detail(after) < 0.3 * detail(before)

    approved = reviewer.post(f"/picture/{image_id}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "done" and approved.json()["review"] == "approved"
    assert originals_at_rest(server, image_id) == []
    gone = put(reviewer, image_id, {"regions": wanted}, '"1"')
    assert gone.status_code == 409 and gone.json()["error"] == "original_gone"
    again = reviewer.post(f"/picture/{image_id}/approve")
    assert again.status_code == 409 and again.json()["error"] == "not_in_review"
    actions = [e["action"] for e in api.get(f"/picture/{image_id}/history").json()["events"]]
    assert actions == ["uploaded", "processed", "corrected", "rendered", "approved"]


def test_unhiding_a_false_alarm_gives_its_pixels_back(
    server: Server, api: httpx.Client, reviewer: httpx.Client
) -> None:
    image_id = upload_in_review(api)
    etag, listed = regions(reviewer, image_id)
    unhidden = [{"id": r["id"], "hidden": False} for r in listed["regions"]]
    refused = put(reviewer, image_id, {"regions": unhidden}, etag)
    assert refused.status_code == 422 and refused.json()["error"] == "reason_required"
    for item in unhidden:
        item["reason"] = "a false alarm"
    assert put(reviewer, image_id, {"regions": unhidden}, etag).status_code == 202
    body = wait_status(api, image_id, {"review"})
    assert body["faces"] == 0
    x0, y0, x1, y1 = BILL_FACE
    before = decode(BILL.read_bytes())[y0:y1, x0:x1]
    after = decode(api.get(f"/picture/{image_id}/image").content)[y0:y1, x0:x1]
    assert detail(after) > 0.9 * detail(before)
    events = api.get(f"/picture/{image_id}/history").json()["events"]
    [corrected] = [e for e in events if e["action"] == "corrected"]
    assert corrected["reviewer"] == "reviewer"  # the older single token's name
    assert corrected["reasons"] == {r["id"]: "a false alarm" for r in listed["regions"]}


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {"If-Match": '"0"'}, 400, "invalid_json"),
        ({"regions": [{"x": 1}]}, {"If-Match": '"0"'}, 400, "invalid_json"),
        (
            {"regions": [{"id": "nope", "hidden": True}]},
            {"If-Match": '"0"'},
            422,
            "invalid_regions",
        ),
        (
            {"regions": [{"x": 5000, "y": 5000, "width": 10, "height": 10, "hidden": True}]},
            {"If-Match": '"0"'},
            422,
            "invalid_regions",
        ),
        (
            {"regions": [{"x": 5, "y": 5, "width": 0, "height": 10, "hidden": True}]},
            {"If-Match": '"0"'},
            422,
            "invalid_regions",
        ),
        (b"[" + b"0," * 600_000 + b"0]", {"If-Match": '"0"'}, 413, "too_large"),
        ({"regions": []}, {}, 428, "if_match_required"),
        ({"regions": []}, {"If-Match": '"7"'}, 412, "stale_revision"),
    ],
    ids=[
        "not-json",
        "bad-shape",
        "unknown-id",
        "outside",
        "zero-width",
        "too-large",
        "no-if-match",
        "stale",
    ],
)
def test_bad_corrections_get_clear_errors_and_change_nothing(
    api: httpx.Client,
    reviewer: httpx.Client,
    body: Any,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    image_id = upload_in_review(api)
    response = put(reviewer, image_id, body, **headers)
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert regions(api, image_id)[0] == '"0"'
    assert api.get(f"/picture/{image_id}").json()["status"] == "review"


def test_the_api_token_may_not_correct_or_approve(api: httpx.Client) -> None:
    image_id = upload_in_review(api)
    etag, listed = regions(api, image_id)
    refused = put(api, image_id, {"regions": keep_all(listed)}, etag)
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    approve = api.post(f"/picture/{image_id}/approve")
    assert approve.status_code == 403 and approve.json()["error"] == "forbidden"
    assert api.get(f"/picture/{image_id}").json()["status"] == "review"


def test_an_unreviewed_hold_expires(tmp_path: Path) -> None:
    env = review_env(IMAGEBLUR_REVIEW_TTL_S="1", IMAGEBLUR_RECONCILE_INTERVAL_S="0.5")
    with run_server(tmp_path / "data", env=env) as srv, client(srv, API_TOKEN) as api:
        image_id = upload(api)
        # A 1 s hold may be over before any poll sees it: its history says it was held.
        body = wait_status(api, image_id, {"done", "failed"})
        assert body["status"] == "done" and body["review"] == "expired", body
        # The hold ends in the record first, then the original goes.
        wait_until(lambda: originals_at_rest(srv, image_id) == [], what="the original deleted")
        events = api.get(f"/picture/{image_id}/history").json()["events"]
        assert [(e["action"], e["status"]) for e in events[1:]] == [
            ("processed", "review"),
            ("expired", "done"),
        ]
        assert events[-1]["role"] == "system"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"IMAGEBLUR_REVIEW": "required"}, "IMAGEBLUR_ORIGINALS_KEY"),
        (
            {"IMAGEBLUR_REVIEW": "required", "IMAGEBLUR_ORIGINALS_KEY": "c2hvcnQ="},
            "IMAGEBLUR_ORIGINALS_KEY",
        ),
        (
            {
                "IMAGEBLUR_REVIEW": "required",
                "IMAGEBLUR_ORIGINALS_KEY": KEY,
                "IMAGEBLUR_API_TOKEN": API_TOKEN,
            },
            "IMAGEBLUR_REVIEWER_TOKENS",
        ),
        ({"IMAGEBLUR_REVIEW": "required", "IMAGEBLUR_ORIGINALS_KEY": KEY}, "IMAGEBLUR_API_TOKEN"),
    ],
    ids=["no-key", "short-key", "no-reviewer-token", "no-token"],
)
def test_review_mode_refuses_to_start_without_what_it_needs(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBLUR_")}
    done = subprocess.run(
        [sys.executable, "-m", "imageblur.entrypoints.cli", "serve"],
        env={**clean, "IMAGEBLUR_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert named in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert KEY not in done.stderr + done.stdout


def test_a_render_that_fails_returns_the_picture_to_review_with_its_result(
    server: Server, api: httpx.Client, reviewer: httpx.Client
) -> None:
    image_id = upload_in_review(api)
    before = api.get(f"/picture/{image_id}/image").content
    (original,) = originals_at_rest(server, image_id)
    # An original that opens with the key but that no decoder reads: the render fails.
    sealed = EncryptedStore(LocalObjectStore(original.parent), Keyring(base64.b64decode(KEY)))
    sealed.put(original.name, b"\xff\xd8\xff not a picture", content_type="image/jpeg")
    etag, listed = regions(reviewer, image_id)
    assert put(reviewer, image_id, {"regions": keep_all(listed)}, etag).status_code == 202
    back = wait_status(api, image_id, {"review", "failed"})
    assert (back["status"], back["review"]) == ("review", "pending"), back
    assert api.get(f"/picture/{image_id}/image").content == before  # the previous result
    assert originals_at_rest(server, image_id) == [original]  # still there to correct
    last = api.get(f"/picture/{image_id}/history").json()["events"][-1]
    assert (last["action"], last["role"], last["status"]) == ("render_failed", "worker", "review")
    assert last["detail"] == back["error"] and back["error_code"] == "invalid_image"
    # The result shown is older than the regions: it cannot be released as it is.
    refused = reviewer.post(f"/picture/{image_id}/approve")
    assert (refused.status_code, refused.json()["error"]) == (409, "render_failed")
    etag, _ = regions(reviewer, image_id)
    assert put(reviewer, image_id, {"regions": []}, etag).status_code == 202  # corrected again
