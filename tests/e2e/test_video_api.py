"""Videos through real HTTP (issue 25, the service side): `imageblur serve` (uvicorn, the
embedded default: SQLite, the local store, the in-process queue, the worker in the same
process) with IMAGEBLUR_VIDEO on, the API token set and the real pipeline
(`imageblur.video`): upload (multipart and raw, Idempotency-Key), the result by ranges
and through its signed playback URL, lists apart from pictures, refusals with nothing
stored, review; and with videos off. What must happen while a job runs (its progress, a
DELETE) runs on a server whose test pipeline holds a clip until told
(tests/video_servers.py), so that no test races a job's end."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from tests.webhook_receiver import webhook_receiver

from clips import Clip, decoded, write_sound
from metrics_scrape import get, scrape, total
from support import Server, jpeg_bytes, run_server, wait_until
from video_copy import HELD_FRAMES, HOLD_AT, gate_name, make_clip, padded_before_moov
from video_servers import AUTH, PORTS, TOKEN, video_server

MP4_START = b"\0\0\0\x18ftypisom\0\0\2\0isomiso2"  # what an MP4's first bytes are


def tmp_files(server: Server) -> list[Path]:
    """The files in the server's TMPDIR: an upload is streamed to the store, never
    written there."""
    return [p for p in (server.data_dir.parent / "spool").rglob("*") if not p.is_dir()]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4").read_bytes()


def video_env(data_dir: Path, **extra: str) -> dict[str, str]:
    spool = data_dir.parent / "spool"  # the server's TMPDIR: uploads never go there
    spool.mkdir(exist_ok=True)
    return {
        "IMAGEBLUR_VIDEO": "true",
        "IMAGEBLUR_API_TOKEN": TOKEN,
        "IMAGEBLUR_MAX_VIDEO_BYTES": "1000000",
        "IMAGEBLUR_DETECTOR_THREADS": "1",
        "TMPDIR": str(spool),
        **extra,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`imageblur serve` with videos on: the real pipeline."""
    data = tmp_path_factory.mktemp("video") / "data"
    with run_server(data, env=video_env(data), port=next(PORTS)) as srv:
        yield srv


@pytest.fixture(scope="module")
def held_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The copy-through test pipeline, which holds a clip of HELD_FRAMES frames."""
    root = tmp_path_factory.mktemp("held")
    (root / "gate").mkdir()  # a held clip goes on once its file is made here
    with video_server(root / "data", VIDEO_TEST_GATE=str(root / "gate")) as srv:
        yield srv


def held_clip(tmp_path: Path, seed: int) -> bytes:
    """A clip the server's pipeline holds at frame 5 until `let_go`."""
    return make_clip(tmp_path / f"held-{seed}.mp4", frames=HELD_FRAMES, seed=seed).read_bytes()


def let_go(server: Server, clip: bytes) -> None:
    (server.data_dir.parent / "gate" / gate_name(clip)).touch()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as c:
        yield c


def wait_video(client: httpx.Client, image_id: str, server: Server) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def finished() -> bool:
        seen.update(client.get(f"/video/{image_id}").json())
        return seen["status"] in ("done", "failed")

    wait_until(
        finished, timeout_s=60, interval_s=0.1, what=f"video {image_id}", details=server.logs
    )
    return seen


def test_progress_shows_while_a_video_is_processed(held_server: Server, tmp_path: Path) -> None:
    clip = held_clip(tmp_path, seed=1)
    with httpx.Client(base_url=held_server.url, timeout=30, headers=AUTH) as client:
        image_id = client.post("/video", files={"video": ("h.mp4", clip, "video/mp4")}).json()["id"]

        def progress_shown() -> dict[str, Any] | None:
            shown = client.get(f"/video/{image_id}").json()
            return shown["progress"] if shown["status"] == "processing" else None

        progress = wait_until(progress_shown, timeout_s=30, what="progress while processing")
        assert (progress["frames_done"], progress["frames_total"]) == (HOLD_AT, HELD_FRAMES)
        assert progress["eta_s"] is None or progress["eta_s"] >= 0
        let_go(held_server, clip)
        done = wait_video(client, image_id, held_server)
        assert done["status"] == "done" and done["progress"] is None, done


