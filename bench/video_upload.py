#!/usr/bin/env python3
"""What a large `POST /video` costs the API process: `imageblur api` (videos on, the
local store in a temporary folder, or S3 on a moto server with --s3; originals sealed
with --encrypted) takes one video of --size-mb streamed by a client that never holds it
(a generated 2 s H.264 clip, padded with a `free` atom before its `moov`, so the probe
must seek to the end to find the header, as for a phone's MP4). While the upload
streams, the API's RSS (VmRSS) and the bytes under its TMPDIR are sampled every 20 ms.

Prints the RSS before, the peak during the upload and probe (until the 202), the growth,
the peak bytes under TMPDIR, the wall time and rate. The video is deleted afterwards
(the API runs no worker). Asserts nothing: the figures go to docs/video.md.

    .venv/bin/python bench/video_upload.py [--size-mb 1024] [--s3] [--encrypted] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from provenance import measured_commit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import servers  # noqa: E402
from support import free_port, wait_until  # noqa: E402
from video_copy import make_clip, top_level_atoms  # noqa: E402

MIB = 1 << 20
TOKEN = "bench-video-upload-token-0123456789"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _tmp_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except FileNotFoundError:
            continue
    return total


def padded_body(clip: bytes, size: int) -> tuple[int, Iterator[bytes]]:
    """The clip grown to `size` bytes by a `free` atom before its `moov`, in 1 MiB
    chunks made as they are sent."""
    _, moov_at, _ = top_level_atoms(clip)[-1]
    pad = size - len(clip)

    def chunks() -> Iterator[bytes]:
        yield clip[:moov_at] + pad.to_bytes(4, "big") + b"free"
        left, zeros = pad - 8, bytes(MIB)
        while left > 0:
            yield zeros[: min(MIB, left)]
            left -= MIB
        yield clip[moov_at:]

    return size, chunks()


class Sampler(threading.Thread):
    def __init__(self, pid: int, tmp: Path) -> None:
        super().__init__(daemon=True)
        self.pid, self.tmp = pid, tmp
        self.peak_rss_mb = 0.0
        self.peak_tmp_bytes = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, _rss_mb(self.pid))
            self.peak_tmp_bytes = max(self.peak_tmp_bytes, _tmp_bytes(self.tmp))
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def measure(size: int, *, port: int, s3: bool, encrypted: bool, folder: Path) -> dict[str, Any]:
    moto = servers.MotoServer().start() if s3 else None
    tmp = folder / "api-tmp"
    tmp.mkdir()
    env = {
        **os.environ,
        "IMAGEBLUR_PORT": str(port),
        "IMAGEBLUR_DATA_DIR": str(folder / "data"),
        "IMAGEBLUR_VIDEO": "true",
        "IMAGEBLUR_API_TOKEN": TOKEN,
        "IMAGEBLUR_MAX_VIDEO_BYTES": str(size + MIB),
        "IMAGEBLUR_LOG_FORMAT": "json",
        "TMPDIR": str(tmp),
    }
    if encrypted:
        env["IMAGEBLUR_ORIGINALS_KEY"] = "A" * 43 + "="  # 32 bytes, base64
    if moto is not None:
        env |= moto.env() | {"IMAGEBLUR_STORE": "s3", "IMAGEBLUR_S3_CREATE_BUCKETS": "true"}
    clip = make_clip(folder / "clip.mp4").read_bytes()
    cmd = [sys.executable, "-m", "imageblur.entrypoints.cli", "api"]
    with (folder / "api.log").open("wb") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200,
            timeout_s=120,
            what="imageblur api",
            retry_on=(httpx.TransportError,),
        )
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "video/mp4"}
        with httpx.Client(base_url=url, timeout=600, headers=headers) as client:
            return _upload(client, server.pid, tmp, *padded_body(clip, size))
    finally:
        server.terminate()
        server.wait(timeout=60)
        if moto is not None:
            moto.stop()


def _upload(
    client: httpx.Client, pid: int, tmp: Path, size: int, body: Iterator[bytes]
) -> dict[str, Any]:
    before = _rss_mb(pid)
    sampler = Sampler(pid, tmp)
    sampler.start()
    start = time.perf_counter()
    answer = client.post("/video?filename=big.mp4", content=body)
    seconds = time.perf_counter() - start
    sampler.stop()
    if answer.status_code != 202:
        raise SystemExit(f"upload refused: {answer.status_code} {answer.text}")
    record = answer.json()
    client.delete(f"/video/{record['id']}")
    return {
        "upload_bytes": size,
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(sampler.peak_rss_mb, 1),
        "rss_growth_mb": round(sampler.peak_rss_mb - before, 1),
        "tmpdir_peak_bytes": sampler.peak_tmp_bytes,
        "seconds": round(seconds, 2),
        "mb_per_s": round(size / 1e6 / seconds, 1),
        "frames": record["frames"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="MiB uploaded")
    parser.add_argument("--s3", action="store_true", help="on a moto S3 server, not a folder")
    parser.add_argument("--encrypted", action="store_true", help="originals sealed")
    parser.add_argument("--port", type=int, default=0, help="the API's (default: a free one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-video-upload-") as folder:
        figures = measure(
            args.size_mb * MIB,
            port=args.port or free_port(),
            s3=args.s3,
            encrypted=args.encrypted,
            folder=Path(folder),
        )
    result = {
        "commit": measured_commit(),
        "machine": f"{platform.node()} {os.cpu_count()} CPUs",
        "load": os.getloadavg(),
        "store": "s3 (moto)" if args.s3 else "local",
        "encrypted": args.encrypted,
        **figures,
    }
    if args.json:
        print(json.dumps(result))
        return
    for name, value in result.items():
        print(f"{name:>18}: {value}")


if __name__ == "__main__":
    main()
