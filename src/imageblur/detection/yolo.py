"""YOLO exports (v5 and v8 style, without NMS in the graph), for faces and licence plates.

The export takes RGB / 255 and returns one tensor of candidates, each a box (centre x,
centre y, width, height, in input pixels) followed, YOLOv5-style, by an objectness and
the class scores (1 x N x (5 + classes)), or, YOLOv8-style, by the class scores alone and
transposed (1 x (4 + classes) x N). The layout is told apart by which axis is the long
one (N is thousands). A class map says what each class index is (`face`, `plate`);
classes not in it are ignored. Exports that add landmarks (YOLOv5-face) or run NMS
inside the graph have other layouts and are not supported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from imageblur.detection.base import BroughtModel, DetectorChoice, brought_detector
from imageblur.detection.families import KINDS
from imageblur.detection.pyramid import EMPTY, FloatArray, PyramidConfig, PyramidDetector, padded
from imageblur.detection.runtime import ModelSource, Runtime
from imageblur.domain import RegionKind
from imageblur.ports import RGBImage

PYRAMID = PyramidConfig(min_face_px=12.0, max_face_px=256.0, tile_px=1280)
_PAD = 114.0 / 255.0  # the grey Ultralytics letterboxes with


def decode(
    raw: FloatArray, classes: Mapping[int, RegionKind], floor: float, *, objectness: bool
) -> FloatArray:
    """Candidates (N x (4 [+1] + classes)) -> x0 y0 x1 y1 score kind rows, one row per
    mapped class scoring at least `floor` (a box may be both a face and a plate)."""
    first = 5 if objectness else 4
    obj = raw[:, 4] if objectness else np.ones(len(raw), np.float32)
    out = [EMPTY]
    for index, kind in classes.items():
        if first + index >= raw.shape[1]:
            raise ValueError(f"class {index} is not among the model's {raw.shape[1] - first}")
        score = obj * raw[:, first + index]
        rows = raw[score >= floor]
        s = score[score >= floor]
        cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        kind_col = np.full(len(s), KINDS.index(kind), np.float32)
        boxes = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, s, kind_col]
        out.append(np.stack(boxes, axis=1).astype(np.float32))
    return np.concatenate(out)


class YoloModel(BroughtModel):
    """A YOLO export as a `TileModel`."""

    family = "yolo"

    def check_outputs(self, outputs: Sequence[Any], source: ModelSource) -> list[str]:
        if len(outputs) != 1 or len(outputs[0].shape or []) != 3:
            raise source.refuse(
                "a yolo model returns one 1 x N x (5 + classes) or 1 x (4 + classes) x N "
                f"tensor; this one returns {[(o.name, o.shape) for o in outputs]}"
            )
        return [outputs[0].name]

    def run(self, tile: RGBImage, floor: float) -> FloatArray:
        ph, pw = self.blob_size(tile)
        blob = padded(tile.astype(np.float32) / 255.0, ph, pw, fill=_PAD)
        (raw,) = self._session.run(self._outputs, {self._input: blob})
        raw = raw[0]
        v8 = raw.shape[0] < raw.shape[1]  # (4 + classes) x N: YOLOv8
        return decode(raw.T if v8 else raw, self._classes, floor, objectness=not v8)


def detector(
    choice: DetectorChoice, *, threads: int, runtime: Runtime, uncertain_floor: float | None
) -> PyramidDetector:
    """The family's detector (on onnxruntime, whatever `runtime`)."""
    return brought_detector(
        choice, YoloModel, PYRAMID, threads=threads, uncertain_floor=uncertain_floor
    )
