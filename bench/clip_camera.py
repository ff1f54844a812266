"""A generated clip: a virtual camera pans and zooms over a photo, encoded like a phone
clip (H.264 and AAC in MP4, with location, creation time, make and model), and the face
boxes of every frame written beside it (`bench/video.py make-clip`).

The camera is an affine map from photo to frame (a scale and an offset), so a face box
in the photo maps exactly to its box in each frame. The photo is upscaled where the
crop is smaller than the frame (a ~1024 px photo in a 1080p clip).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt

Box = tuple[float, float, float, float]  # x0, y0, x1, y1
Image = npt.NDArray[np.uint8]
# What a phone writes (an iPhone's keys; Android phones write `location` and
# `creation_time`), so that `check` can tell which of them an output keeps.
LOCATION = "+48.8584+002.2945+035.000/"
CREATION_TIME = "2026-06-01T09:30:00.000000Z"
PHONE_METADATA = {
    "location": LOCATION,
    "com.apple.quicktime.location.ISO6709": LOCATION,
    "com.apple.quicktime.make": "Apple",
    "com.apple.quicktime.model": "iPhone 15",
    "com.apple.quicktime.creationdate": "2026-06-01T11:30:00+0200",
    "creation_time": CREATION_TIME,
}
TONE_HZ = 440.0
AUDIO_RATE = 48_000


@dataclass(frozen=True, slots=True)
class View:
    """Where the camera looks: the crop's centre and width in photo pixels."""

    cx: float
    cy: float
    width: float


@dataclass(frozen=True, slots=True)
class Shot:
    """A shot: the photo it films (mirrored or not) and its camera path's key views."""

    mirrored: bool
    start: View
    middle: View
    end: View
    hold: float = 0.0  # the share of the shot the camera stays at `middle`


@dataclass(frozen=True, slots=True)
class ClipSpec:
    width: int
    height: int
    fps: int
    seconds: float
    cut: bool = False
    leave_reenter: bool = False


def make_clip(
    photo_path: Path, out: Path, boxes: Sequence[Box], spec: ClipSpec
) -> dict[str, object]:
    """Write the clip to `out` and its boxes to `out` with `.boxes.json`; returns them."""
    photo = cv2.cvtColor(_read(photo_path), cv2.COLOR_BGR2RGB)
    shots = plan_shots(photo.shape[1], photo.shape[0], boxes, spec)
    frames = round(spec.seconds * spec.fps)
    record: dict[str, object] = {
        "photo": photo_path.name,
        "width": spec.width,
        "height": spec.height,
        "fps": spec.fps,
        "frames": frames,
        "upscaled": bool(min(s.end.width for s in shots) < spec.width),
        "cuts": [],
        "boxes": [],
    }
    cuts: list[int] = record["cuts"]  # type: ignore[assignment]
    per_frame: list[list[list[float] | None]] = record["boxes"]  # type: ignore[assignment]
    mirrored = cv2.flip(photo, 1)
    with av.open(str(out), "w", format="mp4", options={"movflags": "use_metadata_tags"}) as box:
        box.metadata.update(PHONE_METADATA)
        video = box.add_stream("libx264", rate=spec.fps)
        video.width, video.height, video.pix_fmt = spec.width, spec.height, "yuv420p"
        video.options = {"crf": "20", "preset": "veryfast"}
        video.metadata["creation_time"] = CREATION_TIME
        audio = box.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "stereo"
        audio.metadata["creation_time"] = CREATION_TIME
        tone = _Tone(box, audio, spec.seconds)
        previous_shot = 0
        for index, (shot_no, view, shot) in enumerate(_views(shots, frames)):
            if shot_no != previous_shot:
                cuts.append(index)
                previous_shot = shot_no
            source = mirrored if shot.mirrored else photo
            matrix = _matrix(view, spec)
            image = cv2.warpAffine(source, matrix, (spec.width, spec.height), flags=cv2.INTER_AREA)
            per_frame.append(
                [
                    _in_frame(
                        _map(_mirror(b, photo.shape[1]) if shot.mirrored else b, matrix), spec
                    )
                    for b in boxes
                ]
            )
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, spec.fps)
            box.mux(video.encode(frame))
            tone.write_until((index + 1) / spec.fps)
        box.mux(video.encode(None))
        tone.finish()
    Path(f"{out}.boxes.json").write_text(json.dumps(record))
    return record


