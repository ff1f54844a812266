"""A second, finer look at faint sightings: which get one (`video.second_look`), what
the detector sees there (`PyramidDetector.look_closer`, the real network on a real
face), and how tracking hides a faint track no look confirmed (at and between its
sightings only) against one a look confirmed (rolls and coasting, as before)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clips import Clip, decoded
from imageblur.bootstrap import build_detector, video_options
from imageblur.config import load_settings
from imageblur.detection.pyramid import PyramidDetector
from imageblur.domain import CloserLook, Face
from imageblur.ports import LooksCloser, RGBImage
from imageblur.video.pipeline import blur_video
from imageblur.video.second_look import SecondLookPolicy, SecondLooks
from imageblur.video.service_parts import ChosenDetector
from imageblur.video.sightings import CameraMotion, FrameSightings
from imageblur.video.track_plan import TrackPlan
from imageblur.video.tracking import TrackSettings, build_plan

EXAMPLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "example-pictures"
GREY = 128


@pytest.fixture(scope="module")
def detector() -> PyramidDetector:
    found = build_detector(load_settings())
    assert isinstance(found, PyramidDetector)
    return found


def _small_face(width: int) -> np.ndarray:
    """Bill Gates' photo `width` px wide (at 40 px, a face of about 18 px)."""
    photo = Image.open(EXAMPLE / "bill-gates.jpg").convert("RGB")
    height = round(width * photo.size[1] / photo.size[0])
    return np.asarray(photo.resize((width, height), Image.Resampling.LANCZOS))


def _canvas(small: np.ndarray, x: int, y: int) -> RGBImage:
    canvas = np.full((360, 640, 3), GREY, np.uint8)
    h, w = small.shape[:2]
    canvas[y : y + h, x : x + w] = small
    return canvas


def test_a_small_real_face_the_pyramid_finds_faintly_looks_like_a_face_up_close(
    detector: PyramidDetector,
) -> None:
    image = _canvas(_small_face(40), 200, 100)
    (faint,) = detector.detect(image)
    assert faint.score < TrackSettings().faint_score  # faint: a second look is due
    assert detector.look_closer(image, faint, CloserLook()) >= TrackSettings().closer_score


def test_a_second_look_at_texture_or_an_empty_spot_finds_no_face(
    detector: PyramidDetector,
) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    spot = Face(300, 150, 316, 170, 0.2)
    assert detector.look_closer(noise, spot, CloserLook()) < TrackSettings().closer_score
    flat = np.full((360, 640, 3), GREY, np.uint8)
    assert detector.look_closer(flat, spot, CloserLook()) == 0.0
    edge = Face(-5, -5, 10, 12, 0.2)  # reaching past the frame: the square is padded
    assert detector.look_closer(flat, edge, CloserLook()) == 0.0


class _Looks:
    """A second look that answers from a table of boxes' x0, counting its calls."""

    def __init__(self, scores: dict[float, float]) -> None:
        self.scores, self.calls = scores, 0

    def __call__(self, face: Face) -> float:
        self.calls += 1
        return self.scores[face.x0]


def _box(x: float, score: float) -> Face:
    return Face(x, 10, x + 20, 34, score)


def test_a_chain_is_looked_at_once_then_every_nth_until_a_look_confirms_it() -> None:
    looks = SecondLooks(SecondLookPolicy(below=0.4, confirm=0.4, looks_per_chain=1, look_every=3))
    answer = _Looks({10.0: 0.1, 12.0: 0.1, 14.0: 0.1, 16.0: 0.9, 18.0: 0.1, 20.0: 0.1})
    seen = [looks.scores([_box(x, 0.2)], None, answer)[0] for x in (10, 12, 14, 16, 18, 20)]
    # The first sighting, then the 3rd after it (confirmed), then inherited.
    assert seen == [0.1, None, None, 0.9, 0.9, 0.9]
    assert answer.calls == looks.taken == 2


def test_only_faint_boxes_get_a_look_and_a_cut_or_the_camera_ends_a_chain() -> None:
    looks = SecondLooks(SecondLookPolicy(below=0.4, confirm=0.4, looks_per_chain=1, look_every=0))
    answer = _Looks({10.0: 0.1, 100.0: 0.1, 300.0: 0.1})
    assert looks.scores([_box(10, 0.2), _box(300, 0.9)], None, answer) == (0.1, None)
    assert looks.scores([_box(10, 0.2)], None, answer) == (None,)  # looked at once
    looks.reset()  # a cut
    assert looks.scores([_box(10, 0.2)], None, answer) == (0.1,)
    # The camera moved 90 px right: the box there is the same chain, not a new one.
    assert looks.scores([_box(100, 0.2)], CameraMotion(dx=90.0), answer) == (None,)
    assert answer.calls == 2


