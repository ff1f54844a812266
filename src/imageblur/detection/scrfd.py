"""SCRFD (InsightFace's export): strides 8, 16, 32, two anchors per cell.

The export takes RGB scaled as (x - 127.5) / 128 and returns, in this order, the scores
of each stride (sigmoid), the box distances of each stride (left, top, right, bottom, in
units of the stride, from the anchor centre), and with keypoints the 5 landmarks of each
stride: 6 or 9 outputs. Anchor centres are the cell corners (x * stride, y * stride),
each listed twice (two anchors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from imageblur.detection.base import BroughtModel, DetectorChoice, brought_detector
from imageblur.detection.pyramid import EMPTY, FloatArray, PyramidConfig, PyramidDetector, padded
from imageblur.detection.runtime import ModelSource, Runtime
from imageblur.ports import RGBImage

STRIDES = (8, 16, 32)
ANCHORS = 2
PYRAMID = PyramidConfig(min_face_px=16.0, max_face_px=256.0, tile_px=1280)


def anchor_centres(height: int, width: int, stride: int) -> FloatArray:
    """(x, y) of every anchor of a stride, row by row, each cell's anchors together."""
    rows, cols = -(-height // stride), -(-width // stride)
    ys, xs = np.mgrid[:rows, :cols]
    centres = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * stride
    return np.repeat(centres, ANCHORS, axis=0)


def decode(
    scores: list[FloatArray], distances: list[FloatArray], height: int, width: int, floor: float
) -> FloatArray:
    """Per-stride scores (A) and distances (A x 4) -> x0 y0 x1 y1 score kind rows."""
    out = [EMPTY]
    for stride, score, dist in zip(STRIDES, scores, distances, strict=True):
        centres = anchor_centres(height, width, stride)
        if len(score) != len(centres) or len(dist) != len(centres):
            raise ValueError(f"{len(score)} scores for {len(centres)} anchors at stride {stride}")
        keep = score >= floor
        c, d, s = centres[keep], dist[keep] * stride, score[keep]
        boxes = np.column_stack(
            [c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]]
        )
        out.append(np.column_stack([boxes, s, np.zeros(len(s))]).astype(np.float32))
    return np.concatenate(out)


class ScrfdModel(BroughtModel):
    """An SCRFD export as a `TileModel`."""

    family = "scrfd"

    def check_outputs(self, outputs: Sequence[Any], source: ModelSource) -> list[str]:
        if len(outputs) not in (6, 9):
            raise source.refuse(
                "an scrfd model returns scores and boxes (and keypoints) for strides 8, "
                f"16 and 32: 6 or 9 outputs; this one returns {len(outputs)}"
            )
        return [o.name for o in outputs[:6]]

    def run(self, tile: RGBImage, floor: float) -> FloatArray:
        ph, pw = self.blob_size(tile)
        blob = padded((tile.astype(np.float32) - 127.5) / 128.0, ph, pw)
        results = self._session.run(self._outputs, {self._input: blob})
        scores = [r.reshape(-1) for r in results[:3]]
        distances = [r.reshape(-1, 4) for r in results[3:6]]
        return decode(scores, distances, ph, pw, floor)


def detector(
    choice: DetectorChoice, *, threads: int, runtime: Runtime, uncertain_floor: float | None
) -> PyramidDetector:
    """The family's detector (on onnxruntime, whatever `runtime`)."""
    return brought_detector(
        choice, ScrfdModel, PYRAMID, threads=threads, uncertain_floor=uncertain_floor
    )
