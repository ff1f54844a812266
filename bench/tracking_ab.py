#!/usr/bin/env python3
"""Which linker to track faces with: ours against maintained libraries, on generated scenes.

    PYTHONPATH=src python bench/tracking_ab.py [--scenes 200] [--seed 1] [--json]

Generated scenes (labelled as such): 1-4 faces of 24-120 px on random walks (smooth
velocity changes, some crossing), entering and leaving at random frames, detected with
2 px jitter and random scores, missed in bursts of 1-12 frames (flashes, occlusions), 0-3
isolated false boxes per scene; 150 frames at 30 frames/s, detection on every frame or
every 3rd. Each linker only assigns sightings to tracks: the same `TrackPlan` rule
(interpolation, rolls, growth; default `TrackSettings`) then hides every track, so the
figures compare linking alone. A sighting a library leaves without a track becomes a
track of its own (hidden in its frame and rolls), so no linker hides less than the
per-frame plan at the sightings.

Linkers: `ours` (`imageblur.video.tracking.build_plan`); `norfair` (BSD-3, IoU distance,
no initialization delay); `bytetrack` (the `trackers` package, Apache-2.0: supervision's
ByteTrack moved there; one consecutive frame to activate); `per-frame` (no tracking).
The libraries are not the project's dependencies: run this in a virtual environment that
has them (norfair needs numpy < 2, which the project does not use); those missing are
skipped. Figures: exposed face-frames (true box less than 80% covered by one hidden
box), flashes (runs of exposed frames between hidden ones, per face), false-box area
(hidden area outside every true face, per frame, in true-face areas), fragments (tracks
per true face, minus one), linking time per looked-at frame.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from imageblur.domain import Face
from imageblur.video.sightings import FrameSightings, HiddenBox, MaskPlan, PerFramePlan
from imageblur.video.track_plan import Key, PlanTrack, TrackPlan, TrackSettings
from imageblur.video.tracking import build_plan

FPS = 30.0
FRAMES = 150
Truth = list[list[tuple[float, float, float, float] | None]]  # per frame, per face
Labels = dict[tuple[int, int], int]  # (frame, detection number) -> true face (-1: false)
Linker = Callable[[Sequence[FrameSightings], int], MaskPlan]


@dataclass
class Scene:
    truth: Truth
    frames: list[FrameSightings]
    labels: Labels
    stride: int


def make_scene(rng: random.Random) -> Scene:
    faces = rng.randint(1, 4)
    stride = rng.choice((1, 3))
    truth: Truth = [[None] * faces for _ in range(FRAMES)]
    for n in range(faces):
        size = rng.uniform(24, 120)
        start = rng.choice((0, rng.randint(0, 60)))
        end = rng.choice((FRAMES, rng.randint(90, FRAMES)))
        x, y = rng.uniform(100, 1180), rng.uniform(100, 620)
        vx, vy = rng.uniform(-8, 8), rng.uniform(-3, 3)
        for i in range(FRAMES):
            if start <= i < end:
                truth[i][n] = (x - size / 2, y - size / 2, x + size / 2, y + size / 2)
            vx = max(-10.0, min(10.0, vx + rng.uniform(-0.6, 0.6)))
            vy = max(-4.0, min(4.0, vy + rng.uniform(-0.3, 0.3)))
            x, y = x + vx, y + vy
    missed = {(n, i) for n in range(faces) for i in _bursts(rng)}
    false = {rng.randrange(FRAMES): _false_box(rng) for _ in range(rng.randint(0, 3))}
    frames, labels = [], {}
    for i in range(0, FRAMES, stride):
        seen: list[Face] = []
        for n, box in enumerate(truth[i]):
            if box is not None and (n, i) not in missed:
                j = [rng.uniform(-2, 2) for _ in range(4)]
                labels[i, len(seen)] = n
                seen.append(
                    Face(*(v + d for v, d in zip(box, j, strict=True)), score=rng.uniform(0.3, 1.0))
                )
        if i in false:
            labels[i, len(seen)] = -1
            seen.append(false[i])
        frames.append(FrameSightings(i, i / FPS, tuple(seen)))
    return Scene(truth, frames, labels, stride)


def _bursts(rng: random.Random) -> set[int]:
    out: set[int] = set()
    for _ in range(rng.randint(0, 4)):
        start = rng.randrange(FRAMES)
        out.update(range(start, start + rng.randint(1, 12)))
    return out


def _false_box(rng: random.Random) -> Face:
    x, y, s = rng.uniform(0, 1200), rng.uniform(0, 650), rng.uniform(20, 60)
    return Face(x, y, x + s, y + s, rng.uniform(0.3, 0.6))


def ours(frames: Sequence[FrameSightings], stride: int) -> MaskPlan:
    return build_plan(frames)


def per_frame(frames: Sequence[FrameSightings], stride: int) -> MaskPlan:
    return PerFramePlan(frames)


def norfair_linker(frames: Sequence[FrameSightings], stride: int) -> MaskPlan:
    import norfair  # not a dependency of the project
    import numpy as np

    gap_frames = round(TrackSettings().max_gap_s * FPS / stride)
    tracker = norfair.Tracker(
        distance_function="iou",
        distance_threshold=0.95,
        hit_counter_max=max(gap_frames, 1),
        initialization_delay=0,
    )
    ids: dict[tuple[int, int], int] = {}
    for frame in frames:
        detections = [
            norfair.Detection(np.array([[f.x0, f.y0], [f.x1, f.y1]]), data=k)
            for k, f in enumerate(frame.faces)
        ]
        for obj in tracker.update(detections, period=stride):
            last = obj.last_detection
            if any(last is d for d in detections):
                ids[frame.index, last.data] = obj.id
    return _plan_of(frames, ids)


def bytetrack_linker(frames: Sequence[FrameSightings], stride: int) -> MaskPlan:
    import numpy as np
    import supervision as sv
    import trackers

    tracker = trackers.ByteTrackTracker(
        lost_track_buffer=round(TrackSettings().max_gap_s * FPS),
        frame_rate=FPS / stride,
        track_activation_threshold=0.3,
        minimum_consecutive_frames=1,
        high_conf_det_threshold=0.5,
    )
    ids: dict[tuple[int, int], int] = {}
    for frame in frames:
        boxes = np.array([[f.x0, f.y0, f.x1, f.y1] for f in frame.faces], float).reshape(-1, 4)
        detections = sv.Detections(
            xyxy=boxes,
            confidence=np.array([f.score for f in frame.faces], float),
            class_id=np.zeros(len(frame.faces), int),
        )
        result = tracker.update(detections)
        for box, track_id in zip(result.xyxy, result.tracker_id, strict=True):
            if track_id >= 0:
                k = int(np.abs(boxes - box).sum(axis=1).argmin())
                ids[frame.index, k] = int(track_id)
    return _plan_of(frames, ids)


def _plan_of(frames: Sequence[FrameSightings], ids: dict[tuple[int, int], int]) -> TrackPlan:
    """A plan from a library's track ids: the same hiding rule as ours."""
    keys: dict[int, list[Key]] = {}
    lone = -1
    for frame in frames:
        for k, face in enumerate(frame.faces):
            track = ids.get((frame.index, k))
            if track is None:
                track, lone = lone, lone - 1
            keys.setdefault(track, []).append(Key.of(frame.index, frame.time_s, face))
    tracks = [PlanTrack(n, "face", tuple(ks)) for n, ks in enumerate(keys.values())]
    return TrackPlan(tracks, TrackSettings())


