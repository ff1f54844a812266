"""A `View` scans the image another way; its boxes are always the image's."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from imageblur.config import Settings
from imageblur.detection.centerface import centerface_detector
from imageblur.detection.pyramid import (
    PyramidConfig,
    PyramidDetector,
    View,
    pyramid_scales,
    unmirrored,
)
from imageblur.domain import Face
from support import BILL

from .test_detection import BrightBox

SHIFTED = View(scale_offset=2**0.5)


def _shipped() -> PyramidDetector:
    fields = Settings.model_fields
    return centerface_detector(
        threshold=fields["detection_threshold"].default,
        small_threshold=fields["detection_small_threshold"].default,
        large_threshold=fields["detection_large_threshold"].default,
    )


def _bill() -> np.ndarray:
    if not BILL.is_file():
        pytest.skip(f"example picture missing: {BILL}")
    bgr = cv2.imread(str(BILL), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


class Counting(BrightBox):
    """BrightBox, noting the size of every tile it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def run(self, tile: np.ndarray, floor: float) -> np.ndarray:
        self.calls.append((tile.shape[0], tile.shape[1]))
        return super().run(tile, floor)


def _box(face: Face) -> tuple[float, float, float, float]:
    return face.x0, face.y0, face.x1, face.y1


@pytest.mark.parametrize("view", [View(), View(mirrored=True), SHIFTED, View(True, 1.5)])
@pytest.mark.parametrize("width", [301, 300])
def test_every_view_maps_its_box_back_to_the_image(view: View, width: int) -> None:
    image = np.zeros((250, width, 3), np.uint8)
    image[40:52, 17:26] = 255  # off-centre, odd-sized: a wrong mapping would show
    cfg = PyramidConfig(coarsest_side_px=100, floor_score=0.05)
    detector = PyramidDetector(BrightBox(), threshold=0.2, pyramid=cfg)
    (face,) = detector.detect_regions(image, view=view)[0]
    assert _box(face) == (17, 40, 26, 52)


def test_the_shifted_view_runs_the_scales_between_the_plain_ones() -> None:
    image = np.zeros((250, 301, 3), np.uint8)
    model = Counting()
    detector = PyramidDetector(
        model, threshold=0.2, pyramid=PyramidConfig(coarsest_side_px=100, tile_px=4096)
    )
    detector.detect_regions(image, view=SHIFTED)
    assert model.calls == [(250, 301), (177, 213), (88, 106)]
    cfg = detector.pyramid
    assert pyramid_scales(1280, 720, cfg) == [1.0, 0.5, 0.25, 0.125]
    shifted = pyramid_scales(1280, 720, cfg, SHIFTED.scale_offset)
    assert shifted == pytest.approx([1.0, 0.7071, 0.3536, 0.1768, 0.0884], abs=1e-4)


def test_the_mirrored_view_is_the_mirrored_image_detected_and_mapped_back() -> None:
    image = _bill()
    detector = _shipped()
    hidden, unsure = detector.detect_regions(image, view=View(mirrored=True))
    flipped = np.ascontiguousarray(image[:, ::-1])
    for seen, expected in zip((hidden, unsure), detector.detect_regions(flipped), strict=True):
        rows = np.array([[*_box(f), f.score] for f in expected], np.float32).reshape(-1, 5)
        mapped = unmirrored(rows, image.shape[1])
        assert np.array_equal(np.array([[*_box(f), f.score] for f in seen]).reshape(-1, 5), mapped)
    assert hidden  # the face is found in this view too


def test_the_plain_view_is_the_default() -> None:
    image = _bill()
    detector = _shipped()
    assert detector.detect_regions(image, view=View()) == detector.detect_regions(image)


@pytest.mark.parametrize("offset", [0.9, 2.0])
def test_a_scale_offset_outside_one_to_two_is_refused(offset: float) -> None:
    with pytest.raises(ValueError, match="scale offset"):
        View(scale_offset=offset)


def test_a_view_leaves_the_configured_extra_passes_in_place() -> None:
    image = np.zeros((250, 301, 3), np.uint8)
    model = Counting()
    cfg = PyramidConfig(coarsest_side_px=100, tile_px=4096)
    detector = PyramidDetector(model, threshold=0.2, pyramid=replace(cfg, mirrored=1))
    detector.detect_regions(image, view=View(mirrored=True))
    # The pyramid's three scales, then its mirrored finest pass (of the mirrored image).
    assert model.calls == [(250, 301), (125, 150), (62, 75), (250, 301)]
