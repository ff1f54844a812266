"""A render whose output cannot be written fails as `encode_failed`, not as a corrupt
input, and leaves nothing behind.

The failure is real: the whole pipeline (`blur_video`, the real detector and encoders)
runs in a child process whose file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored) makes
the kernel refuse the result's bytes past a few kilobytes (`EFBIG`), as a full disk
refuses them with `ENOSPC`. The child, not this process: the limit holds for every file
a process writes, this test run's own logs included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clips import Clip

_CHILD = """
import json, resource, signal, sys
from pathlib import Path
from imageblur.bootstrap import build_detector, video_options
from imageblur.config import load_settings
from imageblur.video.errors import BrokenVideo
from imageblur.video.pipeline import blur_video

source, target, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
settings = load_settings()
detector = build_detector(settings)  # its model read before the limit, as a worker's
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    blur_video(source, target, detector, video_options(settings))
    print(json.dumps({"code": None}))
except BrokenVideo as exc:
    print(json.dumps({"code": exc.code, "message": exc.message}))
"""


def _noise(index: int) -> np.ndarray:
    """Frames that do not compress: the result passes any small limit mid-stream."""
    return np.random.default_rng(index).integers(0, 256, (240, 320, 3), np.uint8)


@pytest.mark.parametrize(
    "limit",
    [16 * 1024, 400 * 1024],  # while the frames are muxed / by the end, the trailer too
)
def test_an_output_the_disk_refuses_fails_as_encode_failed(tmp_path: Path, limit: int) -> None:
    source = Clip(width=320, height=240, frames=10, picture=_noise).write(tmp_path / "in.mp4")
    folder = tmp_path / "out"
    folder.mkdir()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "IMAGEBLUR_DETECTOR_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(source), str(folder / "out.mp4"), str(limit)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    failure = json.loads(child.stdout.strip().splitlines()[-1])
    assert failure["code"] == "encode_failed", failure
    assert failure["message"].startswith("the anonymized video could not be written: ")
    assert "File too large" in failure["message"]
    assert list(folder.iterdir()) == []  # no result, no partial file
