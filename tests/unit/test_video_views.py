"""Pass 1 scans each detected frame in the next view in turn; through the real pipeline a
face stays one track, hidden in every frame. Clips generated here, the real detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clips import Clip, decoded
from imageblur.bootstrap import build_detector, video_options
from imageblur.config import load_settings
from imageblur.detection.pyramid import PLAIN, PyramidConfig, PyramidDetector, View
from imageblur.domain import Face
from imageblur.ports import RGBImage
from imageblur.video.detect_pass import VARIED_VIEWS, DetectPass
from imageblur.video.pipeline import blur_video
from imageblur.video.probe import probe
from support import BILL


class Nothing:
    """A stand-in network that finds nothing."""

    input_px = None

    def run(self, tile: np.ndarray, floor: float) -> np.ndarray:
        return np.zeros((0, 6), np.float32)


class Noting(PyramidDetector):
    """A pyramid detector noting the view of each call."""

    def __init__(self) -> None:
        super().__init__(Nothing(), threshold=0.5, pyramid=PyramidConfig())
        self.views: list[View] = []

    def detect_regions(
        self, image: RGBImage, thresholds: object = None, *, view: View = PLAIN
    ) -> tuple[list[Face], list[Face]]:
        self.views.append(view)
        return [], []


def test_each_detected_frame_takes_the_next_view(tmp_path: Path) -> None:
    src = Clip(frames=10).write(tmp_path / "a.mp4")
    info = probe(src, video_options(load_settings()).limits)
    detector = Noting()
    views = (PLAIN, View(mirrored=True), View(scale_offset=1.5))
    seen = list(DetectPass(detector, stride=2, views=views).run(src, info))
    assert [s.index for s in seen] == [0, 2, 4, 6, 8]
    assert detector.views == [*views, *views[:2]]
    with pytest.raises(ValueError, match="view"):
        DetectPass(detector, stride=1, views=())


def test_the_settings_vary_the_views_unless_turned_off() -> None:
    assert video_options(load_settings()).detect_views == VARIED_VIEWS
    off = video_options(load_settings(video_varied_views=False))
    assert off.detect_views == (PLAIN,)
    assert len(set(VARIED_VIEWS)) == len(VARIED_VIEWS) > 1 and VARIED_VIEWS[0] == PLAIN


def _iou(a: Face, b: Face) -> float:
    iw = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    ih = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = iw * ih
    return inter / (a.width * a.height + b.width * b.height - inter)


def test_a_face_seen_in_turning_views_is_one_track_hidden_in_every_frame(
    tmp_path: Path,
) -> None:
    if not BILL.is_file():
        pytest.skip(f"example picture missing: {BILL}")
    settings = load_settings(blur_mode="solid", video_detect_stride=1)
    options = video_options(settings)
    detector = build_detector(settings)
    face = np.asarray(Image.open(BILL).convert("RGB").resize((320, 180)))
    frames = [np.roll(face, 2 * i, axis=1) for i in range(12)]  # a pan, 2 px a frame
    plain = [detector.detect(f) for f in frames]
    assert all(len(b) == 1 for b in plain)
    src = Clip(width=320, height=180, frames=12, fps=10, picture=frames.__getitem__).write(
        tmp_path / "face.mp4"
    )
    # Each view's box lands where the plain view's does: in the frame's own coordinates.
    seen = list(
        DetectPass(detector, stride=1, views=options.detect_views).run(
            src, probe(src, options.limits)
        )
    )
    for sighting, (box,) in zip(seen, plain, strict=True):
        (found,) = sighting.faces
        assert _iou(found, box) > 0.8
    target = tmp_path / "out.mp4"
    result = blur_video(src, target, detector, options)
    assert (result.frames, result.faces) == (12, 1)
    for frame, (box,) in zip(decoded(target), plain, strict=True):
        x0, y0, x1, y1 = (int(v) for v in (box.x0, box.y0, box.x1, box.y1))
        inner = frame.to_ndarray(format="rgb24")[y0 + 4 : y1 - 4, x0 + 4 : x1 - 4]
        assert np.percentile(inner, 99) < 40  # solid black, give or take the encoding
