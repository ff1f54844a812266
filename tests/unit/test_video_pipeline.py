"""A video through both passes: the result keeps the timing, size, orientation and sound
of the input, drops what the metadata policy does not keep, hides a face in every frame,
and a broken stream leaves nothing behind. Clips generated here, the real detector."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from clips import Clip, decoded
from imageblur.bootstrap import build_detector, video_options
from imageblur.config import load_settings
from imageblur.domain import Face
from imageblur.ports import FaceDetector
from imageblur.video.errors import BrokenVideo
from imageblur.video.pipeline import VideoOptions, VideoResult, blur_video
from imageblur.video.sightings import FrameSightings, HiddenBox
from imageblur.video.track_plan import TrackPlan, TrackSettings
from imageblur.video.tracking import build_plan

EXAMPLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "example-pictures"


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return build_detector(load_settings())


@pytest.fixture(scope="module")
def options() -> VideoOptions:
    return video_options(load_settings(blur_mode="solid"))


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """Bill Gates' photo at 320 px wide: one face about 100 px tall."""
    photo = Image.open(EXAMPLE / "bill-gates.jpg").convert("RGB")
    return np.asarray(photo.resize((320, 180)))


def _run(
    src: Path, tmp_path: Path, detector: FaceDetector, options: VideoOptions
) -> tuple[Path, VideoResult]:
    target = tmp_path / "out.result"
    result = blur_video(src, target, detector, options)
    return target, result


def _pts(path: Path) -> list[int]:
    return [f.pts for f in decoded(path)]


def test_a_face_in_every_frame_is_hidden_in_every_frame(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions, face: np.ndarray
) -> None:
    # The photo pans a pixel a frame; its face box in each frame, from the detector.
    frames = [np.roll(face, i, axis=1) for i in range(20)]
    boxes = [detector.detect(f) for f in frames]
    assert all(len(b) == 1 for b in boxes)
    src = Clip(width=320, height=180, frames=20, fps=10, picture=frames.__getitem__).write(
        tmp_path / "face.mp4"
    )
    target, result = _run(src, tmp_path, detector, options)
    assert (result.frames, result.faces) == (20, 1)
    assert result.track_plan is not None  # the tracks, kept as one JSON object
    assert TrackPlan.from_json(result.track_plan).tracks == 1
    for frame, (box,) in zip(decoded(target), boxes, strict=True):
        x0, y0, x1, y1 = (int(v) for v in (box.x0, box.y0, box.x1, box.y1))
        inner = frame.to_ndarray(format="rgb24")[y0 + 4 : y1 - 4, x0 + 4 : x1 - 4]
        assert np.percentile(inner, 99) < 40  # solid black, give or take the encoding


def test_a_rotated_phone_clip_keeps_its_matrix_and_its_masks_land_on_the_face(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions, face: np.ndarray
) -> None:
    # A phone stores an upright picture turned a quarter clockwise, with a matrix saying
    # "turn it back a quarter counter-clockwise".
    stored = np.ascontiguousarray(np.rot90(face, -1))  # 180 x 320 upright -> 320 x 180 stored
    (box,) = detector.detect(face)
    src = Clip(width=180, height=320, frames=5, rotation=90, picture=lambda _: stored).write(
        tmp_path / "phone.mp4"
    )
    target, result = _run(src, tmp_path, detector, options)
    assert result.faces == 1
    out = decoded(target)
    assert {(f.width, f.height, f.rotation) for f in out} == {(180, 320, 90)}
    upright = np.rot90(out[2].to_ndarray(format="rgb24"), 1)
    x0, y0, x1, y1 = (int(v) for v in (box.x0, box.y0, box.x1, box.y1))
    assert np.percentile(upright[y0 + 4 : y1 - 4, x0 + 4 : x1 - 4], 99) < 40
    # The background away from the face is as it was (give or take the encoding).
    assert np.abs(upright[:, :40].astype(int) - face[:, :40]).mean() < 8


def test_variable_frame_rate_is_kept(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions
) -> None:
    stamps = [0, 3000, 6000, 9000, 10500, 12000, 13500, 21000, 30000, 33000]
    src = Clip(frames=len(stamps), pts=stamps).write(tmp_path / "vfr.mp4")
    target, _ = _run(src, tmp_path, detector, options)
    with av.open(str(src)) as a, av.open(str(target)) as b:
        times_in = [float(f.time) for f in a.decode(video=0)]
        times_out = [float(f.time) for f in b.decode(video=0)]
        duration_in, duration_out = a.duration, b.duration
    assert times_out == pytest.approx(times_in, abs=1e-4)
    assert duration_out == pytest.approx(duration_in, abs=40_000)  # microseconds