def test_a_video_is_accepted_processed_and_served_by_ranges(
    server: Server, client: httpx.Client, clip: bytes
) -> None:
    created = client.post("/video", files={"video": ("clip.mp4", clip, "video/mp4")})
    assert created.status_code == 202, created.text
    body = created.json()
    assert created.headers["location"] == f"/video/{body['id']}"
    assert (body["kind"], body["status"], body["name"]) == ("video", "pending", "clip.mp4")
    assert (body["width"], body["height"], body["frames"], body["fps"]) == (160, 120, 20, 10.0)
    assert body["video_codec"] == "h264" and body["duration_s"] == pytest.approx(2.0)
    assert body["playback_url"] is None and body["audio"] is None
    done = wait_video(client, body["id"], server)
    assert done["status"] == "done", done
    assert (done["frames"], done["audio"], done["progress"]) == (20, "none", None)
    assert isinstance(done["faces"], int)  # face tracks: colour bars have none to speak of
    assert tmp_files(server) == []  # the upload went to the store, never to TMPDIR
    # Counted just after the record reads done: 2 s and 20 frames of video.
    wait_until(
        lambda: (
            _sample(client, "imageblur_video_seconds_total") >= 2.0
            and _sample(client, "imageblur_video_frames_total") >= 20
        ),
        what="the video counted in /metrics",
    )
    whole = client.get(f"/video/{body['id']}/file")
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    size = len(whole.content)
    assert int(whole.headers["content-length"]) == size and whole.content[4:8] == b"ftyp"

    part = client.get(f"/video/{body['id']}/file", headers={"Range": "bytes=4-11"})
    assert part.status_code == 206 and part.content == whole.content[4:12]
    assert part.headers["content-range"] == f"bytes 4-11/{size}"
    tail = client.get(f"/video/{body['id']}/file", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == whole.content[-10:]
    opened = client.get(f"/video/{body['id']}/file", headers={"Range": "bytes=100-"})
    assert opened.status_code == 206 and opened.content == whole.content[100:]
    for bad in (f"bytes={size}-", "bytes=5-2", "bytes=0-1,4-5", "pages=1-2", "bytes=-0"):
        refused = client.get(f"/video/{body['id']}/file", headers={"Range": bad})
        assert refused.status_code == 416, bad
        assert refused.json()["error"] == "range_not_satisfiable"
        assert refused.headers["content-range"] == f"bytes */{size}"


def test_the_playback_url_plays_without_a_bearer_header(
    server: Server, client: httpx.Client, clip: bytes
) -> None:
    image_id = client.post("/video", files={"video": ("p.mp4", clip, "video/mp4")}).json()["id"]
    done = wait_video(client, image_id, server)
    url = done["playback_url"]
    assert url.startswith(f"/video/{image_id}/file?expires=") and done["playback_expires_at"]
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        played = anonymous.get(url, headers={"Range": "bytes=0-99"})
        assert played.status_code == 206 and len(played.content) == 100
        assert anonymous.get(f"/video/{image_id}/file").status_code == 401
        altered = url[:-2] + ("AA" if not url.endswith("AA") else "BB")
        assert anonymous.get(altered).status_code == 401
        assert anonymous.get(url.replace("expires=", "expires=1")).status_code == 401
        # It opens that file only: not the record, not another route.
        assert anonymous.get(url.replace("/file?", "?")).status_code == 401
        assert anonymous.delete(url).status_code == 401


def test_a_raw_upload_with_an_idempotency_key_is_replayed(
    server: Server, client: httpx.Client, clip: bytes
) -> None:
    headers = {"Content-Type": "video/mp4", "Idempotency-Key": "raw-1"}
    first = client.post("/video?filename=raw.mp4", content=clip, headers=headers)
    assert first.status_code == 202, first.text
    again = client.post("/video?filename=raw.mp4", content=clip, headers=headers)
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    other = client.post("/video?filename=raw.mp4", content=clip + b"\0", headers=headers)
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
    assert wait_video(client, first.json()["id"], server)["status"] == "done"


def test_videos_and_pictures_are_listed_apart(
    server: Server, client: httpx.Client, clip: bytes
) -> None:
    video_id = client.post("/video", files={"video": ("l.mp4", clip, "video/mp4")}).json()["id"]
    picture = client.post("/picture", files={"image": ("l.jpg", jpeg_bytes(), "image/jpeg")})
    picture_id = picture.json()["id"]
    videos = client.get("/videos?limit=100").json()
    assert video_id in {v["id"] for v in videos["items"]}
    assert picture_id not in {v["id"] for v in videos["items"]}
    assert all(v["kind"] == "video" for v in videos["items"])
    pictures = client.get("/pictures?limit=100").json()
    assert picture_id in {p["id"] for p in pictures["items"]}
    assert video_id not in {p["id"] for p in pictures["items"]}
    assert client.get(f"/picture/{video_id}").status_code == 404
    assert client.get(f"/video/{picture_id}").status_code == 404
    wait_video(client, video_id, server)
    # Done before the next test counts the stored files: its result is written late.
    server.wait_done(client, picture_id)


def test_the_picture_gauges_count_pictures_alone(tmp_path: Path, clip: bytes) -> None:
    """`imageblur_pictures{status}` leaves videos out, though done is both kinds' status.
    A server of its own: its first scrape reads the database after both are done (the
    gauges are read at most once per 15 s)."""
    data = tmp_path / "data"
    with (
        run_server(data, env=video_env(data), port=next(PORTS)) as srv,
        httpx.Client(base_url=srv.url, timeout=30, headers=AUTH) as client,
    ):
        video_id = client.post("/video", files={"video": ("g.mp4", clip, "video/mp4")})
        picture = client.post("/picture", files={"image": ("g.jpg", jpeg_bytes(), "image/jpeg")})
        assert wait_video(client, video_id.json()["id"], srv)["status"] == "done"
        assert srv.wait_done(client, picture.json()["id"])["status"] == "done"
        samples = scrape(f"{srv.url}/metrics", token=TOKEN)
    assert get(samples, "imageblur_pictures", status="done") == 1
    assert total(samples, "imageblur_pictures") == 1
    assert not any(
        labels == frozenset({("status", "video_pending")}) for _, labels in samples
    )  # a status only videos are in is no picture's


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"just some text", "text/plain", 415, "unsupported_media_type"),
        (b"just some text, claiming to be a video", "video/mp4", 415, "unsupported_video"),
        (b"\0" * 1_000_001, "video/mp4", 413, "too_large"),
    ],
    ids=["not a video type", "not a video", "too large"],
)
def test_a_refused_upload_stores_nothing(
    server: Server, client: httpx.Client, body: bytes, content_type: str, status: int, code: str
) -> None:
    before = server.stored_files()
    refused = client.post(
        "/video?filename=x.mp4", content=body, headers={"Content-Type": content_type}
    )
    assert refused.status_code == status and refused.json()["error"] == code, refused.text
    assert server.stored_files() == before
    missing = client.post("/video", files={"other": ("x.mp4", b"x", "video/mp4")})
    assert missing.status_code == 400 and missing.json()["error"] == "missing_file"
    broken = client.post(
        "/video", content=b"--b\r\nnot a part", headers={"Content-Type": "multipart/form-data"}
    )
    assert broken.status_code == 400 and broken.json()["error"] == "bad_multipart"
    assert server.stored_files() == before
    assert tmp_files(server) == []


EXAMPLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "example-pictures"


def test_a_videos_face_tracks_are_stored_as_one_object_and_deleted_with_it(
    server: Server, client: httpx.Client, tmp_path: Path
) -> None:
    """Bill Gates' photo panning a pixel a frame: one face track, its key boxes where
    the face is, in one JSON object of the results store beside the result, served at
    `tracks_url`, and gone with the video."""
    photo = Image.open(EXAMPLE / "bill-gates.jpg").convert("RGB").resize((320, 180))
    face = np.asarray(photo)
    frames = [np.roll(face, i, axis=1) for i in range(20)]
    src = Clip(width=320, height=180, frames=20, fps=10, picture=frames.__getitem__)
    body = src.write(tmp_path / "face.mp4").read_bytes()
    image_id = client.post("/video", files={"video": ("face.mp4", body, "video/mp4")}).json()["id"]
    done = wait_video(client, image_id, server)
    assert done["status"] == "done" and done["faces"] == 1, done
    assert done["tracks_url"] == f"/video/{image_id}/tracks"
    stored = [p for p in server.stored_files() if p.name == f"{image_id}-a1.tracks.json"]
    assert len(stored) == 1  # in the results store, beside the result
    tracks = client.get(done["tracks_url"])
    assert tracks.status_code == 200 and tracks.headers["content-type"] == "application/json"
    assert tracks.content == stored[0].read_bytes()
    plan = tracks.json()
    assert plan["format"] == "imageblur.track-plan/2" and "interpolated" in plan["rule"]
    (track,) = plan["tracks"]
    assert track["kind"] == "face" and len(track["keys"]) >= 5  # every 3rd frame looked at
    for index, _, x0, y0, x1, y1, score in track["keys"]:
        assert 0 <= index < 20 and score > 0.5
        centre_x = (x0 + x1) / 2 - index  # the photo moves a pixel a frame
        assert 100 < centre_x < 220 and 0 < y0 < y1 < 180, track["keys"]
    assert client.delete(f"/video/{image_id}").status_code == 204
    assert not [p for p in server.stored_files() if p.name.startswith(image_id)]
    assert client.get(f"/video/{image_id}/tracks").status_code == 404


