"""A video through the distributed back ends (issue 25): PostgreSQL, RabbitMQ (the
video kind's own queue) and S3 (moto: the upload streamed into a multipart upload, never
to the API's TMPDIR, and probed there by ranged GETs, deleted if refused; the result
read by ranged GETs), in one `imageblur serve` with the real pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from distributed.harness import Backends
from support import Server, run_server, wait_until
from video_copy import make_clip
from video_servers import AUTH, PORTS, TOKEN


def test_a_video_on_postgresql_rabbitmq_and_s3(backends: Backends, tmp_path: Path) -> None:
    env = {
        **backends.env(),
        "IMAGEBLUR_RECEIVE_TIMEOUT_S": "0.5",
        "IMAGEBLUR_VIDEO": "true",
        "IMAGEBLUR_API_TOKEN": TOKEN,
        "IMAGEBLUR_DETECTOR_THREADS": "1",
        "TMPDIR": str(tmp_path / "tmp"),  # where an upload must never go
        "IMAGEBLUR_WORK_DIR": str(tmp_path / "work"),  # the worker's, apart
    }
    (tmp_path / "tmp").mkdir()
    subprocess.run(
        [sys.executable, "-m", "imageblur.entrypoints.cli", "migrate"],
        env={**os.environ, **env},
        check=True,
        timeout=60,
    )
    clip = make_clip(tmp_path / "clip.mp4").read_bytes()
    with (
        run_server(tmp_path / "data", env=env, port=next(PORTS)) as srv,
        httpx.Client(base_url=srv.url, timeout=30, headers=AUTH) as api,
    ):
        stored_before = [o.key for o in backends.store("input").list()]
        truncated = clip[: len(clip) // 2]
        refused = api.post("/video", files={"video": ("t.mp4", truncated, "video/mp4")})
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_video"
        assert [o.key for o in backends.store("input").list()] == stored_before
        assert not _pending_uploads(backends)
        created = api.post("/video", files={"video": ("clip.mp4", clip, "video/mp4")})
        assert created.status_code == 202, created.text
        image_id = created.json()["id"]
        seen: dict[str, Any] = {}

        def done() -> bool:
            seen.update(api.get(f"/video/{image_id}").json())
            return seen["status"] in ("done", "failed")

        wait_until(done, timeout_s=60, what="the video done", details=srv.logs)
        assert [p for p in (tmp_path / "tmp").rglob("*") if p.is_file()] == []
        assert seen["status"] == "done" and seen["url"].startswith("s3://"), seen
        whole = api.get(f"/video/{image_id}/file")
        part = api.get(f"/video/{image_id}/file", headers={"Range": "bytes=8-15"})
        assert part.status_code == 206 and part.content == whole.content[8:16]
        with httpx.Client(base_url=srv.url, timeout=30) as anonymous:
            assert anonymous.get(seen["playback_url"]).content == whole.content
        repository = backends.repository()
        try:
            stored = repository.get(image_id)  # in PostgreSQL, as a video
            assert stored is not None and stored.kind == "video" and stored.audio == "none"
        finally:
            repository.close()
        tracks_key = f"{image_id}-a1.tracks.json"  # the tracks, beside the result in S3
        assert backends.store("output").exists(tracks_key)
        tracks = api.get(seen["tracks_url"])
        assert tracks.json()["format"] == "imageblur.track-plan/2"
        assert api.delete(f"/video/{image_id}").status_code == 204
        for role in ("input", "output"):
            assert not [o for o in backends.store(role).list() if image_id in o.key], role
        _with_options(api, srv, backends, clip)


def _with_options(api: httpx.Client, srv: Server, backends: Backends, clip: bytes) -> None:
    """A video uploaded with options (issue 26) runs as the kind `video_options`, through
    its own queue and PostgreSQL's statuses of its own, and keeps its options."""
    fields = {"mode": "solid", "hide": '[{"x": 0, "y": 0, "width": 40, "height": 30}]'}
    created = api.post("/video", data=fields, files={"video": ("o.mp4", clip, "video/mp4")})
    assert created.status_code == 202, created.text
    image_id = created.json()["id"]
    shown = wait_until(
        lambda: (got := api.get(f"/video/{image_id}").json())["status"] == "done" and got,
        timeout_s=60,
        what="the video with options done",
        details=srv.logs,
    )
    assert shown["options"]["mode"] == "solid", shown
    claims = [
        json.loads(line)
        for line in srv.logs().splitlines()
        if '"job.claimed"' in line and image_id in line
    ]
    assert [c["kind"] for c in claims] == ["video_options"]
    repository = backends.repository()
    try:
        stored = repository.get(image_id)
        assert stored is not None and stored.options is not None
        assert stored.options.hide[0].width == 40
    finally:
        repository.close()


def _pending_uploads(backends: Backends) -> list[object]:
    """The input bucket's multipart uploads in progress."""
    store = backends.store("input")
    found = store._client.list_multipart_uploads(Bucket=store._bucket)
    return list(found.get("Uploads", []))
