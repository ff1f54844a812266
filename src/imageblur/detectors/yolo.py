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

from collections.abc import Mapping
from typing import Any

import numpy as np

from imageblur.detection import PyramidConfig
from imageblur.detectors import KINDS
from imageblur.detectors.model import ModelSource, check_image_input, fixed_input_size
from imageblur.detectors.pyramid import EMPTY, FloatArray, padded, round_up
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


class YoloModel:
    """A YOLO export as a `TileModel`."""

    def __init__(
        self, session: Any, source: ModelSource, classes: Mapping[int, RegionKind]
    ) -> None:
        self._session = session
        self._input = check_image_input(session, source, "yolo")
        self._fixed = fixed_input_size(session)
        self._classes = dict(classes)
        outputs = session.get_outputs()
        if len(outputs) != 1 or len(outputs[0].shape or []) != 3:
            raise source.refuse(
                "a yolo model returns one 1 x N x (5 + classes) or 1 x (4 + classes) x N "
                f"tensor; this one returns {[(o.name, o.shape) for o in outputs]}"
            )
        self._output = outputs[0].name
        try:
            self.run(np.zeros((64, 64, 3), np.uint8), 1.0)
        except Exception as exc:  # onnxruntime or our decode: either way, not this family
            raise source.refuse(f"does not work as a yolo model: {exc}") from exc

    @property
    def input_px(self) -> int | None:
        return min(self._fixed) if self._fixed else None

    def run(self, tile: RGBImage, floor: float) -> FloatArray:
        h, w = tile.shape[:2]
        ph, pw = self._fixed or (round_up(h, 32), round_up(w, 32))
        blob = padded(tile.astype(np.float32) / 255.0, ph, pw, fill=_PAD)
        (raw,) = self._session.run([self._output], {self._input: blob})
        raw = raw[0]
        v8 = raw.shape[0] < raw.shape[1]  # (4 + classes) x N: YOLOv8
        return decode(raw.T if v8 else raw, self._classes, floor, objectness=not v8)