@pytest.mark.parametrize(
    ("container", "codec", "size"),
    [("webm", "libvpx-vp9", (65, 47)), ("mp4", "libx264", (65, 47))],
)
def test_an_odd_size(
    tmp_path: Path,
    detector: FaceDetector,
    options: VideoOptions,
    container: str,
    codec: str,
    size: tuple[int, int],
) -> None:
    width, height = size
    pix_fmt = "yuv444p" if codec == "libx264" else "yuv420p"  # x264 4:2:0 needs even sides
    src = Clip(width=width, height=height, container=container, codec=codec, pix_fmt=pix_fmt)
    target, result = _run(src.write(tmp_path / f"odd.{container}"), tmp_path, detector, options)
    frames = decoded(target)
    if container == "webm":  # VP9 keeps any size
        assert (frames[0].width, frames[0].height) == (65, 47)
    else:  # H.264 4:2:0 for phones: one repeated column and row (docs/video.md)
        assert (frames[0].width, frames[0].height) == (66, 48)
    assert (result.width, result.height) == (frames[0].width, frames[0].height)


def _streams(path: Path) -> list[tuple[str, str]]:
    with av.open(str(path)) as c:
        return [(s.type, s.codec_context.name if s.codec_context else "") for s in c.streams]


def test_two_audio_streams_are_both_copied(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions
) -> None:
    src = Clip(audio=["aac", "aac"]).write(tmp_path / "two.mp4")
    target, result = _run(src, tmp_path, detector, options)
    assert result.audio == "kept"
    assert _streams(target) == [("video", "h264"), ("audio", "aac"), ("audio", "aac")]


@pytest.mark.parametrize("container", ["mov", "mp4"])
def test_pcm_audio_is_reencoded_to_aac(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions, container: str
) -> None:
    src = Clip(container=container, audio=["pcm_s16le"]).write(tmp_path / f"camera.{container}")
    target, result = _run(src, tmp_path, detector, options)
    assert result.audio == "reencoded"
    assert result.content_type == "video/mp4"
    assert _streams(target) == [("video", "h264"), ("audio", "aac")]
    with av.open(str(target)) as c:
        seconds = sum(f.samples for f in c.decode(audio=0)) / 48_000
    assert seconds == pytest.approx(1.0, abs=0.05)


def test_aac_in_webm_is_reencoded_to_opus_and_no_audio_is_none(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions
) -> None:
    src = Clip(container="matroska", codec="libvpx-vp9", audio=["aac"]).write(tmp_path / "a.mkv")
    target, result = _run(src, tmp_path, detector, options)
    assert (result.audio, result.extension) == ("reencoded", ".webm")
    assert _streams(target) == [("video", "vp9"), ("audio", "opus")]
    silent = Clip().write(tmp_path / "silent.mp4")
    assert _run(silent, tmp_path, detector, options)[1].audio == "none"


PHONE_METADATA = {
    "com.apple.quicktime.make": "Apple",
    "com.apple.quicktime.model": "iPhone 15",
    "com.apple.quicktime.location.ISO6709": "+48.8584+002.2945/",
    "creation_time": "2024-05-01T10:00:00Z",
    "title": "Bill at the office",
}


@pytest.mark.parametrize(
    ("keep", "kept"),
    [
        ("", set()),
        ("gps", {"location"}),
        ("gps,datetime", {"location", "creation_time"}),
    ],
)
def test_metadata_is_dropped_except_what_the_policy_keeps(
    tmp_path: Path, detector: FaceDetector, keep: str, kept: set[str]
) -> None:
    src = Clip(
        container="mov",
        metadata=PHONE_METADATA,
        muxer_options={"movflags": "use_metadata_tags"},
        video_metadata={"timecode": "01:00:00:00", "handler_name": "Core Media Video"},
        audio=["aac"],
    ).write(tmp_path / "phone.mov")
    assert [t for t, _ in _streams(src)] == ["video", "audio", "data"]  # the timecode track
    options = video_options(load_settings(keep_metadata=keep))
    target, _ = _run(src, tmp_path, detector, options)
    with av.open(str(target)) as c:
        keys = set(c.metadata) - {"major_brand", "minor_version", "compatible_brands", "encoder"}
        stream_keys = {k for s in c.streams for k in s.metadata}
        values = " ".join(c.metadata.values())
    assert [t for t, _ in _streams(target)] == ["video", "audio"]
    assert {k.removesuffix("-eng") for k in keys} == kept
    assert "Apple" not in values and "iPhone" not in values and "office" not in values
    # What the muxer writes itself (the creation time it copies when it is kept).
    written = {"language", "handler_name", "vendor_id", "encoder"}
    assert stream_keys <= written | ({"creation_time"} & kept)
    assert not any(
        "Core Media" in v for s in av.open(str(target)).streams for v in s.metadata.values()
    )


@pytest.mark.parametrize(("container", "name"), [("mp4", "cover.mp4"), ("matroska", "cover.mkv")])
def test_attached_pictures_are_dropped(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions, container: str, name: str
) -> None:
    codec = "libx264" if container == "mp4" else "libvpx-vp9"
    src = Clip(container=container, codec=codec, cover=True).write(tmp_path / name)
    with av.open(str(src)) as c:
        assert len(c.streams) == 2  # the clip and its picture
    target, _ = _run(src, tmp_path, detector, options)
    assert [t for t, _ in _streams(target)] == ["video"]


