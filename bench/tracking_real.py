#!/usr/bin/env python3
"""Tracking against the per-frame plan, with the real detector on generated clips.

    python bench/tracking_real.py DATASET_DIR [--clips 12] [--size 1280x720] [--fps 30]
        [--seconds 4] [--strides 1,2,3,5] [--coasts 0,2,4] [--work DIR]
        [--set FIELD=VALUE ...] [--json]

Clips (generated, `bench/clip_camera.py`) from the first `--clips` photos by path of a
dataset in WIDER FACE layout (e.g. ../shared/wider-face-dev; ~1024 px photos are
upscaled), every third with a cut, every third with the main face leaving and
re-entering the frame; their valid faces are the truth. Every frame is detected once
with the worker's detector and settings (`bootstrap.build_detector`, the preset
applied); detection on every n-th frame is simulated by keeping those frames'
sightings. A cut is flagged on the first looked-at frame at or after the clip's true
cut (a stand-in for a cut detector). The camera's motion between looked-at frames is
measured as the detection pass does (`video.motion`); `--coasts` plans tracking with
each of these `coast_s` (how long a lost track follows the camera). Plans: `per-frame`
(every frame detected, tracking off), `tracked` at each stride
(`video.tracking.build_plan`, default settings but for `--set`) and with `--uncertain`
`confirmed` at each stride (the detector's uncertain candidates added, a track kept
when one of its sightings is a detection the detector hides; see `_sightings`). With
`--work DIR` the clips and their detections are kept there, and a second run with the
same DIR reuses them (a settings sweep without detecting again).

Figures from the masks the worker would draw (`blurring.mask_outlines` with the
worker's geometry), not from encoded pixels: exposed face-frames (faces >= 20 px and
>= 40 px tall with at least half of the box in the frame, less than 80% of the box
hidden), flashes (per face, runs of exposed frames between hidden ones), background
hidden (share of pixels outside every true face box that a mask covers).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import av
import numpy as np
from clip_camera import Box, ClipSpec, make_clip
from detection import read_truth
from provenance import measured_commit

from imageblur.blurring import full_mask, mask_outlines
from imageblur.bootstrap import build_detector
from imageblur.config import Settings
from imageblur.domain import Face, MaskGeometry
from imageblur.ports import RegionDetector
from imageblur.video.motion import MotionEstimator
from imageblur.video.sightings import CameraMotion, FrameSightings, MaskPlan, PerFramePlan
from imageblur.video.tracking import TrackSettings, build_plan

SIZES = (20, 40)


@dataclass
class Tally:
    pairs: dict[int, int] = field(default_factory=lambda: dict.fromkeys(SIZES, 0))
    exposed: dict[int, int] = field(default_factory=lambda: dict.fromkeys(SIZES, 0))
    flashes: int = 0
    background: int = 0
    background_hidden: int = 0

    def row(self) -> dict[str, float]:
        return {
            **{f"exposed_{s}": self.exposed[s] / max(self.pairs[s], 1) for s in SIZES},
            **{f"face_frames_{s}": self.pairs[s] for s in SIZES},
            "flashes": self.flashes,
            "background_hidden": self.background_hidden / max(self.background, 1),
        }


@dataclass
class Clip:
    path: Path
    width: int
    height: int
    times: list[float]
    detections: list[list[Face]]
    uncertain: list[list[Face]]  # below the detector's threshold, above its floor
    truth: list[list[list[float] | None]]
    cuts: list[int]


def main() -> None:
    args = _parser().parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    strides = [int(v) for v in args.strides.split(",")]
    coasts = [float(v) for v in args.coasts.split(",")] if args.coasts else [None]
    settings = Settings()
    detector = build_detector(settings)
    geometry = MaskGeometry(
        scale=settings.mask_scale, margin_px=settings.mask_margin_px, shape=settings.mask_shape
    )
    tracking = TrackSettings(**{k: float(v) for k, v in (o.split("=") for o in args.set)})
    jobs = clip_jobs(args.dataset, args.clips, (width, height), args.fps, args.seconds)
    work = Path(args.work or tempfile.mkdtemp(prefix="tracking-real-"))
    work.mkdir(parents=True, exist_ok=True)
    tallies: dict[str, Tally] = {}
    detect_s, frames_total = 0.0, 0
    for job in jobs:
        out = work / job.name
        cached = Path(f"{out}.detections.json")
        if cached.exists():  # a kept --work folder: the same clip, detected before
            clip = _clip_of(json.loads(cached.read_text()))
        else:
            record = make_clip(job.photo, out, job.boxes, job.spec)
            started = time.perf_counter()
            clip = _detected(out, record, detector)
            detect_s += time.perf_counter() - started
            frames_total += len(clip.times)
            cached.write_text(json.dumps(_json_of(clip)))
        plans: dict[str, MaskPlan] = {"per-frame": PerFramePlan(_sightings(clip, 1))}
        for stride in strides:
            motions = _motions(out, clip, stride)
            for coast in coasts:
                coasting = tracking if coast is None else replace(tracking, coast_s=coast)
                name = f"tracked/{stride}" + ("" if coast is None else f" coast {coast:g}")
                plans[name] = build_plan(_sightings(clip, stride, motions), coasting)
            if args.uncertain:
                confirmed = replace(tracking, confirm_score=0.5)
                sightings = _sightings(clip, stride, motions, uncertain=True)
                plans[f"confirmed/{stride}"] = build_plan(sightings, confirmed)
        for name, plan in plans.items():
            _score(clip, plan, geometry, tallies.setdefault(name, Tally()))
    report = {
        "commit": measured_commit(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "clips": len(jobs),
        "size": args.size,
        "seconds": args.seconds,
        "tracking": asdict(tracking),
        "detect_frames_per_s": frames_total / max(detect_s, 1e-9),
        "plans": {name: t.row() for name, t in tallies.items()},
    }
    print(json.dumps(report) if args.json else _table(report))


@dataclass(frozen=True)
class ClipJob:
    """One benchmark clip to make: from `photo`, the camera following `boxes[0]`."""

    name: str
    photo: Path
    boxes: list[Box]
    spec: ClipSpec


def clip_jobs(
    dataset: Path, clips: int, size: tuple[int, int], fps: int, seconds: float
) -> list[ClipJob]:
    """The benchmark's clips: the first `clips` photos by path with a valid face, every
    third with a cut, every third with the main face leaving and re-entering."""
    photos = [t for t in read_truth(dataset) if (~t.invalid).any()][:clips]
    jobs = []
    for number, truth in enumerate(photos):
        boxes: list[Box] = [
            (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
            for b in truth.boxes[~truth.invalid]
        ]
        boxes.sort(key=lambda b: -(b[3] - b[1]))  # the camera follows the largest face
        spec = ClipSpec(*size, fps, seconds, number % 3 == 1, number % 3 == 2)
        jobs.append(ClipJob(f"clip{number:02d}.mp4", dataset / "images" / truth.name, boxes, spec))
    return jobs


def _detected(path: Path, record: dict[str, Any], detector: Any) -> Clip:
    times: list[float] = []
    detections: list[list[Face]] = []
    uncertain: list[list[Face]] = []
    with av.open(str(path)) as box:
        for frame in box.decode(video=0):
            times.append(float(frame.time or 0.0))
            image = frame.to_ndarray(format="rgb24")
            hidden, unsure = (
                detector.detect_regions(image)
                if isinstance(detector, RegionDetector)
                else (detector.detect(image), [])
            )
            detections.append(hidden)
            uncertain.append(unsure)
    return Clip(
        path,
        int(record["width"]),
        int(record["height"]),
        times,
        detections,
        uncertain,
        record["boxes"],
        list(record["cuts"]),
    )


def _json_of(clip: Clip) -> dict[str, Any]:
    return {
        "width": clip.width,
        "height": clip.height,
        "times": clip.times,
        "detections": [[[f.x0, f.y0, f.x1, f.y1, f.score] for f in fs] for fs in clip.detections],
        "uncertain": [[[f.x0, f.y0, f.x1, f.y1, f.score] for f in fs] for fs in clip.uncertain],
        "truth": clip.truth,
        "cuts": clip.cuts,
    }


def _clip_of(data: dict[str, Any]) -> Clip:
    detections = [[Face(*row) for row in fs] for fs in data["detections"]]
    uncertain = [[Face(*row) for row in fs] for fs in data.get("uncertain", [])]
    return Clip(
        Path(),
        data["width"],
        data["height"],
        data["times"],
        detections,
        uncertain or [[] for _ in detections],
        data["truth"],
        data["cuts"],
    )


def _motions(path: Path, clip: Clip, stride: int) -> list[CameraMotion | None]:
    """The camera's motion into each frame detection on every `stride`-th frame looks
    at, as the detection pass measures it (reset at the flagged cuts); cached beside
    the clip."""
    cached = Path(f"{path}.motion{stride}.json")
    if cached.exists():
        rows = json.loads(cached.read_text())
        return [None if r is None else CameraMotion(*r) for r in rows]
    looked, flagged = _looked(clip, stride)
    estimator, motions = MotionEstimator(), []
    with av.open(str(path)) as box:
        for i, frame in enumerate(box.decode(video=0)):
            if i in looked:
                if i in flagged:
                    estimator.reset()
                motions.append(estimator.estimate(frame.to_ndarray(format="rgb24")))
    rows = [None if m is None else [m.scale, m.dx, m.dy] for m in motions]
    cached.write_text(json.dumps(rows))
    return motions


def _looked(clip: Clip, stride: int) -> tuple[range, set[int]]:
    """The frames detection on every `stride`-th frame looks at, and those of them
    flagged as cuts (the first looked-at frame at or after a true cut)."""
    looked = range(0, len(clip.times), stride)
    return looked, {min((i for i in looked if i >= c), default=-1) for c in clip.cuts}


def _sightings(
    clip: Clip,
    stride: int,
    motions: Sequence[CameraMotion | None] = (),
    *,
    uncertain: bool = False,
) -> list[FrameSightings]:
    """The sightings detection on every `stride`-th frame would give. With `uncertain`,
    the detector's uncertain candidates too, scores mapped so that a hidden detection
    scores >= 0.5 and an uncertain one < 0.5 (the detector's thresholds depend on the
    box size, so no single score separates them): with `confirm_score=0.5` a track
    needs one detection the detector itself would hide. `motions`: the camera's, per
    looked-at frame (none: unknown)."""
    looked, flagged = _looked(clip, stride)

    def faces(i: int) -> tuple[Face, ...]:
        if not uncertain:
            return tuple(clip.detections[i])
        sure = [replace(f, score=0.5 + f.score / 2) for f in clip.detections[i]]
        return (*sure, *(replace(f, score=f.score / 2) for f in clip.uncertain[i]))

    def motion(k: int) -> CameraMotion | None:
        return motions[k] if k < len(motions) else None

    return [
        FrameSightings(i, clip.times[i], faces(i), cut=i in flagged, motion=motion(k))
        for k, i in enumerate(looked)
    ]


def _score(clip: Clip, plan: MaskPlan, geometry: MaskGeometry, tally: Tally) -> None:
    states: list[list[bool]] = [[] for _ in (clip.truth[0] if clip.truth else [])]
    for i, time_s in enumerate(clip.times):
        faces = [h.face for h in plan.boxes_at(i, time_s)]
        hidden = full_mask(
            mask_outlines(faces, clip.width, clip.height, geometry), clip.width, clip.height
        )
        outside = np.ones_like(hidden)
        for n, box in enumerate(clip.truth[i] if i < len(clip.truth) else []):
            if box is None:
                continue
            x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
            x1, y1 = min(clip.width, int(np.ceil(box[2]))), min(clip.height, int(np.ceil(box[3])))
            if x1 <= x0 or y1 <= y0:
                continue
            outside[y0:y1, x0:x1] = False
            if (x1 - x0) * (y1 - y0) < (box[2] - box[0]) * (box[3] - box[1]) / 2:
                continue
            ok = bool(hidden[y0:y1, x0:x1].mean() >= 0.8)
            size = box[3] - box[1]
            for limit in SIZES:
                if size >= limit:
                    tally.pairs[limit] += 1
                    tally.exposed[limit] += not ok
            if size >= SIZES[0]:
                states[n].append(ok)
        tally.background += int(outside.sum())
        tally.background_hidden += int((outside & hidden).sum())
    tally.flashes += sum(_flashes(s) for s in states)


def _flashes(states: Sequence[bool]) -> int:
    count, seen_hidden, exposed_run = 0, False, False
    for ok in states:
        if ok:
            count += seen_hidden and exposed_run
            seen_hidden, exposed_run = True, False
        else:
            exposed_run = True
    return count


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"commit {report['commit']}, {report['clips']} generated clips {report['size']}, "
        f"{report['seconds']} s, detection {report['detect_frames_per_s']:.1f} frames/s",
        f"{'plan':<18} {'exp>=20':>8} {'exp>=40':>8} {'flashes':>8} {'background':>10}",
    ]
    for name, r in report["plans"].items():
        lines.append(
            f"{name:<18} {r['exposed_20']:>8.2%} {r['exposed_40']:>8.2%} {r['flashes']:>8} "
            f"{r['background_hidden']:>10.2%}"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--strides", default="1,2,3,5")
    parser.add_argument("--work", default=None, help="keep the clips here")
    parser.add_argument(
        "--uncertain",
        action="store_true",
        help="also plan with the uncertain candidates, kept when a track confirms them",
    )
    parser.add_argument(
        "--coasts", default="", help="plan tracking with each of these coast_s (e.g. 0,2,4)"
    )
    parser.add_argument("--set", action="append", default=[], help="a TrackSettings field=value")
    parser.add_argument("--json", action="store_true")
    return parser


if __name__ == "__main__":
    main()
