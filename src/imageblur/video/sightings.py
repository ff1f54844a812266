"""What the detection pass hands to tracking, and what rendering asks of it.

Pass 1 decodes the video and detects on (every n-th) upright frame, giving one
`FrameSightings` per frame it looked at, in presentation order. A `MaskPlan` built
from them answers, for every frame pass 2 renders, which boxes to hide there. The
per-frame plan hides exactly what was detected in that frame; the tracking plan
(`video.tracking`) also hides a face between its sightings, before and after them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from imageblur.domain import Face

Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class CameraMotion:
    """Maps a point of the previous looked-at frame to this frame (upright pixels):
    x' = scale * x + dx, y' = scale * y + dy."""

    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0

    def box(self, box: Box) -> Box:
        """Where a box of the previous frame is in this one."""
        s = self.scale
        return (
            s * box[0] + self.dx,
            s * box[1] + self.dy,
            s * box[2] + self.dx,
            s * box[3] + self.dy,
        )

    def inverse(self) -> CameraMotion:
        """The motion from this frame back to the previous one."""
        return CameraMotion(1.0 / self.scale, -self.dx / self.scale, -self.dy / self.scale)


@dataclass(frozen=True, slots=True)
class FrameSightings:
    """The detections of one frame that was looked at. `index` counts decoded frames
    from 0 in presentation order; `time_s` is its presentation time; `cut` marks the
    first frame of a new shot (no track crosses it). `motion` is the camera's motion
    from the previous looked-at frame to this one, None when unknown (the first frame,
    a cut, a frame with too little texture): tracking moves a lost face's box with it.
    `closer`: per face (in `faces`' order), the score of a second, finer look at its
    box (`detection.pyramid.CloserLook`), None where none was taken; empty: none at
    all. Tracking hides a faint track beyond its sightings only if one confirmed it."""

    index: int
    time_s: float
    faces: tuple[Face, ...]
    cut: bool = False
    motion: CameraMotion | None = None
    closer: tuple[float | None, ...] = ()

    def closer_of(self, face_no: int) -> float | None:
        """The second look's score of `faces[face_no]`, None if it had none."""
        return self.closer[face_no] if face_no < len(self.closer) else None


@dataclass(frozen=True, slots=True)
class HiddenBox:
    """A box to hide in one frame, in pixels of the upright frame (may reach past its
    edges: the renderer clips). `track` names the face track it belongs to (-1 when
    the plan has no tracks)."""

    face: Face
    track: int = -1


class MaskPlan(Protocol):
    """Which boxes to hide in each rendered frame."""

    @property
    def tracks(self) -> int:
        """How many distinct faces (tracks) the plan hides: a record's `faces`."""

    def boxes_at(self, index: int, time_s: float) -> Sequence[HiddenBox]:
        """The boxes to hide in frame `index` (presentation time `time_s`)."""


class PerFramePlan:
    """Hides each frame's own detections only: the open tools' behaviour, kept as the
    benchmark's baseline and as `tracking off`."""

    def __init__(self, frames: Sequence[FrameSightings]) -> None:
        self._by_index = {f.index: f.faces for f in frames}

    @property
    def tracks(self) -> int:
        return max((len(faces) for faces in self._by_index.values()), default=0)

    def boxes_at(self, index: int, time_s: float) -> Sequence[HiddenBox]:
        return [HiddenBox(face) for face in self._by_index.get(index, ())]


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes: how the linker and the
    second look's chaining both measure overlap."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
