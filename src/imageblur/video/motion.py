"""The camera's motion between two looked-at frames: a shift and a zoom.

Tracking keeps a face hidden beyond its sightings by moving its box with the camera
(`video.tracking`): a face the detector finds only while the camera is zoomed in stays
hidden as the camera zooms out and the detector loses it. The motion is estimated on a
small grey copy of each looked-at frame (`WIDTH` pixels wide): corners of the previous
copy followed into this one by pyramidal Lucas-Kanade optical flow, and a similarity
(scale, rotation, shift) fitted to them with RANSAC, so faces and people moving on their
own count as outliers while the background follows the camera. The rotation is dropped
(boxes stay upright). Memory: one small grey copy.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from imageblur.ports import RGBImage
from imageblur.video.sightings import CameraMotion

WIDTH = 320  # the grey copy's width: about 1 ms of optical flow per frame
MAX_CORNERS = 200
MIN_INLIERS = 12  # fewer points agreeing: the motion is unknown (a flat or blurred frame)
MAX_ZOOM = 1.5  # a larger change of scale between two looked-at frames is not believed


Grey = npt.NDArray[np.uint8]


class MotionEstimator:
    """Feed looked-at frames in order; `estimate` gives the motion from the previous one
    to this one, None for the first frame, after `reset` (a cut) and when too few points
    agree."""

    def __init__(self) -> None:
        self._previous: Grey | None = None
        self._factor = 1.0  # full-size pixels per grey-copy pixel

    def reset(self) -> None:
        self._previous = None

    def estimate(self, image: RGBImage) -> CameraMotion | None:
        height, width = image.shape[:2]
        self._factor = width / WIDTH if width > WIDTH else 1.0
        size = (round(width / self._factor), max(1, round(height / self._factor)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        grey: Grey = np.asarray(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
        previous, self._previous = self._previous, grey
        if previous is None:
            return None
        return self._fit(previous, grey)

    def _fit(self, previous: Grey, grey: Grey) -> CameraMotion | None:
        corners = cv2.goodFeaturesToTrack(
            previous, maxCorners=MAX_CORNERS, qualityLevel=0.01, minDistance=6
        )
        if corners is None or len(corners) < MIN_INLIERS:
            return None
        moved, status, _ = cv2.calcOpticalFlowPyrLK(
            previous, grey, corners, corners.copy(), winSize=(21, 21), maxLevel=3
        )
        found = status.reshape(-1) == 1
        if int(found.sum()) < MIN_INLIERS:
            return None
        matrix, inliers = cv2.estimateAffinePartial2D(
            corners[found], moved[found], method=cv2.RANSAC, ransacReprojThreshold=1.0
        )
        if matrix is None or inliers is None or int(inliers.sum()) < MIN_INLIERS:
            return None
        scale = math.hypot(float(matrix[0, 0]), float(matrix[1, 0]))
        if not 1 / MAX_ZOOM <= scale <= MAX_ZOOM:
            return None
        # The fit maps grey-copy pixel centres; boxes are in full-size pixel edges
        # (an edge is half a pixel before a centre), and the shift scales, the zoom not.
        edge = 0.5 * (1.0 - scale)
        return CameraMotion(
            scale,
            (float(matrix[0, 2]) + edge) * self._factor,
            (float(matrix[1, 2]) + edge) * self._factor,
        )
