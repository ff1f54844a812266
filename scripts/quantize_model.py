#!/usr/bin/env python3
"""Maintainer's step, not part of install: make the int8 CenterFace model the package
ships (src/imageblur/models/centerface-int8.xml and .bin) from the verified ONNX file.

    make int8-model        # in a throwaway virtual environment with NNCF (Apache-2.0)
    python scripts/quantize_model.py [OUT_DIR]

NNCF's post-training quantization (`nncf.quantize`, the `performance` preset: symmetric
int8 weights and activations, fast bias correction) on the OpenVINO model of the graph
the runtimes take (`centerface.prepared_graph`), constant-folded first: without that the
depthwise convolutions' weights stay behind a Reshape, keep a fake-quantize node and run
in bfloat16, and int8 then saves a tenth of the time instead of a third.

Calibration: the tiles the detector's own pyramid cuts from CALIBRATION_IMAGES images
made here from the two example pictures (`../shared/example-pictures`, shipped with the
project): random crops, scales, mirror images and brightness changes of each, and
generated "crowds": the two faces pasted 3-30 times at 8-300 px on smooth random
backgrounds with noise. No evaluation picture is used. Everything is seeded, so the same
versions on the same machine give the same bytes (checked: see docs/detection.md, Int8);
the package checks the files by the hashes pinned in `centerface.py`, so a model made
elsewhere differs only in that its hashes must be pinned anew.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from imageblur.detection import centerface
from imageblur.detection.pyramid import PyramidDetector

ROOT = Path(__file__).resolve().parent.parent
PICTURES = ROOT.parent / "shared" / "example-pictures"
OUT_DIR = ROOT / "src" / "imageblur" / "models"
SEED = 23
CALIBRATION_IMAGES = 60
# Each example picture's face (x0, y0, x1, y1), as the float detector finds it.
FACES = {"bill-gates.jpg": (718, 294, 1442, 1223), "linus-trovalds.jpg": (163, 14, 200, 63)}

Image8 = np.ndarray[Any, np.dtype[np.uint8]]


def main() -> int:
    import nncf  # build time only: the package never imports it
    import openvino as ov
    from openvino import passes

    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT_DIR
    model = ov.Core().read_model(centerface.prepared_graph(centerface.default_model_path()), b"")
    folding = passes.Manager()
    folding.register_pass(passes.ConstantFolding())
    folding.run_passes(model)
    tiles = calibration_tiles()
    print(f"calibrating on {len(tiles)} tiles of {CALIBRATION_IMAGES} generated images")
    quantized = nncf.quantize(
        model,
        nncf.Dataset(tiles),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(tiles),
        fast_bias_correction=True,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / "centerface-int8.xml"
    ov.save_model(quantized, xml, compress_to_fp16=False)
    made = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (xml, xml.with_suffix(".bin"))]
    print(f"{made[0]}  {xml}\n{made[1]}  {xml.with_suffix('.bin')}")
    if made == [centerface.INT8_XML_SHA256, centerface.INT8_BIN_SHA256]:
        print("the same bytes as the model the package pins")
    else:
        print("not the model the package pins: pin these hashes in detection/centerface.py")
    return 0


def calibration_tiles() -> list[np.ndarray[Any, np.dtype[np.float32]]]:
    """The network's inputs (float NCHW, zero-padded to 32) for every tile the pyramid
    cuts from the calibration images, in order."""
    recorder = _Recorder()
    detector = PyramidDetector(
        centerface.CenterFaceModel(recorder), threshold=0.5, pyramid=centerface.PYRAMID
    )
    for image in calibration_images(CALIBRATION_IMAGES, SEED):
        detector.detect(image)
    return recorder.tiles


def calibration_images(count: int, seed: int) -> list[Image8]:
    """Half augmented example pictures (alternating), half generated crowds."""
    rng = np.random.default_rng(seed)
    pictures = {
        name: np.asarray(Image.open(PICTURES / name).convert("RGB"), np.uint8) for name in FACES
    }
    names = list(FACES)
    images = []
    for index in range(count):
        if index % 2:
            images.append(_crowd(rng, pictures))
        else:
            images.append(_augmented(rng, pictures[names[index // 2 % len(names)]]))
    return images


def _augmented(rng: np.random.Generator, image: Image8) -> Image8:
    """A random crop of 35-100% of each side, scaled to a longer side of 400-1400 px."""
    height, width = image.shape[:2]
    crop_w = max(32, int(width * rng.uniform(0.35, 1.0)))
    crop_h = max(32, int(height * rng.uniform(0.35, 1.0)))
    x0 = int(rng.integers(0, width - crop_w + 1))
    y0 = int(rng.integers(0, height - crop_h + 1))
    crop = image[y0 : y0 + crop_h, x0 : x0 + crop_w]
    scale = rng.uniform(400, 1400) / max(crop_w, crop_h)
    size = (max(32, round(crop_w * scale)), max(32, round(crop_h * scale)))
    return _jitter(rng, _resized(crop, size, scale))


def _crowd(rng: np.random.Generator, pictures: dict[str, Image8]) -> Image8:
    """3-30 heads (with some shoulders and background) of 8-300 px on a generated
    background."""
    width, height = int(rng.integers(640, 1400)), int(rng.integers(480, 1000))
    canvas = _background(rng, width, height)
    names = list(FACES)
    for _ in range(int(rng.integers(3, 30))):
        name = names[int(rng.integers(0, len(names)))]
        image = pictures[name]
        x0, y0, x1, y1 = FACES[name]
        pad = rng.uniform(0.2, 0.8)
        face_w, face_h = x1 - x0, y1 - y0
        head = image[
            max(0, int(y0 - pad * face_h)) : min(image.shape[0], int(y1 + 1.5 * pad * face_h)),
            max(0, int(x0 - pad * face_w)) : min(image.shape[1], int(x1 + pad * face_w)),
        ]
        face_px = float(np.exp(rng.uniform(np.log(8), np.log(min(300, height / 2)))))
        scale = face_px / face_h
        size = (max(4, round(head.shape[1] * scale)), max(4, round(head.shape[0] * scale)))
        if size[0] >= width or size[1] >= height:
            continue
        pasted = _jitter(rng, _resized(head, size, scale))
        px = int(rng.integers(0, width - size[0]))
        py = int(rng.integers(0, height - size[1]))
        canvas[py : py + size[1], px : px + size[0]] = pasted
    return canvas


def _background(rng: np.random.Generator, width: int, height: int) -> Image8:
    """Smooth colour fields (a few random colours interpolated) with pixel noise."""
    coarse = rng.uniform(0, 255, (int(rng.integers(2, 12)), int(rng.integers(2, 12)), 3))
    smooth = cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, rng.uniform(2, 25), (height, width, 3)).astype(np.float32)
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def _jitter(rng: np.random.Generator, image: Image8) -> Image8:
    """Brightness and contrast changed (gain 0.6-1.4, offset +-30), mirrored half the time."""
    gain, offset = rng.uniform(0.6, 1.4), rng.uniform(-30, 30)
    out = np.clip(image.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out[:, ::-1]) if rng.random() < 0.5 else out


def _resized(image: Image8, size: tuple[int, int], scale: float) -> Image8:
    inter = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, size, interpolation=inter), np.uint8)


class _Recorder:
    """A session that keeps each padded tile as the network's input and finds nothing:
    the pyramid's tiles without running the network."""

    def __init__(self) -> None:
        self.tiles: list[np.ndarray[Any, np.dtype[np.float32]]] = []

    def run_tile(
        self, tile: Image8, height: int, width: int
    ) -> list[np.ndarray[Any, np.dtype[np.float32]]]:
        blob = np.zeros((1, 3, height, width), np.float32)
        blob[0, :, : tile.shape[0], : tile.shape[1]] = tile.transpose(2, 0, 1)
        self.tiles.append(blob)
        cells = (height // 4, width // 4)
        return [np.zeros((1, channels, *cells), np.float32) for channels in (1, 2, 2)]


if __name__ == "__main__":
    raise SystemExit(main())
