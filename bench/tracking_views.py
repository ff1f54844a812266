#!/usr/bin/env python3
"""Tracking with the detector's view varied from one detected frame to the next.

    python bench/tracking_views.py DATASET_DIR [--clips 6] [--size 1280x720] [--fps 30]
        [--seconds 4] [--strides 1,2,3] [--rotations P,PM,PS,PMS,PMSX,PE,PME,PMSE]
        [--views PMSX] [--enlarged] [--work DIR] [--json]

The clips, truth and figures of `bench/tracking_real.py` (generated clips from the
first `--clips` photos of a dataset in WIDER FACE layout; figures from the masks the
worker would draw, not from encoded pixels). Every frame is detected once in each view
(`detection.pyramid.View`) with the worker's detector and settings: P plain, M mirrored,
S the scales after the finest shifted by 2 ** 0.5 (1, 0.71, 0.35 ... instead of 1, 0.5,
0.25 ...), X mirrored and shifted; with `--enlarged`, also E: the plain pyramid plus the
`thorough` preset's enlarged small-face pass (1.41x, boxes under 28 px), at about 2.5
times the plain cost, kept in its own file beside the others. A rotation such as PM
detects the k-th looked-at frame in view k mod 2 (P, M, P, M ...): with a stride,
detection on every n-th frame is simulated by keeping those frames' sightings, each
from its view. Plans: `per-frame` (plain, every frame, tracking off), `tracked
<rotation>/<stride>`, and `all views/1` (each frame's views together, tracking on: a
bound, at the cost of all of them). With `--work DIR` the clips and their detections
are kept, and a second run with the same DIR reuses them.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import av
from clip_camera import make_clip
from provenance import measured_commit
from tracking_real import Clip, Tally, _looked, _score, clip_jobs

from imageblur.bootstrap import build_detector
from imageblur.config import Settings
from imageblur.detection.pyramid import PyramidDetector, View
from imageblur.domain import Face, MaskGeometry
from imageblur.video.sightings import FrameSightings, MaskPlan, PerFramePlan
from imageblur.video.tracking import TrackSettings, build_plan

SHIFT = 2**0.5
VIEWS = {
    "P": View(),
    "M": View(mirrored=True),
    "S": View(scale_offset=SHIFT),
    "X": View(mirrored=True, scale_offset=SHIFT),
}


def main() -> None:
    args = _parser().parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    strides = [int(v) for v in args.strides.split(",")]
    rotations = args.rotations.split(",")
    settings = Settings()
    detector = build_detector(settings)
    if not isinstance(detector, PyramidDetector):
        raise SystemExit("views need a single pyramid detector (no extra detectors)")
    geometry = MaskGeometry(
        scale=settings.mask_scale, margin_px=settings.mask_margin_px, shape=settings.mask_shape
    )
    tracking = TrackSettings()
    jobs = clip_jobs(args.dataset, args.clips, (width, height), args.fps, args.seconds)
    work = Path(args.work or tempfile.mkdtemp(prefix="tracking-views-"))
    work.mkdir(parents=True, exist_ok=True)
    tallies: dict[str, Tally] = {}
    seconds = dict.fromkeys(VIEWS, 0.0)
    counted = dict.fromkeys(VIEWS, 0)
    for job in jobs:
        out = work / job.name
        cached = Path(f"{out}.views.json")
        if cached.exists():
            data = json.loads(cached.read_text())
        else:
            record = make_clip(job.photo, out, job.boxes, job.spec)
            data = _detected(out, record, detector, seconds, args.views)
            counted.update({name: counted[name] + len(data["times"]) for name in args.views})
            cached.write_text(json.dumps(data))
        enlarged = Path(f"{out}.E.json")
        if args.enlarged and not enlarged.exists():
            big = PyramidDetector(
                detector.model,
                threshold=detector.threshold,
                small_threshold=detector.thresholds.small,
                large_threshold=detector.thresholds.large,
                pyramid=replace(detector.pyramid, small_pass_scale=1.41),
            )
            started = time.perf_counter()
            rows = _detected_plain(out, big)
            seconds["E"] = seconds.get("E", 0.0) + time.perf_counter() - started
            counted["E"] = counted.get("E", 0) + len(rows)
            enlarged.write_text(json.dumps(rows))
        if enlarged.exists():
            data["views"]["E"] = json.loads(enlarged.read_text())
        by_view = {
            name: [[Face(*row) for row in fs] for fs in found]
            for name, found in data["views"].items()
        }
        clip = Clip(
            out,
            data["width"],
            data["height"],
            data["times"],
            by_view["P"],
            [[] for _ in data["times"]],
            data["truth"],
            data["cuts"],
        )
        plans: dict[str, MaskPlan] = {"per-frame": PerFramePlan(_sightings(clip, by_view, "P", 1))}
        for rotation in rotations:
            if not set(rotation) <= set(by_view):
                continue
            for stride in strides:
                sightings = _sightings(clip, by_view, rotation, stride)
                plans[f"{rotation}/{stride}"] = build_plan(sightings, tracking)
        every = _sightings(clip, by_view, "".join(by_view), 1, together=True)
        plans["all views/1"] = build_plan(every, tracking)
        for name, plan in plans.items():
            _score(clip, plan, geometry, tallies.setdefault(name, Tally()))
    report = {
        "commit": measured_commit(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "clips": len(jobs),
        "size": args.size,
        "seconds": args.seconds,
        "tracking": asdict(tracking),
        "detect_ms_per_frame": {
            name: 1000 * s / max(counted[name], 1) for name, s in seconds.items()
        },
        "plans": {name: t.row() for name, t in tallies.items()},
    }
    print(json.dumps(report) if args.json else _table(report))


def _detected(
    path: Path,
    record: dict[str, Any],
    detector: PyramidDetector,
    seconds: dict[str, float],
    names: str,
) -> dict[str, Any]:
    """The clip's frames detected in the views `names`, as JSON, timing each view."""
    times: list[float] = []
    views: dict[str, list[list[list[float]]]] = {name: [] for name in names}
    with av.open(str(path)) as box:
        for frame in box.decode(video=0):
            times.append(float(frame.time or 0.0))
            image = frame.to_ndarray(format="rgb24")
            for name in names:
                view = VIEWS[name]
                started = time.perf_counter()
                hidden, _ = detector.detect_regions(image, view=view)
                seconds[name] += time.perf_counter() - started
                views[name].append([[f.x0, f.y0, f.x1, f.y1, f.score] for f in hidden])
    return {
        "width": int(record["width"]),
        "height": int(record["height"]),
        "times": times,
        "views": views,
        "truth": record["boxes"],
        "cuts": list(record["cuts"]),
    }