def _partial_uploads(server: Server) -> list[int]:
    """The sizes of the local store's files being written (temp files, then renamed)."""
    return [p.stat().st_size for p in server.stored_files() if p.name.endswith(".partial")]


def test_an_upload_streams_into_the_store_and_never_to_tmpdir(
    server: Server, client: httpx.Client, clip: bytes
) -> None:
    """Half-way through a chunked upload, the store holds what came (its temp file) and
    the API's TMPDIR holds nothing; the header, past 900 kB of padding at the end of the
    file, is found by ranged reads of the stored object."""
    body = padded_before_moov(clip, 900_000)
    seen: dict[str, Any] = {}

    def chunks() -> Iterator[bytes]:
        yield body[:600_000]
        seen["partial"] = wait_until(
            lambda: [n for n in _partial_uploads(server) if n >= 256 * 1024],
            what="the upload's first pieces in the store",
        )
        seen["tmp"] = tmp_files(server)
        yield body[600_000:]

    created = client.post(
        "/video?filename=padded.mp4", content=chunks(), headers={"Content-Type": "video/mp4"}
    )
    assert created.status_code == 202, created.text
    assert seen["tmp"] == [] and seen["partial"], seen
    assert created.json()["bytes"] == len(body) and created.json()["frames"] == 20
    done = wait_video(client, created.json()["id"], server)
    assert done["status"] == "done", done
    assert tmp_files(server) == [] and _partial_uploads(server) == []


