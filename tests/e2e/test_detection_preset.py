"""The detection preset reaches what users run: `imageblur blur` and the service's worker
hide exactly the pixels the preset's thresholds and mask call for, and a reviewer sees
the regions the preset's detector finds (the `thorough` preset's mirrored pass included)."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import cv2
import httpx
import numpy as np
from PIL import Image

from imageblur.anonymizer import regions_of
from imageblur.blurring import full_mask, mask_outlines
from imageblur.bootstrap import build_detector
from imageblur.config import load_settings
from imageblur.domain import MaskGeometry
from support import LINUS, decode, run_server, wait_status


def blur_command(source: Path, out: Path, env: dict[str, str], flags: list[str]) -> None:
    command = [sys.executable, "-m", "imageblur.entrypoints.cli", "blur", *flags]
    result = subprocess.run(
        [*command, str(source), "-o", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "IMAGEBLUR_LOG_FORMAT": "json", **env},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


def lifted_png(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """The example picture as PNG (lossless), pure black lifted to (1, 1, 1): afterwards
    a black output pixel is one the solid fill wrote."""
    rgb = decode(LINUS.read_bytes()).copy()
    rgb[(rgb == 0).all(axis=2)] = 1
    path = tmp_path / "linus.png"
    Image.fromarray(rgb).save(path)
    return path, rgb


def expected_hidden(rgb: np.ndarray, **settings: object) -> np.ndarray:
    """The mask the given settings call for, computed in this process."""
    s = load_settings(**settings)
    faces = build_detector(s).detect(rgb)
    assert faces, "the example face must be found"
    height, width = rgb.shape[:2]
    geometry = MaskGeometry(scale=s.mask_scale, margin_px=s.mask_margin_px, shape=s.mask_shape)
    return full_mask(mask_outlines(faces, width, height, geometry), width, height)


def black(data: bytes) -> np.ndarray:
    return np.asarray((decode(data) == 0).all(axis=2))


def test_blur_command_uses_the_preset_and_explicit_overrides(tmp_path: Path) -> None:
    source, rgb = lifted_png(tmp_path)
    env = {"IMAGEBLUR_BLUR_MODE": "solid", "IMAGEBLUR_DETECTOR_THREADS": "2"}
    runs = {
        "privacy": ({}, {"detection_preset": "privacy"}),
        "tidy, mask x1.6": (
            {"IMAGEBLUR_DETECTION_PRESET": "tidy", "IMAGEBLUR_MASK_SCALE": "1.6"},
            {"detection_preset": "tidy", "mask_scale": 1.6},
        ),
        "thorough": (
            {"IMAGEBLUR_DETECTION_PRESET": "thorough"},
            {"detection_preset": "thorough"},
        ),
        # The flag wins over the environment, as every flag does.
        "--preset thorough": (
            {"IMAGEBLUR_DETECTION_PRESET": "tidy"},
            {"detection_preset": "thorough"},
        ),
    }
    hidden = {}
    for label, (extra_env, settings) in runs.items():
        out = tmp_path / label
        flags = label.split() if label.startswith("--") else []
        blur_command(source, out, {**env, **extra_env}, flags)
        hidden[label] = black((out / "linus.png").read_bytes())
        assert np.array_equal(hidden[label], expected_hidden(rgb, **settings)), label
    assert not np.array_equal(hidden["privacy"], hidden["tidy, mask x1.6"])


def test_the_service_hides_what_the_default_preset_calls_for(tmp_path: Path) -> None:
    source, rgb = lifted_png(tmp_path)
    env = {"IMAGEBLUR_BLUR_MODE": "solid"}
    with run_server(tmp_path / "data", env=env) as server, server.client() as client:
        files = {"image": ("linus.png", source.read_bytes(), "image/png")}
        image_id = client.post("/picture", files=files).json()["id"]
        assert server.wait_done(client, image_id)["status"] == "done"
        out = client.get(f"/picture/{image_id}/image")
        assert out.status_code == 200
    assert Image.open(io.BytesIO(out.content)).format == "PNG"
    assert np.array_equal(black(out.content), expected_hidden(rgb))


REGION_KEYS = ("x", "y", "width", "height", "score", "uncertain", "hidden")


def small_face(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """The example face shrunk to 26 px: there the thorough preset's scores are not the
    privacy preset's, and it lists a weak sighting of the mirrored pass as an uncertain
    candidate, where the privacy preset lists none."""
    rgb = decode(LINUS.read_bytes())
    rgb = np.ascontiguousarray(cv2.resize(rgb, (210, 118), interpolation=cv2.INTER_AREA))
    source = tmp_path / "small.png"
    Image.fromarray(rgb).save(source)
    return source, rgb


def preset_regions(rgb: np.ndarray, preset: str) -> list[tuple[object, ...]]:
    """The regions (hidden and uncertain) of a server running `preset`, computed here."""
    found = build_detector(load_settings(detection_preset=preset)).detect_regions(rgb)
    regions = regions_of(*found, rgb.shape[1], rgb.shape[0])
    return [tuple(r.to_dict()[k] for k in REGION_KEYS) for r in regions]


def reviewed_regions(
    tmp_path: Path, source: Path, uploads: list[dict[str, str]], server_preset: str
) -> list[list[tuple[object, ...]]]:
    """The regions a reviewer is shown of `source` uploaded once with each of `uploads`'
    options, on a server running `server_preset` that holds every picture for review."""
    tokens = {
        "IMAGEBLUR_API_TOKEN": "api-token-0123456789abcdef",
        "IMAGEBLUR_REVIEWER_TOKENS": "ann:reviewer-token-0123456789abcdef",
    }
    env = {
        "IMAGEBLUR_DETECTION_PRESET": server_preset,
        "IMAGEBLUR_REVIEW": "required",
        "IMAGEBLUR_ORIGINALS_KEY": base64.b64encode(bytes(range(32))).decode(),
        **tokens,
    }
    auth = {"Authorization": f"Bearer {tokens['IMAGEBLUR_API_TOKEN']}"}
    listed = []
    with (
        run_server(tmp_path / "data", env=env) as server,
        httpx.Client(base_url=server.url, timeout=30, headers=auth) as client,
    ):
        for fields in uploads:
            files = {"image": (source.name, source.read_bytes(), "image/png")}
            response = client.post("/picture", data=fields, files=files)
            assert response.status_code == 202, response.text
            image_id = response.json()["id"]
            assert wait_status(client, image_id, {"review", "failed"})["status"] == "review"
            regions = client.get(f"/picture/{image_id}/regions").json()["regions"]
            listed.append([tuple(r[k] for k in REGION_KEYS) for r in regions])
    return listed


def test_a_reviewer_sees_the_regions_of_the_thorough_preset(tmp_path: Path) -> None:
    # The worker's regions (hidden and uncertain, boxes and scores) are those of the
    # preset's detector, mirrored pass included; an upload's `preset=privacy` there
    # looks as a privacy server does (no mirrored pass, the int8 model).
    source, rgb = small_face(tmp_path)
    served, privacy = reviewed_regions(tmp_path, source, [{}, {"preset": "privacy"}], "thorough")
    wanted = {preset: preset_regions(rgb, preset) for preset in ("thorough", "privacy")}
    assert served == wanted["thorough"]
    assert [r[-2] for r in served] == [False, True]
    assert [r[-2] for r in wanted["privacy"]] == [False]
    assert served[0][4] > wanted["privacy"][0][4]
    assert privacy == wanted["privacy"]


def test_an_upload_asks_for_the_thorough_preset_on_any_server(tmp_path: Path) -> None:
    # On a privacy server, `preset=thorough` detects as a thorough server does: the
    # same boxes and scores, the mirrored pass's weak sighting listed as an uncertain
    # candidate for the reviewer. The next upload without it looks as before.
    source, rgb = small_face(tmp_path)
    uploads = [{"preset": "thorough"}, {}, {"preset": "thorough"}]
    thorough, plain, again = reviewed_regions(tmp_path, source, uploads, "privacy")
    assert thorough == preset_regions(rgb, "thorough")
    assert [r[-2] for r in thorough] == [False, True]
    assert plain == preset_regions(rgb, "privacy")
    assert again == thorough  # the thorough detector, loaded once, still serves it
