"""The small parts of the video pipeline: the display matrix's quarter turns, the cut
measure, the progress reports and the metadata whitelist."""

from __future__ import annotations

import numpy as np
import pytest

from imageblur.video.cuts import CutDetector
from imageblur.video.metadata import kept_metadata
from imageblur.video.orientation import Orientation
from imageblur.video.progress import Progress, Throttled


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_a_box_found_upright_covers_the_same_pixels_stored(turns: int) -> None:
    stored = np.arange(6 * 10).reshape(6, 10)  # height 6, width 10
    upright = np.rot90(stored, turns)
    x0, y0, x1, y1 = 1, 2, 4, 5
    orientation = Orientation(matrix=None, turns=turns)
    sx0, sy0, sx1, sy1 = orientation.to_stored((x0, y0, x1, y1), 10, 6)
    assert sorted(upright[y0:y1, x0:x1].ravel()) == sorted(stored[sy0:sy1, sx0:sx1].ravel())
    assert orientation.upright_size(10, 6) == upright.shape[1::-1]


def test_a_cut_is_a_change_of_most_of_the_picture_and_a_pan_is_not() -> None:
    ys, xs = np.mgrid[0:90, 0:160]
    scene = np.stack([xs % 256, ys * 2, (xs + ys) % 256], axis=-1).astype(np.uint8)
    cuts = CutDetector()
    assert not cuts.is_cut(scene)
    assert not cuts.is_cut(np.roll(scene, 4, axis=1))  # a pan
    assert cuts.is_cut(255 - scene)  # another shot
    assert not cuts.is_cut(np.roll(255 - scene, 2, axis=0))


def test_progress_is_reported_about_once_a_second_and_at_the_end() -> None:
    now = [0.0]
    reports: list[Progress] = []
    progress = Throttled(reports.append, "detect", 100, clock=lambda: now[0])
    for frame in range(1, 91):  # 90 frames over 3 s
        now[0] = frame / 30
        progress(frame)
    progress.finish()  # the header said 100; there were 90
    assert [r.frames_done for r in reports] == [30, 60, 90, 90]
    assert reports[-1] == Progress("detect", 90, 90)
    assert Progress("render", 45, 90).fraction == 0.75


def test_only_location_and_creation_time_can_be_kept() -> None:
    source = {
        "com.apple.quicktime.location.ISO6709": "+48.8584+002.2945/",
        "com.apple.quicktime.make": "Apple",
        "creation_time": "2024-05-01T10:00:00Z",
        "title": "x",
    }
    assert kept_metadata(source, frozenset()) == {}
    assert kept_metadata(source, frozenset({"camera_settings", "copyright"})) == {}
    assert kept_metadata(source, frozenset({"gps", "datetime"})) == {
        "location": "+48.8584+002.2945/",
        "creation_time": "2024-05-01T10:00:00Z",
    }
