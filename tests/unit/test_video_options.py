"""A video's options per upload (issue 26) through both passes: `hide` rectangles of the
upright frame hidden whole in every frame (also in a rotated phone clip), `ignore`
sparing a face (and `hide` winning over it), the mode, the preset's mask growth and
thresholds; and what a video cannot take. Clips generated here, the real detector."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clips import Clip, decoded
from imageblur import upload_options
from imageblur.bootstrap import build_detector, video_options
from imageblur.config import load_settings
from imageblur.domain import DetectionThresholds, PresetChoice, Rect, UploadOptions
from imageblur.ports import FaceDetector
from imageblur.upload_options import InvalidOption
from imageblur.video.pipeline import VideoOptions, blur_video
from imageblur.video.service_parts import ChosenDetector, chosen
from unit.fakes import FakeDetector

EXAMPLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "example-pictures"


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return build_detector(load_settings())


@pytest.fixture(scope="module")
def options() -> VideoOptions:
    return video_options(load_settings())  # the server blurs: the options choose solid


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """Bill Gates' photo at 320 x 180: one face about 100 px tall."""
    photo = Image.open(EXAMPLE / "bill-gates.jpg").convert("RGB")
    return np.asarray(photo.resize((320, 180)))


def _blur(
    src: Path,
    tmp_path: Path,
    detector: FaceDetector,
    options: VideoOptions,
    choices: UploadOptions,
) -> list[np.ndarray]:
    chosen_detector, chosen_options = chosen(detector, options, choices)
    target = tmp_path / "out.result"
    blur_video(src, target, chosen_detector, chosen_options)
    return [f.to_ndarray(format="rgb24") for f in decoded(target)]


def _flat(pixels: np.ndarray) -> bool:
    """Solid black, give or take the encoding."""
    return bool(np.percentile(pixels, 99) < 40)


def test_hide_is_hidden_whole_in_every_frame(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions
) -> None:
    src = Clip(width=160, height=120, frames=12).write(tmp_path / "bars.mp4")
    choices = UploadOptions(mode="solid", hide=(Rect(100, 10, 40, 30),))
    frames = _blur(src, tmp_path, detector, options, choices)
    assert len(frames) == 12
    for frame in frames:
        assert _flat(frame[14:36, 104:136])
        assert not _flat(frame[60:110, 10:90])  # the rest is as it was


def test_hide_is_in_pixels_of_the_upright_frame(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions, face: np.ndarray
) -> None:
    """A phone clip stored a quarter turned, with its matrix: the rectangle lands where
    the client saw it, upright."""
    stored = np.ascontiguousarray(np.rot90(face, -1))
    src = Clip(width=180, height=320, frames=4, rotation=90, picture=lambda _: stored).write(
        tmp_path / "phone.mp4"
    )
    choices = UploadOptions(mode="solid", hide=(Rect(250, 120, 60, 50),))
    for frame in _blur(src, tmp_path, detector, options, choices):
        upright = np.rot90(frame, 1)  # 180 x 320
        assert _flat(upright[124:166, 254:306])
        assert not _flat(upright[10:60, 254:306])


def test_ignore_spares_a_face_unless_a_hide_rectangle_touches_it(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions, face: np.ndarray
) -> None:
    (box,) = detector.detect(face)
    x0, y0, x1, y1 = (int(v) for v in (box.x0, box.y0, box.x1, box.y1))
    around = Rect(x0 - 5, y0 - 5, x1 - x0 + 10, y1 - y0 + 10)
    src = Clip(width=320, height=180, frames=6, picture=lambda _: face).write(tmp_path / "face.mp4")
    inner = (slice(y0 + 4, y1 - 4), slice(x0 + 4, x1 - 4))
    spared = _blur(src, tmp_path, detector, options, UploadOptions(mode="solid", ignore=(around,)))
    assert not any(_flat(f[inner]) for f in spared)
    touch = Rect(x0, y0, 2, 2)  # hides a corner, and so the face is hidden again
    both = UploadOptions(mode="solid", ignore=(around,), hide=(touch,))
    assert all(_flat(f[inner]) for f in _blur(src, tmp_path, detector, options, both))


def test_the_options_change_only_what_they_name(
    detector: FaceDetector, options: VideoOptions
) -> None:
    assert chosen(detector, options, None) == (detector, options)
    kept, plain = chosen(detector, options, UploadOptions(mode="pixelate"))
    assert kept is detector
    assert plain == replace(options, look=replace(options.look, mode="pixelate"))
    thresholds = DetectionThresholds(threshold=0.5)
    preset = PresetChoice(thresholds=thresholds, mask_scale=2.0, mask_margin_px=1.0)
    tuned, grown = chosen(
        detector,
        options,
        UploadOptions(preset="tidy", keep_metadata=frozenset({"gps"})),
        lambda name: preset,
    )
    assert isinstance(tuned, ChosenDetector)
    assert (grown.look.geometry.scale, grown.look.geometry.margin_px) == (2.0, 1.0)
    assert grown.keep_metadata == {"gps"}


def test_a_preset_looks_with_its_own_detector(
    detector: FaceDetector, options: VideoOptions
) -> None:
    """The worker's detector of the upload's preset (`detection.presets`: thorough's
    is loaded on first use), as pictures look with it, on any server."""
    thorough = FakeDetector([])
    asked: list[str] = []

    def detectors(name: str) -> FaceDetector:
        asked.append(name)
        return thorough

    preset = PresetChoice(DetectionThresholds(threshold=0.5), mask_scale=1.0, mask_margin_px=0)

    def choose(choices: UploadOptions) -> FaceDetector:
        return chosen(detector, options, choices, lambda _: preset, detectors)[0]

    looks = choose(UploadOptions(preset="thorough"))
    assert isinstance(looks, ChosenDetector)  # the preset's thresholds, per call
    assert looks._detector is thorough and asked == ["thorough"]
    plain = choose(UploadOptions(mode="solid"))
    assert plain is detector and asked == ["thorough"]  # no preset asked: the server's


def test_what_a_video_cannot_take_is_refused_naming_the_field() -> None:
    check = upload_options.check_video
    check(UploadOptions(keep_metadata=frozenset({"gps", "datetime"})))
    with pytest.raises(InvalidOption, match="camera_settings") as refused:
        check(UploadOptions(keep_metadata=frozenset({"camera_settings"})))
    assert refused.value.field == "keep_metadata"
    # Every preset, on any server: the worker loads a preset's own detector.
    for preset in ("privacy", "tidy", "thorough"):
        check(UploadOptions(preset=preset))
    # A rectangle is refused only outside the frame both ways up (the turn is read later).
    turned = UploadOptions(hide=(Rect(150, 10, 5, 5),))
    upload_options.check_fits_video(turned, width=120, height=160)
    with pytest.raises(InvalidOption) as outside:
        upload_options.check_fits_video(
            UploadOptions(ignore=(Rect(170, 0, 5, 5),)), width=120, height=160
        )
    assert outside.value.field == "ignore"