def plan_shots(photo_w: int, photo_h: int, boxes: Sequence[Box], spec: ClipSpec) -> list[Shot]:
    """The camera's shots: a pan from wide to the first face (or, with `leave_reenter`,
    from the face to the farthest view without it and back), then with `cut` a second
    shot on the mirrored photo zooming in."""
    aspect = spec.width / spec.height
    wide = min(photo_w, photo_h * aspect)
    x0, y0, x1, y1 = boxes[0]
    # Close: the face about 1/2.5 of the frame's height, within 35-80% of the wide view.
    close_w = min(max((y1 - y0) * 2.5 * aspect, wide * 0.35), wide * 0.8)
    face = View((x0 + x1) / 2, (y0 + y1) / 2, close_w)

    def clamp(view: View) -> View:
        half_w, half_h = view.width / 2, view.width / aspect / 2
        return View(
            min(max(view.cx, half_w), photo_w - half_w),
            min(max(view.cy, half_h), photo_h - half_h),
            view.width,
        )

    if spec.leave_reenter:
        # To the side with more room, close enough that the whole face leaves the crop.
        room_left, room_right = x0, photo_w - x1
        width = min(close_w, 0.95 * max(room_left, room_right))
        away_x = x0 - width / 2 - 1 if room_left > room_right else x1 + width / 2 + 1
        close = clamp(View(face.cx, face.cy, width))
        first = Shot(False, close, clamp(View(away_x, face.cy, width)), close, hold=0.2)
    else:
        start = View(photo_w / 2, photo_h / 2, wide)
        mid = View((start.cx + face.cx) / 2, (start.cy + face.cy) / 2, (wide + close_w) / 2)
        first = Shot(False, clamp(start), clamp(mid), clamp(face))
    if not spec.cut:
        return [first]
    mx, drift = photo_w - face.cx, close_w * 0.1
    second = Shot(
        True,
        clamp(View(mx, face.cy, min(wide, close_w * 1.3))),
        clamp(View(mx + drift, face.cy, min(wide, close_w * 1.15))),
        clamp(View(mx - drift, face.cy, close_w)),
    )
    return [first, second]


def _views(shots: Sequence[Shot], frames: int) -> Iterator[tuple[int, View, Shot]]:
    for index in range(frames):
        shot_no = _views_shot(shots, frames, index)
        per_shot = frames / len(shots)
        u = (index - shot_no * per_shot) / max(per_shot - 1, 1)
        yield shot_no, _at(shots[shot_no], min(max(u, 0.0), 1.0)), shots[shot_no]


def _views_shot(shots: Sequence[Shot], frames: int, index: int) -> int:
    return min(int(index * len(shots) / frames), len(shots) - 1)


def _at(shot: Shot, u: float) -> View:
    """The view at `u` in [0, 1] of the shot: eased start -> middle, hold, -> end."""
    go = (1 - shot.hold) / 2
    if u <= go:
        return _lerp(shot.start, shot.middle, _ease(u / go))
    if u <= go + shot.hold:
        return shot.middle
    return _lerp(shot.middle, shot.end, _ease((u - go - shot.hold) / go))


def _ease(u: float) -> float:
    return u * u * (3 - 2 * u)


def _lerp(a: View, b: View, w: float) -> View:
    return View(
        a.cx + (b.cx - a.cx) * w, a.cy + (b.cy - a.cy) * w, a.width + (b.width - a.width) * w
    )


def _matrix(view: View, spec: ClipSpec) -> npt.NDArray[np.float64]:
    scale = spec.width / view.width
    return np.array(
        [
            [scale, 0.0, spec.width / 2 - view.cx * scale],
            [0.0, scale, spec.height / 2 - view.cy * scale],
        ]
    )


def _map(box: Box, matrix: npt.NDArray[np.float64]) -> Box:
    s, ox, oy = float(matrix[0, 0]), float(matrix[0, 2]), float(matrix[1, 2])
    return box[0] * s + ox, box[1] * s + oy, box[2] * s + ox, box[3] * s + oy


def _mirror(box: Box, photo_w: int) -> Box:
    return photo_w - box[2], box[1], photo_w - box[0], box[3]


def _in_frame(box: Box, spec: ClipSpec) -> list[float] | None:
    """The box, or None when none of it is in the frame."""
    if box[2] <= 0 or box[3] <= 0 or box[0] >= spec.width or box[1] >= spec.height:
        return None
    return [round(v, 2) for v in box]


class _Tone:
    """A 440 Hz tone on both channels, encoded as the video goes so the two interleave."""

    FRAME_SAMPLES = 1024

    def __init__(
        self, box: av.container.OutputContainer, stream: av.AudioStream, seconds: float
    ) -> None:
        t = np.arange(round(seconds * AUDIO_RATE)) / AUDIO_RATE
        mono = (0.2 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
        self._samples = np.stack([mono, mono])
        self._box, self._stream, self._done = box, stream, 0

    def write_until(self, time_s: float) -> None:
        stop = min(self._samples.shape[1], int(time_s * AUDIO_RATE))
        while self._done + self.FRAME_SAMPLES <= stop:
            self._write(self.FRAME_SAMPLES)

    def finish(self) -> None:
        while self._done < self._samples.shape[1]:
            self._write(min(self.FRAME_SAMPLES, self._samples.shape[1] - self._done))
        self._box.mux(self._stream.encode(None))

    def _write(self, samples: int) -> None:
        chunk = np.ascontiguousarray(self._samples[:, self._done : self._done + samples])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = AUDIO_RATE, self._done
        frame.time_base = Fraction(1, AUDIO_RATE)
        self._box.mux(self._stream.encode(frame))
        self._done += samples


def _read(path: Path) -> Image:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read the photo {path}")
    return image
