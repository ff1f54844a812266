"""A server process with the holding copy-through video pipeline of tests/video_copy.py
(tests/e2e/video_server.py), for the tests that act while a video job runs; the
others run `imageblur serve` itself (`support.run_server`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support import Server, free_port, serving

TOKEN = "video-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_ports() -> Iterator[int]:
    while True:
        yield free_port()


# Ports the kernel hands out, as for every other server of the suite: two runs of the
# suite on one machine never collide.
PORTS = _free_ports()
TESTS = Path(__file__).resolve().parent


@contextmanager
def video_server(data_dir: Path, port: int | None = None, **env: str) -> Iterator[Server]:
    """tests/e2e/video_server.py in a process of its own, ready when /healthz answers;
    on `port`, else a free one."""
    port = port or next(PORTS)
    log_path = data_dir.parent / f"{data_dir.name}-video.log"
    spool = data_dir.parent / "spool"  # the server's TMPDIR: uploads never go there
    spool.mkdir()
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "IMAGEBLUR_PORT": str(port),
        "IMAGEBLUR_DATA_DIR": str(data_dir),
        "IMAGEBLUR_LOG_FORMAT": "json",
        "IMAGEBLUR_DETECTOR_THREADS": "1",
        "IMAGEBLUR_VIDEO": "true",
        "IMAGEBLUR_API_TOKEN": TOKEN,
        "IMAGEBLUR_MAX_VIDEO_BYTES": "1000000",
        "TMPDIR": str(spool),
        **env,
    }
    argv = [sys.executable, "-m", "e2e.video_server"]
    url = f"http://127.0.0.1:{port}"
    health = f"{url}/healthz"
    with serving(argv, full_env, log_path, health_url=health, what="the video server") as process:
        yield Server(url, data_dir, process, log_path)
