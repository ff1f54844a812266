"""RetinaFace (biubug6/Pytorch_Retinaface export; MobileNet-0.25 or ResNet-50 backbone).

The export takes a BGR image minus the means (104, 117, 123) and returns, per prior box,
`loc` (offsets, variances 0.1 and 0.2), `conf` (background, face; softmaxed) and
optionally `landmarks`. Priors: strides 8, 16, 32 with sizes (16, 32), (64, 128),
(256, 512), row by row, both sizes per cell. Both backbones share this head, so the
same code runs both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from imageblur.detection.base import BroughtModel, DetectorChoice, brought_detector
from imageblur.detection.pyramid import EMPTY, FloatArray, PyramidConfig, PyramidDetector, padded
from imageblur.detection.runtime import ModelSource, Runtime
from imageblur.domain import RegionKind
from imageblur.ports import RGBImage

STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32)
# Faces 16..256 px are found well at one scale; the pyramid halves the image for larger.
PYRAMID = PyramidConfig(min_face_px=16.0, max_face_px=256.0, tile_px=1280)


def priors(height: int, width: int) -> FloatArray:
    """Prior boxes (cx, cy, w, h) in pixels for an input of height x width."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        ys, xs = np.mgrid[:rows, :cols]
        centres = np.stack([(xs.ravel() + 0.5) * step, (ys.ravel() + 0.5) * step], axis=1)
        for_cell = [
            np.column_stack([centres, np.full((len(centres), 2), s, np.float32)]) for s in sizes
        ]
        out.append(np.stack(for_cell, axis=1).reshape(-1, 4))  # both sizes of a cell together
    return np.concatenate(out).astype(np.float32)


def decode(loc: FloatArray, conf: FloatArray, prior: FloatArray, floor: float) -> FloatArray:
    """loc (A x 4), conf (A x 2), priors (A x 4, pixels) -> x0 y0 x1 y1 score kind rows."""
    if len(loc) != len(prior) or len(conf) != len(prior):
        raise ValueError(f"{len(loc)} box offsets for {len(prior)} prior boxes")
    score = conf[:, 1]
    keep = score >= floor
    loc, score, prior = loc[keep], score[keep], prior[keep]
    if not len(score):
        return EMPTY.copy()
    cx = prior[:, 0] + loc[:, 0] * VARIANCES[0] * prior[:, 2]
    cy = prior[:, 1] + loc[:, 1] * VARIANCES[0] * prior[:, 3]
    w = prior[:, 2] * np.exp(loc[:, 2] * VARIANCES[1])
    h = prior[:, 3] * np.exp(loc[:, 3] * VARIANCES[1])
    kind = np.zeros(len(score), np.float32)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score, kind], axis=1).astype(
        np.float32
    )


class RetinaFaceModel(BroughtModel):
    """A RetinaFace export as a `TileModel`."""

    family = "retinaface"

    def __init__(self, session: Any, source: ModelSource, classes: dict[int, RegionKind]) -> None:
        self._priors: dict[tuple[int, int], FloatArray] = {}
        super().__init__(session, source, classes)

    def check_outputs(self, outputs: Sequence[Any], source: ModelSource) -> list[str]:
        lasts = [o.shape[-1] if o.shape else None for o in outputs]
        if len(outputs) not in (2, 3) or lasts[:2] != [4, 2]:
            raise source.refuse(
                "a retinaface model returns loc (.. x 4), conf (.. x 2) and optionally "
                f"landmarks (.. x 10); this one returns {[(o.name, o.shape) for o in outputs]}"
            )
        return [o.name for o in outputs[:2]]

    def run(self, tile: RGBImage, floor: float) -> FloatArray:
        ph, pw = self.blob_size(tile)
        blob = padded(tile[:, :, ::-1].astype(np.float32) - BGR_MEAN, ph, pw)
        loc, conf = self._session.run(self._outputs, {self._input: blob})
        prior = self._priors.get((ph, pw))
        if prior is None:
            prior = self._priors.setdefault((ph, pw), priors(ph, pw))
        return decode(loc.reshape(-1, 4), conf.reshape(-1, 2), prior, floor)


def detector(
    choice: DetectorChoice, *, threads: int, runtime: Runtime, uncertain_floor: float | None
) -> PyramidDetector:
    """The family's detector (on onnxruntime, whatever `runtime`)."""
    return brought_detector(
        choice, RetinaFaceModel, PYRAMID, threads=threads, uncertain_floor=uncertain_floor
    )