def refused_uploads(tmp_path: Path, clip: bytes) -> dict[str, tuple[bytes, int, str]]:
    """Uploads that start as a video does (so they are stored), each with the answer the
    probe gives once it reads the stored object's header."""
    return {
        "truncated": (clip[: len(clip) // 2], 400, "invalid_video"),
        "audio only": (write_sound(tmp_path / "a.mp4", "aac").read_bytes(), 415, "no_video"),
        "too many pixels": (
            make_clip(tmp_path / "big.mp4", frames=1, width=4000, height=2200).read_bytes(),
            413,
            "too_many_pixels",
        ),
    }


def test_an_upload_the_probe_refuses_is_deleted_from_the_store(
    server: Server, client: httpx.Client, clip: bytes, tmp_path: Path
) -> None:
    before = server.stored_files()
    for what, (body, status, code) in refused_uploads(tmp_path, clip).items():
        refused = client.post("/video", files={"video": ("x.mp4", body, "video/mp4")})
        assert (refused.status_code, refused.json()["error"]) == (status, code), what
        assert server.stored_files() == before, what
    assert tmp_files(server) == []


def test_the_byte_cap_holds_while_streaming(server: Server, client: httpx.Client) -> None:
    """A chunked body (no Content-Length to refuse it early) that starts like an MP4 (so
    it is being stored) is cut at the cap, and what was stored of it goes."""
    before = server.stored_files()
    chunks = iter([MP4_START + b"\0" * 65536] + [b"\0" * 65536] * 20)  # over 1 MB
    refused = client.post("/video", content=chunks, headers={"Content-Type": "video/mp4"})
    assert refused.status_code == 413 and refused.json()["error"] == "too_large"
    assert server.stored_files() == before
    assert tmp_files(server) == []


def test_delete_while_processing_stops_the_job_and_leaves_nothing(
    held_server: Server, tmp_path: Path
) -> None:
    server = held_server
    clip = held_clip(tmp_path, seed=2)  # held until it is cancelled: never let go
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client:
        sent = client.post("/video", files={"video": ("d.mp4", clip, "video/mp4")})
        image_id = sent.json()["id"]
        wait_until(
            lambda: client.get(f"/video/{image_id}").json()["progress"],
            timeout_s=30,
            what="the job to be running",
        )
        assert client.delete(f"/video/{image_id}").status_code == 204
        assert client.get(f"/video/{image_id}").status_code == 404

    def stopped() -> bool:
        lines = [json.loads(x) for x in server.logs().splitlines() if x.startswith("{")]
        events = {e["event"] for e in lines if e.get("image_id") == image_id}
        return {"job.cancelled", "job.lease_lost"} <= events

    wait_until(stopped, timeout_s=10, what="the job to stop", details=server.logs)
    wait_until(
        lambda: not [p for p in server.stored_files() if image_id in p.name],
        timeout_s=10,
        what="every object of the video to go",
    )
    work = server.data_dir / "imageblur-work"
    wait_until(
        lambda: not [p for p in work.rglob("*") if image_id in str(p)],
        timeout_s=10,
        what="the job's work folder to go",
    )


def test_openapi_declares_the_video_routes_and_their_errors(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    expected = {
        ("/video", "post"): {"400", "401", "403", "404", "409", "413", "415", "422", "503"},
        ("/video/{image_id}", "get"): {"401", "404", "422", "503"},
        ("/video/{image_id}", "delete"): {"401", "404", "422", "503"},
        ("/video/{image_id}/file", "get"): {"401", "404", "409", "416", "422", "503"},
        ("/videos", "get"): {"401", "404", "422", "503"},
    }
    for (path, method), statuses in expected.items():
        responses = spec["paths"][path][method]["responses"]
        assert {s for s in responses if s[0] in "45"} == statuses, (path, method)
        for status in statuses:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)
    body = spec["paths"]["/video"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "video/mp4" in body
    # The options a video takes are documented with the route (issue 26).
    described = spec["paths"]["/video"]["post"]["description"]
    assert all(name in described for name in ("mode", "keep_metadata", "hide", "callback_url"))
    assert "options" in spec["components"]["schemas"]["Video"]["properties"]


def test_with_videos_off_the_routes_say_so(tmp_path: Path, clip: bytes) -> None:
    """`imageblur serve` itself with IMAGEBLUR_VIDEO off (as the Kubernetes base sets it)."""
    env = {"IMAGEBLUR_VIDEO": "false"}
    with run_server(tmp_path / "data", port=next(PORTS), env=env) as srv, srv.client() as client:
        for response in (
            client.post("/video", files={"video": ("c.mp4", clip, "video/mp4")}),
            client.get("/videos"),
            client.get("/video/0123456789abcdef0123456789abcdef"),
        ):
            assert response.status_code == 404
            assert response.json()["error"] == "video_disabled"
        assert srv.stored_files() == []


def test_with_review_a_video_is_held_sealed_and_approved(tmp_path: Path, clip: bytes) -> None:
    """IMAGEBLUR_REVIEW=required: the original is sealed while stored (the streamed
    envelope, v2) and kept; the result is held in review, playable; a correction answers
    409 not_supported; approval releases it and deletes the original."""
    reviewer = "video-reviewer-token-0123456789"
    env = {
        "IMAGEBLUR_REVIEW": "required",
        "IMAGEBLUR_ORIGINALS_KEY": base64.b64encode(bytes(range(32))).decode(),
        "IMAGEBLUR_REVIEWER_TOKEN": reviewer,
    }
    data = tmp_path / "data"
    with run_server(data, env=video_env(data, **env), port=next(PORTS)) as srv:
        with httpx.Client(base_url=srv.url, timeout=30, headers=AUTH) as api:
            # Probed through the envelope by ranges; refused, it is deleted.
            before, truncated = srv.stored_files(), clip[: len(clip) // 2]
            refused = api.post("/video", files={"video": ("t.mp4", truncated, "video/mp4")})
            assert refused.status_code == 400 and srv.stored_files() == before
            image_id = api.post("/video", files={"video": ("r.mp4", clip, "video/mp4")}).json()[
                "id"
            ]
            held = wait_until(
                lambda: (
                    (shown := api.get(f"/video/{image_id}").json())["status"] == "review" and shown
                ),
                timeout_s=60,
                what="the video held for review",
                details=srv.logs,
            )
            assert held["review"] == "pending" and held["playback_url"]
            originals = [p for p in srv.stored_files() if p.name == f"{image_id}.mp4"]
            assert len(originals) == 1  # kept for the reviewer, and sealed (version 2)
            assert originals[0].read_bytes()[:9] == b"\x89IBLUR\r\n\x02"
            assert api.get(f"/video/{image_id}/file").status_code == 200
        with httpx.Client(
            base_url=srv.url, timeout=30, headers={"Authorization": f"Bearer {reviewer}"}
        ) as desk:
            body = {"regions": [{"x": 1, "y": 1, "width": 10, "height": 10, "hidden": True}]}
            corrected = desk.put(
                f"/picture/{image_id}/regions", json=body, headers={"If-Match": '"0"'}
            )
            assert corrected.status_code == 409 and corrected.json()["error"] == "not_supported"
            assert desk.post(f"/picture/{image_id}/approve").status_code == 200
            assert desk.get(f"/video/{image_id}").json()["status"] == "done"
        assert not [p for p in srv.stored_files() if p.name == f"{image_id}.mp4"]


def _sample(client: httpx.Client, name: str) -> float:
    """A counter's value in /metrics (0 before its first sample)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return 0.0


def test_options_per_upload_apply_to_videos_and_a_callback_gets_video_done(
    tmp_path: Path, clip: bytes
) -> None:
    """Issue 26 for videos: solid mode, only the date kept, a corner hidden in every
    frame and the thorough preset on a privacy server (issue 28); stored, shown by GET,
    bound to the Idempotency-Key; one `video.done` to the upload's own callback, its
    signature checked with an HMAC written in the test."""
    key = os.urandom(32)
    env = {
        "IMAGEBLUR_WEBHOOK_SECRET": "whsec_" + base64.b64encode(key).decode(),
        "IMAGEBLUR_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
    }
    corner = {"x": 0, "y": 0, "width": 50, "height": 50}
    data = tmp_path / "data"
    with (
        webhook_receiver() as receiver,
        run_server(data, env=video_env(data, **env), port=next(PORTS)) as srv,
        httpx.Client(base_url=srv.url, timeout=30, headers=AUTH) as api,
    ):
        fields = {
            "mode": "solid",
            "preset": "thorough",
            "keep_metadata": "datetime",
            "hide": json.dumps([corner]),
            "callback_url": receiver.url,
        }
        files = {"video": ("c.mp4", clip, "video/mp4")}
        keyed = {"Idempotency-Key": "options-1"}
        answer = api.post("/video", data=fields, files=files, headers=keyed)
        assert answer.status_code == 202, answer.text
        image_id = answer.json()["id"]
        other = api.post("/video", data={**fields, "mode": "blur"}, files=files, headers=keyed)
        assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
        done = wait_video(api, image_id, srv)
        assert done["status"] == "done", done
        assert done["options"] == {
            "mode": "solid",
            "preset": "thorough",
            "keep_metadata": ["datetime"],
            "hide": [corner],
            "callback_url": receiver.url,
        }
        wait_until(receiver.delivered, timeout_s=60, details=srv.logs)
        result = tmp_path / "result.mp4"
        result.write_bytes(api.get(f"/video/{image_id}/file").content)
    ((_, body),) = receiver.verified([key])
    assert body["type"] == "video.done" and body["data"]["id"] == image_id
    frames = [f.to_ndarray(format="rgb24") for f in decoded(result)]
    assert len(frames) == 20
    for frame in frames:  # the corner: one flat colour in every frame; the rest not
        assert frame[4:46, 4:46].std(axis=(0, 1)).max() < 3
        assert frame[60:110, 60:150].std(axis=(0, 1)).max() > 10


def test_options_a_video_cannot_take_are_refused_naming_the_field(
    server: Server, client: httpx.Client, clip: bytes
) -> None:
    """422 invalid_option with the field, and nothing stored: before the video is (a
    multipart field, a raw upload's query), or deleted once its frames are known (a
    rectangle outside them)."""
    before = server.stored_files()
    files = {"video": ("c.mp4", clip, "video/mp4")}
    refused = [
        ({"data": {"keep_metadata": "datetime,camera_settings"}, "files": files}, "keep_metadata"),
        ({"data": {"note": "x", "mode": "sepia"}, "files": files}, "mode"),
        ({"data": {"hide": json.dumps([{"x": 500, "y": 0, "width": 5, "height": 5}])}}, "hide"),
        ({"data": {"ignore": "[]"}, "files": files}, "ignore"),  # not allowed: 403
    ]
    for number, (request, field) in enumerate(refused):
        answer = client.post("/video", **{"files": files, **request})
        expected = 403 if field == "ignore" else 422
        assert answer.status_code == expected, (number, answer.text)
        assert answer.json()["field"] == field
    raw = {"Content-Type": "video/mp4"}
    query = client.post("/video?review=maybe", content=clip, headers=raw)
    assert query.status_code == 422 and query.json()["field"] == "review", query.text
    assert server.stored_files() == before