def _frames(score: float, closer: float | None, count: int = 10) -> list[FrameSightings]:
    """A box sighted on every 3rd frame at 30 frames/s, with its second look."""
    return [
        FrameSightings(3 * i, 0.1 * i, (_box(100, score),), closer=(closer,))
        for i in range(1, count + 1)
    ]


def _span(plan: TrackPlan, frames: int = 60) -> list[int]:
    return [i for i in range(frames) if plan.boxes_at(i, i / 30)]


def test_a_faint_track_no_look_confirms_is_hidden_where_it_was_seen_only() -> None:
    unconfirmed = build_plan(_frames(0.2, 0.1))
    # Every sighting and every frame between them, never beyond.
    assert _span(unconfirmed) == list(range(3, 31))
    track = unconfirmed.track_list[0]
    assert (track.pre_roll_s, track.post_roll_s, track.coast) == (0.0, 0.0, (0, 0))
    sighted = _frames(0.2, 0.1)
    for frame in sighted:  # never less than the per-frame plan of the same sightings
        (box,) = unconfirmed.boxes_at(frame.index, frame.time_s)
        assert box.face == frame.faces[0]


def test_a_confirmed_faint_track_a_strong_one_or_one_never_looked_at_keeps_its_rolls() -> None:
    rolled = list(range(0, 46))  # up to 0.5 s either side (the clip starts at frame 0)
    assert _span(build_plan(_frames(0.2, 0.8))) == rolled  # a look confirmed it
    assert _span(build_plan(_frames(0.2, None))) == rolled  # no look taken: as before
    assert _span(build_plan(_frames(0.6, 0.1))) == rolled  # not faint
    off = TrackSettings(faint_score=0.0)
    assert _span(build_plan(_frames(0.2, 0.1), off)) == rolled


class _FaintWithFalseBox:
    """The real detector, its scores halved (an 18 px face scores 0.3 to 0.5: halved,
    its track stays faint in every frame), plus a faint false box on the grey
    background of every frame (what the privacy preset finds on texture); it looks
    closer as the real one does."""

    def __init__(self, detector: PyramidDetector) -> None:
        self._detector = detector

    def detect(self, image: RGBImage) -> list[Face]:
        found = [replace(f, score=f.score / 2) for f in self._detector.detect(image)]
        return [*found, Face(500, 250, 516, 270, 0.2)]

    def look_closer(self, image: RGBImage, face: Face, look: CloserLook) -> float:
        return self._detector.look_closer(image, face, look)


def test_a_clip_of_a_small_real_face_stays_hidden_while_a_false_box_loses_its_rolls(
    tmp_path: Path, detector: PyramidDetector
) -> None:
    small = _small_face(40)
    h, w = small.shape[:2]

    def picture(i: int) -> np.ndarray:  # the face pans 2 px a frame
        return _canvas(small, 200 + 2 * i, 100)

    src = Clip(width=640, height=360, frames=30, fps=30, picture=picture).write(
        tmp_path / "small.mp4"
    )
    options = video_options(load_settings(blur_mode="solid", video_second_look=True))
    result = blur_video(src, tmp_path / "out.result", _FaintWithFalseBox(detector), options)
    assert result.track_plan is not None
    plan = TrackPlan.from_json(result.track_plan)
    rolls = {round(t.keys[0].box[0]) == 500: t.post_roll_s for t in plan.track_list}
    assert rolls[True] == 0.0  # the false box: no look confirms it
    assert rolls[False] > 0.0  # the faint face: a look does
    for i, frame in enumerate(decoded(tmp_path / "out.result")):
        x0, y0 = 200 + 2 * i + w // 3, 100 + h // 4  # the middle of the face
        inner = frame.to_ndarray(format="rgb24")[y0 : y0 + h // 3, x0 : x0 + w // 3]
        assert np.percentile(inner, 99) < 40, f"frame {i}"  # solid black


class _Plain:
    """A detector that cannot look closer (a test's fake, a brought family)."""

    def detect(self, image: RGBImage) -> list[Face]:
        return []


def test_an_uploads_detector_looks_through_to_the_real_one_or_confirms_every_box(
    detector: PyramidDetector,
) -> None:
    image = _canvas(_small_face(40), 200, 100)
    (faint,) = detector.detect(image)
    chosen = ChosenDetector(detector, thresholds=None, ignore=(), hide=())
    assert isinstance(chosen, LooksCloser)
    look = CloserLook()
    assert chosen.look_closer(image, faint, look) == detector.look_closer(image, faint, look)
    plain = ChosenDetector(_Plain(), thresholds=None, ignore=(), hide=())
    assert plain.look_closer(image, faint, look) == 1.0  # hidden as any track, as before
