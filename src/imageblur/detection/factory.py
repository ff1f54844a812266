"""A detector from chosen families and models; several run together as one.

Bootstrap maps the settings to `DetectorChoice`s; this module loads each family's module
(named after it, imported only now) and lets it check and load its model.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module
from typing import Protocol, cast

import numpy as np

from imageblur.detection.base import DetectorChoice
from imageblur.detection.families import KINDS, Family
from imageblur.detection.pyramid import (
    PLAIN,
    FloatArray,
    PyramidConfig,
    PyramidDetector,
    View,
    clipped,
    grouped,
    regions,
)
from imageblur.detection.runtime import Runtime
from imageblur.domain import DetectionThresholds, Face
from imageblur.ports import FaceDetector, RegionDetector, RGBImage, TunableDetector

__all__ = ["CombinedDetector", "DetectorChoice", "make_detector"]


class FamilyModule(Protocol):
    """What each family's module offers: its detector as configured."""

    def detector(
        self,
        choice: DetectorChoice,
        *,
        threads: int,
        runtime: Runtime,
        uncertain_floor: float | None,
    ) -> PyramidDetector: ...


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
        family_module(choice.family).detector(
            choice, threads=threads, runtime=runtime, uncertain_floor=uncertain_floor
        )
        for choice in choices
    ]
    return detectors[0] if len(detectors) == 1 else CombinedDetector(detectors)


def family_module(family: Family) -> FamilyModule:
    """The module of a family, imported on first use (settings name only known families)."""
    return cast(FamilyModule, import_module(f"imageblur.detection.{family}"))


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

    def detect_regions(
        self,
        image: RGBImage,
        thresholds: DetectionThresholds | None = None,
        *,
        view: View = PLAIN,
    ) -> tuple[list[Face], list[Face]]:
        """`thresholds`: this call's for the main (first) detector, an upload's preset;
        the extra detectors keep their own (their scores mean other things). `view`: how
        each detector that takes views scans."""
        found = [
            _regions(detector, image, thresholds if index == 0 else None, view)
            for index, detector in enumerate(self.detectors)
        ]
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
        return regions(clipped(grouped(np.concatenate(rows), self._iou), width, height))


def _regions(
    detector: FaceDetector,
    image: RGBImage,
    thresholds: DetectionThresholds | None = None,
    view: View = PLAIN,
) -> tuple[list[Face], list[Face]]:
    if isinstance(detector, PyramidDetector | CombinedDetector):
        return detector.detect_regions(image, thresholds, view=view)
    if thresholds is not None and isinstance(detector, TunableDetector):
        return detector.detect_regions(image, thresholds)
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
