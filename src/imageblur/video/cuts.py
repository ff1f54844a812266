"""Cuts (scene changes) from a cheap measure on a tiny copy of each frame.

Each frame is reduced to a 32 x 18 grey thumbnail (area average: noise and grain
average out); a frame whose thumbnail differs from the previous one's by more than
`CUT_MEAN_DIFFERENCE` grey levels on average starts a new shot. A camera pan moves the
picture a few thumbnail pixels per frame and stays well below that; a cut between two
shots changes most of it. Not tuned on real clips yet: the video benchmark measures it.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from imageblur.ports import RGBImage

THUMBNAIL_SIZE = (32, 18)  # width, height
CUT_MEAN_DIFFERENCE = 40.0  # grey levels (0-255), mean over the thumbnail


class CutDetector:
    """Feed frames in order; `is_cut` says whether a frame starts a new shot (the first
    frame does not: nothing crosses into it anyway)."""

    def __init__(self, *, threshold: float = CUT_MEAN_DIFFERENCE) -> None:
        self._threshold = threshold
        self._previous: npt.NDArray[np.float32] | None = None

    def is_cut(self, image: RGBImage) -> bool:
        small = cv2.resize(image, THUMBNAIL_SIZE, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
        previous, self._previous = self._previous, grey
        if previous is None:
            return False
        return float(np.mean(np.abs(grey - previous))) > self._threshold
