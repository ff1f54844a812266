"""The int8 CenterFace as a user runs it: `imageblur blur` with the default precision
(int8) hides the faces of both example pictures, as the float model does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import BILL, BILL_FACE, LINUS, LINUS_FACE, decode, detail


@pytest.mark.parametrize("precision", ["int8", "float"])
def test_the_example_faces_are_hidden_at_each_precision(tmp_path: Path, precision: str) -> None:
    env = {**os.environ, "IMAGEBLUR_LOG_FORMAT": "json"}
    env.pop("IMAGEBLUR_DETECTION_PRECISION", None)
    if precision == "float":
        env["IMAGEBLUR_DETECTION_PRECISION"] = "float"
    out = tmp_path / "out"
    command = [sys.executable, "-m", "imageblur.entrypoints.cli", "blur"]
    result = subprocess.run(
        [*command, str(BILL), str(LINUS), "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for picture, (x0, y0, x1, y1) in ((BILL, BILL_FACE), (LINUS, LINUS_FACE)):
        dx, dy = (x1 - x0) // 5, (y1 - y0) // 5
        face = (slice(y0 + dy, y1 - dy), slice(x0 + dx, x1 - dx))
        after = decode((out / picture.name).read_bytes())
        assert detail(after[face]) < 0.25 * detail(decode(picture.read_bytes())[face])
