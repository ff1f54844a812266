"""Any family over the image pyramid, with the tiling and grouping of
`imageblur.detection`: a family only says how one tile goes through its network."""

from __future__ import annotations

from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from imageblur.cancel import checkpoint
from imageblur.detection import (
    PyramidConfig,
    group,
    pyramid_scales,
    tiles,
    uncertain_floor_of,
)
from imageblur.detectors import KINDS
from imageblur.domain import Face
from imageblur.ports import RGBImage

FloatArray = npt.NDArray[np.float32]
# The kind column of candidate rows holds an index into KINDS.
EMPTY = np.zeros((0, 6), np.float32)


class TileModel(Protocol):
    """One network of a family. `run` returns rows x0 y0 x1 y1 score kind (an index of
    KINDS), in tile pixels, for every candidate scoring at least `floor`."""

    @property
    def input_px(self) -> int | None:
        """The largest tile the network takes (a fixed-size export), None for any."""

    def run(self, tile: RGBImage, floor: float) -> FloatArray: ...


class PyramidDetector:
    """The `FaceDetector` port over a `TileModel`: scales, tiles, size bands, grouping."""

    def __init__(
        self,
        model: TileModel,
        *,
        threshold: float,
        pyramid: PyramidConfig,
        uncertain_floor: float | None = None,
    ) -> None:
        """`uncertain_floor` as CenterFace's (None: no uncertain candidates listed)."""
        for value in (threshold, uncertain_floor):
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"thresholds must be in (0, 1), got {value}")
        self.model = model
        self.threshold = threshold
        if model.input_px is not None and pyramid.tile_px > model.input_px:
            pyramid = _replace_tile(pyramid, model.input_px)
        self.pyramid = pyramid
        self.uncertain_floor = uncertain_floor_of(uncertain_floor, threshold, pyramid)

    def detect(self, image: RGBImage) -> list[Face]:
        return self.detect_regions(image)[0]

    def detect_regions(self, image: RGBImage) -> tuple[list[Face], list[Face]]:
        """(hidden, uncertain), as CenterFace's, at one threshold for every size."""
        height, width = image.shape[:2]
        scales = pyramid_scales(width, height, self.pyramid)
        found: list[FloatArray] = []
        for index, scale in enumerate(scales):
            checkpoint()  # a job whose lease is lost stops here, between passes
            dets = self._at_scale(image, scale)
            last = index == len(scales) - 1
            keep = size_band(dets, scale, self.pyramid, first=index == 0, last=last)
            passes = np.full(int(keep.sum()), index, np.float32)
            found.append(np.column_stack([dets[keep][:, :5], passes, dets[keep][:, 5]]))
        candidates = np.concatenate(found).astype(np.float32)
        floor = self.threshold if self.uncertain_floor is None else self.uncertain_floor
        faces = faces_of(candidates, self.pyramid.group_iou, floor, width, height)
        hidden = [f for f in faces if f.score >= self.threshold]
        return hidden, [f for f in faces if f.score < self.threshold]

    def _at_scale(self, image: RGBImage, scale: float) -> FloatArray:
        height, width = image.shape[:2]
        if scale == 1.0:
            scaled = image
        else:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            inter = cv2.INTER_LINEAR if scale > 1.0 else cv2.INTER_AREA
            scaled = np.asarray(cv2.resize(image, size, interpolation=inter))
        sx, sy = width / scaled.shape[1], height / scaled.shape[0]
        floor = min(self.threshold, self.pyramid.floor_score)
        out: list[FloatArray] = [EMPTY]
        overlap = int(self.pyramid.max_face_px)
        windows = tiles(scaled.shape[1], scaled.shape[0], self.pyramid.tile_px, overlap)
        for x0, y0, x1, y1 in windows:
            dets = self.model.run(np.ascontiguousarray(scaled[y0:y1, x0:x1]), floor)
            dets[:, [0, 2]] = (dets[:, [0, 2]] + x0) * sx
            dets[:, [1, 3]] = (dets[:, [1, 3]] + y0) * sy
            out.append(dets)
        return np.concatenate(out)


def faces_of(
    candidates: FloatArray, iou: float, threshold: float, width: int, height: int
) -> list[Face]:
    """Group candidates (x0 y0 x1 y1 score pass kind) kind by kind; keep those scoring
    at least `threshold`, clipped to the image."""
    out: list[Face] = []
    for index, kind in enumerate(KINDS):
        grouped = group(candidates[candidates[:, 6] == index][:, :6], iou)
        for d in grouped[grouped[:, 4] >= threshold]:
            out.append(
                Face(
                    x0=float(max(0.0, d[0])),
                    y0=float(max(0.0, d[1])),
                    x1=float(min(float(width), d[2])),
                    y1=float(min(float(height), d[3])),
                    score=float(d[4]),
                    kind=kind,
                )
            )
    return out


def size_band(
    dets: FloatArray, scale: float, cfg: PyramidConfig, *, first: bool, last: bool
) -> npt.NDArray[np.bool_]:
    """Detections whose size (in scaled pixels) this pass sees well, as CenterFace's."""
    w = np.maximum(dets[:, 2] - dets[:, 0], 0)
    h = np.maximum(dets[:, 3] - dets[:, 1], 0)
    size = np.sqrt(w * h) * scale
    keep = np.ones(len(dets), bool)
    if not first:
        keep &= size >= cfg.min_face_px
    if not last:
        keep &= size <= cfg.max_face_px
    return keep


def padded(
    tile: npt.NDArray[np.floating[Any]], height: int, width: int, fill: float = 0.0
) -> FloatArray:
    """The tile in the top-left corner of a 1 x 3 x height x width float blob: no
    resizing, so boxes need no rescaling."""
    blob = np.full((1, 3, height, width), fill, np.float32)
    h, w = tile.shape[:2]
    blob[0, :, :h, :w] = tile.transpose(2, 0, 1)
    return blob


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _replace_tile(cfg: PyramidConfig, tile_px: int) -> PyramidConfig:
    from dataclasses import replace

    # Tiles overlap by max_face_px: keep a third of a small fixed input for new area.
    return replace(cfg, tile_px=tile_px, max_face_px=min(cfg.max_face_px, tile_px * 2 / 3))
