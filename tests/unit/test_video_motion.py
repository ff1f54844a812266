"""The camera's motion between looked-at frames (`video.motion`)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from imageblur.ports import RGBImage
from imageblur.video.motion import MotionEstimator
from imageblur.video.sightings import CameraMotion

SCENE = cv2.resize(
    (np.random.default_rng(7).random((90, 160, 3)) * 255).astype(np.uint8),
    (2560, 1440),
    interpolation=cv2.INTER_CUBIC,
)


def view(scale: float, dx: float, dy: float) -> RGBImage:
    """A 1280 x 720 camera over the scene: frame = scale * scene + (dx, dy)."""
    matrix = np.array([[scale, 0, dx], [0, scale, dy]], dtype=np.float64)
    return cv2.warpAffine(SCENE, matrix, (1280, 720))


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((1.0, -100, -50), (1.0, -112, -43)),  # a pan
        ((1.0, -100, -50), (1.05, -120, -40)),  # a zoom in while panning
        ((1.2, -400, -300), (1.14, -370, -280)),  # a zoom out
    ],
)
def test_the_shift_and_zoom_between_two_frames_are_measured(
    before: tuple[float, float, float], after: tuple[float, float, float]
) -> None:
    estimator = MotionEstimator()
    assert estimator.estimate(view(*before)) is None  # nothing to compare the first with
    motion = estimator.estimate(view(*after))
    assert motion is not None
    scale = after[0] / before[0]
    expected = CameraMotion(scale, after[1] - scale * before[1], after[2] - scale * before[2])
    assert motion.scale == pytest.approx(expected.scale, abs=0.003)
    # A face box moves with it to within a pixel or two.
    face = (700.0, 300.0, 760.0, 370.0)
    assert motion.box(face) == pytest.approx(expected.box(face), abs=2.0)


def test_no_motion_is_claimed_for_a_flat_frame_or_after_a_reset() -> None:
    estimator = MotionEstimator()
    estimator.estimate(view(1.0, -100, -50))
    assert estimator.estimate(np.full((720, 1280, 3), 90, dtype=np.uint8)) is None
    estimator.estimate(view(1.0, -100, -50))
    estimator.reset()
    assert estimator.estimate(view(1.0, -104, -50)) is None


def test_the_inverse_motion_brings_a_box_back() -> None:
    motion = CameraMotion(1.1, -30.0, 12.0)
    box = (10.0, 20.0, 50.0, 80.0)
    assert motion.inverse().box(motion.box(box)) == pytest.approx(box)