def _detected_plain(path: Path, detector: PyramidDetector) -> list[list[list[float]]]:
    """A clip's frames detected by `detector`, as JSON rows."""
    found: list[list[list[float]]] = []
    with av.open(str(path)) as box:
        for frame in box.decode(video=0):
            hidden, _ = detector.detect_regions(frame.to_ndarray(format="rgb24"))
            found.append([[f.x0, f.y0, f.x1, f.y1, f.score] for f in hidden])
    return found


def _sightings(
    clip: Clip,
    by_view: dict[str, list[list[Face]]],
    rotation: str,
    stride: int,
    *,
    together: bool = False,
) -> list[FrameSightings]:
    """The sightings detection on every `stride`-th frame would give, the k-th looked-at
    frame in view `rotation[k % len(rotation)]` (with `together`, in all of them)."""
    looked, flagged = _looked(clip, stride)

    def faces(k: int, i: int) -> tuple[Face, ...]:
        if together:
            return tuple(f for name in rotation for f in by_view[name][i])
        return tuple(by_view[rotation[k % len(rotation)]][i])

    return [
        FrameSightings(i, clip.times[i], faces(k, i), cut=i in flagged)
        for k, i in enumerate(looked)
    ]


def _table(report: dict[str, Any]) -> str:
    cost = ", ".join(f"{n} {ms:.0f}" for n, ms in report["detect_ms_per_frame"].items())
    base = report["plans"]["per-frame"]
    lines = [
        f"commit {report['commit']}, {report['clips']} generated clips {report['size']}, "
        f"{report['seconds']} s; detection ms per frame by view: {cost}",
        f"{'plan':<14} {'exp>=20':>8} {'x':>5} {'exp>=40':>8} {'x':>5} {'flashes':>8} "
        f"{'background':>10}",
    ]
    for name, r in report["plans"].items():
        x20 = r["exposed_20"] / max(base["exposed_20"], 1e-9)
        x40 = r["exposed_40"] / max(base["exposed_40"], 1e-9)
        lines.append(
            f"{name:<14} {r['exposed_20']:>8.2%} {x20:>5.2f} {r['exposed_40']:>8.2%} "
            f"{x40:>5.2f} {r['flashes']:>8} {r['background_hidden']:>10.2%}"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--strides", default="1,2,3")
    parser.add_argument("--rotations", default="P,PM,PS,PMS,PMSX,PE,PME,PMSE")
    parser.add_argument(
        "--enlarged", action="store_true", help="also view E (the enlarged small-face pass)"
    )
    parser.add_argument("--views", default="PMSX", help="the views detected (of PMSX)")
    parser.add_argument("--work", default=None, help="keep the clips here")
    parser.add_argument("--json", action="store_true")
    return parser


if __name__ == "__main__":
    main()
