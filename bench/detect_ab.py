#!/usr/bin/env python3
"""Detection speed of one checkout, for A/B runs of two versions of the detection code.

    PYTHONPATH=CHECKOUT/src python bench/detect_ab.py [--photos N]

Builds the default detector as `bootstrap` does, decodes the first N real photos of
../shared/wider-face-dev/images (sorted by path) up front, then detects on all of them
three times; prints one JSON line with the best pass's wall and CPU milliseconds per
photo and the package it imported. Alternate runs of the two checkouts (each with its
own model file in src/imageblur/models/) and compare the medians: the 2026-12-07 A/B of
the detection package is in docs/detection.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

import imageblur
from imageblur import bootstrap
from imageblur.config import Settings

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "wider-face-dev" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=40, help="the first N real photos")
    n = parser.parse_args().photos
    paths = sorted(PHOTOS.rglob("*.jpg"))[:n]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    detector = bootstrap.build_detector(Settings())
    detector.detect(images[0])  # the first inference compiles the model's kernels
    walls, cpus = [], []
    for _ in range(3):
        wall, cpu = time.perf_counter(), time.process_time()
        for image in images:
            detector.detect(image)
        walls.append((time.perf_counter() - wall) / len(images))
        cpus.append((time.process_time() - cpu) / len(images))
    report = {"package": imageblur.__file__, "photos": len(images)}
    print(json.dumps(report | {"wall_ms": min(walls) * 1e3, "cpu_ms": min(cpus) * 1e3}))


if __name__ == "__main__":
    main()
