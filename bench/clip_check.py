"""What an anonymized clip exposes, read from its pixels (`bench/video.py check`).

The output must be rendered in solid mode (every hidden pixel set to one colour, black
by default, as ours and deface's `--replacewith solid` do). Input and output are decoded
side by side, frame by frame; the input is the clip as the tool read it, i.e. the photo
rendered by the virtual camera and encoded once.

The pixel rule, robust to encoding noise: a pixel is *informative* when the input
differs from the solid colour by more than `INFORMATIVE` (a pixel already about that
colour would look hidden whatever the tool did, so it counts for neither side); an
informative pixel is *hidden* when the output is within `HIDDEN` of the solid colour
(max over R, G, B). H.264 at the qualities tools write moves flat areas by a few levels
and edges by 10-20, so the gap between 24 and 48 keeps an exposed pixel from passing for
hidden and a hidden one from passing for exposed, but at the very edge of a mask.

A face counts in a frame when at least half of its box is inside the frame; its size is
the box's height. It is *exposed* when less than 80% of the informative pixels of its
box (clipped to the frame) are hidden. A *flash* is a run of exposed frames of one face
with hidden frames on both sides (in the frames where it counts, >= 20 px).
An output whose frames are another size (deface writes 1080p as 1920 x 1088) is scaled
back to the input's size and judged so; `output_size` says so.
*Background hidden* is the share of informative pixels outside every face box that are
hidden (the masks' own margin around a face counts there, for every tool alike).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

INFORMATIVE = 48
HIDDEN = 24
HIDDEN_SHARE = 0.8
SIZES = (20, 40)
WATCHED_METADATA = ("location", "iso6709", "creation", "make", "model", "date", "gps")


@dataclass
class _Face:
    states: list[bool] = field(default_factory=list)  # hidden, per counted frame >= 20 px


@dataclass
class Report:
    frames: int = 0
    pairs: dict[int, int] = field(default_factory=lambda: dict.fromkeys(SIZES, 0))
    exposed: dict[int, int] = field(default_factory=lambda: dict.fromkeys(SIZES, 0))
    background_hidden: int = 0
    background: int = 0
    faces: list[_Face] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        flashes = [_flashes(f.states) for f in self.faces]
        return {
            "frames": self.frames,
            **{f"face_frames_{s}": self.pairs[s] for s in SIZES},
            **{f"exposed_face_frames_{s}": self.exposed[s] / max(self.pairs[s], 1) for s in SIZES},
            "flashes": sum(flashes),
            "flashes_per_face": flashes,
            "background_hidden": self.background_hidden / max(self.background, 1),
            "background_pixels": self.background,
        }


def check(
    clip: Path, output: Path, boxes_file: Path, *, solid: tuple[int, int, int] = (0, 0, 0)
) -> dict[str, Any]:
    """The figures of one output against its input clip and the clip's face boxes."""
    truth = json.loads(boxes_file.read_text())
    per_frame: list[list[list[float] | None]] = truth["boxes"]
    report = Report(faces=[_Face() for _ in (per_frame[0] if per_frame else [])])
    colour = np.array(solid, dtype=np.int16)
    resized_from = None
    for index, (before, after) in enumerate(zip(_frames(clip), _frames(output), strict=False)):
        if before.shape != after.shape:
            # deface's writer (imageio-ffmpeg) scales frames to a multiple of 16 pixels
            # (1080 -> 1088 rows): judge what it wrote scaled back to the input's size.
            resized_from = after.shape[1::-1]
            after = cv2.resize(after, before.shape[1::-1], interpolation=cv2.INTER_AREA)
        boxes = per_frame[index] if index < len(per_frame) else []
        _score_frame(report, before, after, boxes, colour)
    summary = report.summary()
    summary["output_size"] = list(resized_from) if resized_from else None
    summary["input_frames"] = _count(clip)
    summary["output_frames"] = _count(output)
    # Frames are paired by order: a dropped or added frame shifts every pair after it.
    summary["frames_match"] = summary["input_frames"] == summary["output_frames"]
    summary.update(_streams(clip, output))
    return summary


def _score_frame(
    report: Report,
    before: npt.NDArray[np.uint8],
    after: npt.NDArray[np.uint8],
    boxes: Sequence[list[float] | None],
    colour: npt.NDArray[np.int16],
) -> None:
    report.frames += 1
    informative = np.abs(before.astype(np.int16) - colour).max(axis=2) > INFORMATIVE
    hidden = np.abs(after.astype(np.int16) - colour).max(axis=2) <= HIDDEN
    height, width = informative.shape
    outside = np.ones_like(informative)
    for face_no, box in enumerate(boxes):
        if box is None:
            continue
        x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
        x1, y1 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
        if x1 <= x0 or y1 <= y0:
            continue
        outside[y0:y1, x0:x1] = False
        area = (box[2] - box[0]) * (box[3] - box[1])
        if (x1 - x0) * (y1 - y0) < area / 2:
            continue  # mostly outside the frame
        info = informative[y0:y1, x0:x1]
        seen = hidden[y0:y1, x0:x1]
        # A face of (almost) only solid-coloured pixels: judge all of its pixels.
        share = float(seen[info].mean()) if info.sum() >= info.size * 0.1 else float(seen.mean())
        is_hidden = share >= HIDDEN_SHARE
        size = box[3] - box[1]
        for limit in SIZES:
            if size >= limit:
                report.pairs[limit] += 1
                report.exposed[limit] += not is_hidden
        if size >= SIZES[0] and face_no < len(report.faces):
            report.faces[face_no].states.append(is_hidden)
    background = informative & outside
    report.background += int(background.sum())
    report.background_hidden += int((background & hidden).sum())


def _flashes(states: Sequence[bool]) -> int:
    """Runs of exposed frames with hidden frames on both sides."""
    flashes, seen_hidden, in_exposed_run = 0, False, False
    for is_hidden in states:
        if is_hidden:
            if seen_hidden and in_exposed_run:
                flashes += 1
            seen_hidden, in_exposed_run = True, False
        else:
            in_exposed_run = True
    return flashes


def _frames(path: Path) -> Iterator[npt.NDArray[np.uint8]]:
    with av.open(str(path)) as box:
        for frame in box.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def _count(path: Path) -> int:
    with av.open(str(path)) as box:
        return sum(1 for _ in box.demux(video=0) if _.size)


def _streams(clip: Path, output: Path) -> dict[str, Any]:
    """The sound (kept when the output has an audio stream about as long as the input's)
    and every metadata entry the output still carries that could place or date it."""
    with av.open(str(clip)) as before, av.open(str(output)) as after:
        audio_in = [s for s in before.streams if s.type == "audio"]
        audio_out = [s for s in after.streams if s.type == "audio"]
        entries = {f"container:{k}": v for k, v in after.metadata.items()}
        for stream in after.streams:
            entries.update(
                {f"{stream.type}{stream.index}:{k}": v for k, v in stream.metadata.items()}
            )
        left = {k: v for k, v in entries.items() if any(w in k.lower() for w in WATCHED_METADATA)}
        return {
            "audio_in": [s.codec_context.name for s in audio_in],
            "audio_out": [s.codec_context.name for s in audio_out],
            "sound_kept": bool(audio_in) and len(audio_out) >= len(audio_in),
            "metadata_left": left,
            "metadata_all": entries,
        }