@dataclass
class Tally:
    face_frames: int = 0
    exposed: int = 0
    flashes: int = 0
    false_area: float = 0.0
    face_area: float = 0.0
    frames: int = 0
    fragments: int = 0
    link_s: float = 0.0
    looked: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, float]:
        return {
            "exposed_face_frames": self.exposed / max(self.face_frames, 1),
            "flashes": self.flashes,
            "false_box_area": self.false_area / max(self.face_area, 1.0),
            "fragments": self.fragments,
            "link_ms_per_frame": 1000 * self.link_s / max(self.looked, 1),
        }


def score(scene: Scene, plan: MaskPlan, tally: Tally) -> None:
    faces = len(scene.truth[0])
    states: list[list[bool]] = [[] for _ in range(faces)]
    for i, truth in enumerate(scene.truth):
        hidden = plan.boxes_at(i, i / FPS)
        true_boxes = [b for b in truth if b is not None]
        for n, box in enumerate(truth):
            if box is not None:
                ok = _covered(box, hidden) >= 0.8
                tally.face_frames += 1
                tally.exposed += not ok
                states[n].append(ok)
                tally.face_area += (box[2] - box[0]) * (box[3] - box[1])
        for h in hidden:
            area = h.face.width * h.face.height
            tally.false_area += max(0.0, area - sum(_overlap(h.face, b) for b in true_boxes))
        tally.frames += 1
    tally.flashes += sum(_flashes(s) for s in states)
    if isinstance(plan, TrackPlan):
        tally.fragments += _fragments(scene, plan)