def test_a_corrupt_stream_mid_file_fails_and_leaves_nothing(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions
) -> None:
    src = Clip(frames=30, muxer_options={"movflags": "+faststart"}).write(tmp_path / "a.mp4")
    data = bytearray(src.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 400] = np.random.default_rng(1).integers(0, 256, 400, np.uint8).tobytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BrokenVideo) as caught:
        blur_video(broken, out / "result.mp4", detector, options)
    assert caught.value.code == "corrupt_video"
    assert list(out.iterdir()) == []


def test_a_stream_cut_short_fails_as_truncated(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions
) -> None:
    src = Clip(frames=30, muxer_options={"movflags": "+faststart"}).write(tmp_path / "a.mp4")
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])  # the index first, then two thirds of the frames
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BrokenVideo) as caught:
        blur_video(cut, out / "result.mp4", detector, options)
    assert caught.value.code == "truncated_video"
    assert list(out.iterdir()) == []


def test_a_plan_decides_what_is_hidden_and_progress_comes_in_frames(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions
) -> None:
    from imageblur.domain import Face

    class Corner:
        tracks = 1

        def boxes_at(self, index: int, time_s: float) -> list[HiddenBox]:
            return [HiddenBox(Face(0, 0, 20, 20, 1.0), track=0)] if index % 2 else []

    def plan(seen: object) -> Corner:
        assert all(isinstance(s, FrameSightings) for s in seen)  # type: ignore[attr-defined]
        return Corner()

    reports = []
    src = Clip(frames=10).write(tmp_path / "a.mp4")
    target = tmp_path / "out.mp4"
    blur_video(src, target, detector, options, make_plan=plan, on_progress=reports.append)
    corners = [f.to_ndarray(format="rgb24")[6:14, 6:14].max() for f in decoded(target)]
    assert [c < 40 for c in corners] == [i % 2 == 1 for i in range(10)]
    assert (reports[-1].stage, reports[-1].frames_done, reports[-1].frames_total) == (
        "render",
        10,
        10,
    )


def test_ten_bit_input_is_stored_eight_bit(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions
) -> None:
    src = Clip(pix_fmt="yuv420p10le").write(tmp_path / "ten.mp4")
    target, result = _run(src, tmp_path, detector, options)
    with av.open(str(target)) as c:
        ctx = c.streams.video[0].codec_context
        assert (ctx.format.name, ctx.profile) == ("yuv420p", "High")  # what phones play
    assert result.frames == 10


class _Shortsighted:
    """The real detector, blind to faces under 100 px: what a face the network finds
    only while the camera is zoomed in looks like to tracking."""

    def __init__(self, detector: FaceDetector) -> None:
        self._detector = detector

    def detect(self, image: np.ndarray) -> list[Face]:
        return [f for f in self._detector.detect(image) if f.height >= 100]


def test_a_face_lost_as_the_camera_zooms_out_stays_hidden_by_the_camera_motion(
    tmp_path: Path, detector: FaceDetector, options: VideoOptions, face: np.ndarray
) -> None:
    (found,) = detector.detect(face)
    cx, cy = (found.x0 + found.x1) / 2, (found.y0 + found.y1) / 2
    frames, fps = 45, 15

    def zoom(i: int) -> float:  # from 1.6 to 0.4 times the photo, about its face
        return 1.6 - 1.2 * i / (frames - 1)

    def picture(i: int) -> np.ndarray:
        s = zoom(i)
        matrix = np.array([[s, 0, 160 - s * cx], [0, s, 90 - s * cy]])
        return cv2.warpAffine(face, matrix, (320, 180))

    src = Clip(width=320, height=180, frames=frames, fps=fps, picture=picture).write(
        tmp_path / "zoom.mp4"
    )
    shortsighted = _Shortsighted(detector)
    assert not shortsighted.detect(picture(frames - 1))  # lost for the last second or so
    hidden = {}
    for coast_s in (0.0, 4.0):
        settings = TrackSettings(coast_s=coast_s)
        target = tmp_path / f"coast{coast_s:g}.result"
        blur_video(
            src,
            target,
            shortsighted,
            options,
            make_plan=lambda seen, settings=settings: build_plan(seen, settings),
        )
        hidden[coast_s] = [
            _hidden(frame.to_ndarray(format="rgb24"), found, zoom(i), (cx, cy))
            for i, frame in enumerate(decoded(target))
        ]
    assert all(hidden[4.0])
    assert not all(hidden[0.0])  # without coasting, the end of the clip shows the face


def _hidden(image: np.ndarray, found: Face, s: float, centre: tuple[float, float]) -> bool:
    """Whether the face's box in this frame (the photo's box scaled by `s` about
    its centre, which the camera keeps in the frame's centre) is solid black."""
    half_w, half_h = found.width * s / 2 * 0.8, found.height * s / 2 * 0.8
    x0, x1 = int(160 - half_w), int(160 + half_w)
    y0, y1 = int(max(0, 90 - half_h)), int(min(180, 90 + half_h))
    return bool(np.percentile(image[y0:y1, x0:x1], 95) < 40)
