"""A detector from chosen families and models; several run together as one.

Bootstrap maps the settings to `DetectorChoice`s; this module loads and checks them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from imageblur.detection import (
    MODEL_SHA256,
    CenterFaceDetector,
    ModelError,
    PyramidConfig,
    Runtime,
)
from imageblur.detectors import KINDS
from imageblur.detectors.model import ModelSource, load_session
from imageblur.detectors.pyramid import FloatArray, PyramidDetector, faces_of
from imageblur.domain import Face, RegionKind
from imageblur.ports import FaceDetector, RegionDetector, RGBImage

Family = Literal["centerface", "retinaface", "scrfd", "yolo"]


@dataclass(frozen=True, slots=True)
class DetectorChoice:
    """One detector as configured, with the names of the settings that chose its model
    (for messages)."""

    family: Family
    threshold: float
    model_path: Path | None = None
    model_sha256: str | None = None
    classes: dict[int, RegionKind] = field(default_factory=dict)
    small_threshold: float | None = None  # centerface only (`CenterFaceDetector`)
    large_threshold: float | None = None
    path_setting: str = "IMAGEBLUR_MODEL_PATH"
    sha256_setting: str = "IMAGEBLUR_MODEL_SHA256"

    def source(self) -> ModelSource:
        if self.model_path is None or not self.model_sha256:
            raise ModelError(
                f"a {self.family} detector needs {self.path_setting} and {self.sha256_setting}"
            )
        return ModelSource(
            self.model_path, self.model_sha256, self.path_setting, self.sha256_setting
        )


def make_detector(
    choices: Sequence[DetectorChoice],
    *,
    threads: int,
    runtime: Runtime = "openvino",
    uncertain_floor: float | None = None,
) -> RegionDetector:
    """Load every chosen detector (raising `ModelError` naming the setting at fault);
    one detector as itself, several as a `CombinedDetector`. `runtime` is CenterFace's;
    the other families run on onnxruntime. `uncertain_floor`: each detector lists the
    groups scoring at least this much below its own threshold (None: none)."""
    detectors = [
        _make_one(choice, threads=threads, runtime=runtime, floor=uncertain_floor)
        for choice in choices
    ]
    return detectors[0] if len(detectors) == 1 else CombinedDetector(detectors)


def _make_one(
    choice: DetectorChoice, *, threads: int, runtime: Runtime, floor: float | None
) -> RegionDetector:
    if choice.family == "centerface":
        if choice.model_sha256 and choice.model_sha256.lower() != MODEL_SHA256:
            raise ModelError(
                f"{choice.sha256_setting}: the centerface detector runs the shipped "
                f"model only ({MODEL_SHA256})"
            )
        return CenterFaceDetector(
            model_path=choice.model_path,
            threshold=choice.threshold,
            small_threshold=choice.small_threshold,
            large_threshold=choice.large_threshold,
            threads=threads,
            runtime=runtime,
            uncertain_floor=floor,
        )
    source = choice.source()
    session = load_session(source, threads=threads)
    if choice.family == "retinaface":
        from imageblur.detectors import retinaface

        return PyramidDetector(
            retinaface.RetinaFaceModel(session, source),
            threshold=choice.threshold,
            pyramid=retinaface.PYRAMID,
            uncertain_floor=floor,
        )
    if choice.family == "scrfd":
        from imageblur.detectors import scrfd

        return PyramidDetector(
            scrfd.ScrfdModel(session, source),
            threshold=choice.threshold,
            pyramid=scrfd.PYRAMID,
            uncertain_floor=floor,
        )
    from imageblur.detectors import yolo

    return PyramidDetector(
        yolo.YoloModel(session, source, choice.classes),
        threshold=choice.threshold,
        pyramid=yolo.PYRAMID,
        uncertain_floor=floor,
    )


class CombinedDetector:
    """Several detectors as one: each applies its own threshold, then the regions of
    the same kind are grouped as the pyramid groups its passes (a face two detectors
    agree on scores the noisy-or of their scores). Uncertain candidates are grouped the
    same way, and those overlapping a hidden region are dropped: another detector
    already hides that place."""

    def __init__(self, detectors: Sequence[FaceDetector]) -> None:
        self.detectors = list(detectors)
        self._iou = PyramidConfig().group_iou

    def detect(self, image: RGBImage) -> list[Face]:
        return self.detect_regions(image)[0]

    def detect_regions(self, image: RGBImage) -> tuple[list[Face], list[Face]]:
        found = [_regions(detector, image) for detector in self.detectors]
        height, width = image.shape[:2]
        hidden = self._grouped([h for h, _ in found], width, height)
        unsure = self._grouped([u for _, u in found], width, height)
        return hidden, [u for u in unsure if not any(_overlap(u, h, self._iou) for h in hidden)]

    def _grouped(self, per_detector: list[list[Face]], width: int, height: int) -> list[Face]:
        rows: list[FloatArray] = [np.zeros((0, 7), np.float32)]
        for index, faces in enumerate(per_detector):
            rows.append(
                np.array(
                    [(f.x0, f.y0, f.x1, f.y1, f.score, index, KINDS.index(f.kind)) for f in faces],
                    np.float32,
                ).reshape(-1, 7)
            )
        return faces_of(np.concatenate(rows), self._iou, 0.0, width, height)


def _regions(detector: FaceDetector, image: RGBImage) -> tuple[list[Face], list[Face]]:
    if isinstance(detector, RegionDetector):
        return detector.detect_regions(image)
    return detector.detect(image), []


def _overlap(a: Face, b: Face, iou: float) -> bool:
    """As the grouping merges: IoU at least `iou`, or `a` lying 80% inside `b`."""
    if a.kind != b.kind:
        return False
    iw = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    ih = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = iw * ih
    area_a = max(a.width, 0.0) * max(a.height, 0.0)
    area_b = max(b.width, 0.0) * max(b.height, 0.0)
    union = max(area_a + area_b - inter, 1e-6)
    return inter / union >= iou or inter / max(area_a, 1e-6) >= 0.8