def _fragments(scene: Scene, plan: TrackPlan) -> int:
    per_face: dict[int, set[int]] = {}
    for frame in scene.frames:
        hidden = plan.boxes_at(frame.index, frame.time_s)
        for k, face in enumerate(frame.faces):
            n = scene.labels[frame.index, k]
            track = next((h.track for h in hidden if h.face == face), None)
            if n >= 0 and track is not None:
                per_face.setdefault(n, set()).add(track)
    return sum(len(t) - 1 for t in per_face.values())


def _covered(box: tuple[float, float, float, float], hidden: Sequence[HiddenBox]) -> float:
    area = (box[2] - box[0]) * (box[3] - box[1])
    return max((_overlap(h.face, box) / area for h in hidden), default=0.0)


def _overlap(face: Face, box: tuple[float, float, float, float]) -> float:
    w = min(face.x1, box[2]) - max(face.x0, box[0])
    h = min(face.y1, box[3]) - max(face.y0, box[1])
    return w * h if w > 0 and h > 0 else 0.0


def _flashes(states: Sequence[bool]) -> int:
    count, seen_hidden, exposed_run = 0, False, False
    for ok in states:
        if ok:
            count += seen_hidden and exposed_run
            seen_hidden, exposed_run = True, False
        else:
            exposed_run = True
    return count


LINKERS: dict[str, Linker] = {
    "per-frame": per_frame,
    "ours": ours,
    "norfair": norfair_linker,
    "bytetrack": bytetrack_linker,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    scenes = [make_scene(rng) for _ in range(args.scenes)]
    tallies: dict[str, Tally] = {}
    for name, linker in LINKERS.items():
        tally = tallies[name] = Tally()
        try:
            for scene in scenes:
                started = time.perf_counter()
                plan = linker(scene.frames, scene.stride)
                tally.link_s += time.perf_counter() - started
                tally.looked += len(scene.frames)
                score(scene, plan, tally)
        except ImportError as exc:
            del tallies[name]
            print(f"{name}: skipped ({exc})")
    rows = {name: t.row() for name, t in tallies.items()}
    if args.json:
        print(json.dumps({"scenes": args.scenes, "seed": args.seed, "linkers": rows}))
        return
    print(f"{args.scenes} generated scenes, seed {args.seed}")
    print(
        f"{'linker':<10} {'exposed':>8} {'flashes':>8} {'false area':>10} "
        f"{'fragments':>9} {'ms/frame':>8}"
    )
    for name, r in rows.items():
        print(
            f"{name:<10} {r['exposed_face_frames']:>8.2%} {r['flashes']:>8} "
            f"{r['false_box_area']:>10.3f} {r['fragments']:>9} {r['link_ms_per_frame']:>8.3f}"
        )


if __name__ == "__main__":
    main()
