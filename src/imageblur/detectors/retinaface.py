"""RetinaFace (biubug6/Pytorch_Retinaface export; MobileNet-0.25 or ResNet-50 backbone).

The export takes a BGR image minus the means (104, 117, 123) and returns, per prior box,
`loc` (offsets, variances 0.1 and 0.2), `conf` (background, face; softmaxed) and
optionally `landmarks`. Priors: strides 8, 16, 32 with sizes (16, 32), (64, 128),
(256, 512), row by row, both sizes per cell. Both backbones share this head, so the
same code runs both.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from imageblur.detection import PyramidConfig
from imageblur.detectors.model import ModelSource, check_image_input, fixed_input_size
from imageblur.detectors.pyramid import EMPTY, FloatArray, padded, round_up
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


class RetinaFaceModel:
    """A RetinaFace export as a `TileModel`."""

    def __init__(self, session: Any, source: ModelSource) -> None:
        self._session = session
        self._input = check_image_input(session, source, "retinaface")
        self._fixed = fixed_input_size(session)
        outputs = session.get_outputs()
        lasts = [o.shape[-1] if o.shape else None for o in outputs]
        if len(outputs) not in (2, 3) or lasts[:2] != [4, 2]:
            raise source.refuse(
                "a retinaface model returns loc (.. x 4), conf (.. x 2) and optionally "
                f"landmarks (.. x 10); this one returns {[(o.name, o.shape) for o in outputs]}"
            )
        self._outputs = [o.name for o in outputs[:2]]
        self._priors: dict[tuple[int, int], FloatArray] = {}
        try:
            self.run(np.zeros((64, 64, 3), np.uint8), 1.0)  # shapes fit the priors
        except Exception as exc:  # onnxruntime or our decode: either way, not this family
            raise source.refuse(f"does not work as a retinaface model: {exc}") from exc

    @property
    def input_px(self) -> int | None:
        return min(self._fixed) if self._fixed else None

    def run(self, tile: RGBImage, floor: float) -> FloatArray:
        h, w = tile.shape[:2]
        ph, pw = self._fixed or (round_up(h, 32), round_up(w, 32))
        blob = padded(tile[:, :, ::-1].astype(np.float32) - BGR_MEAN, ph, pw)
        loc, conf = self._session.run(self._outputs, {self._input: blob})
        prior = self._priors.get((ph, pw))
        if prior is None:
            prior = self._priors.setdefault((ph, pw), priors(ph, pw))
        return decode(loc.reshape(-1, 4), conf.reshape(-1, 2), prior, floor)
