#!/usr/bin/env python3
"""A second, finer look at faint tracks, against today's tracking, on the clips of
`bench/tracking_real.py`.

    python bench/second_look.py DATASET_DIR --work DIR [--clips 5] [--seconds 8]
        [--stride 3] [--face-px 48,64,96] [--faint 0.3,0.4,0.5] [--closer 0.3,0.4,0.5]
        [--rules between] [--json]

Run `bench/tracking_real.py` with the same `--work DIR`, `--clips`, `--seconds` and
`--strides` first: it makes the clips and keeps their detections (every frame, the
worker's detector and preset) and the camera's motion there. This script then decodes
each clip again and, on every looked-at frame (every `--stride`-th), takes a second
look (`PyramidDetector.look_closer`) at each sighting scoring under 0.5, once per
`--face-px` (the box scaled to that height, one box of context around it), and keeps
the scores beside the clip (`clipNN.mp4.closer<stride>.json`), so a rerun only plans.

Plans, scored from the masks as `tracking_real.py` scores them: `per-frame` (every frame
detected), `tracked` (today's defaults at `--stride`) and, for each face size, `faint`
and `closer` threshold and rule, today's plan with `faint_score` and `closer_score` set:
a track whose sightings all score under `faint` and whose second looks all score under
`closer` is hidden at its sightings only (`between`: and between them, the box
interpolated; `looked`: also to the looked-at frames around it; `sightings`: at its own
frames only, as the per-frame plan of the same sightings).

Also prints the CPU time of the second looks per looked-at frame against detecting it
(`detect` timed on the first 10 looked-at frames of the first clip), and with `--cost`
the CPU seconds per video second of the whole detection pass (`video.detect_pass`:
decode, cuts, motion, detection, and the second looks at the default policy) with the
looks and without, on the clips, with the looks it took.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
from provenance import measured_commit
from tracking_real import Clip, Tally, _clip_of, _motions, _score, _sightings, clip_jobs

from imageblur.bootstrap import build_detector
from imageblur.config import Settings
from imageblur.detection.pyramid import PyramidDetector
from imageblur.domain import CloserLook, Face, MaskGeometry
from imageblur.video.detect_pass import DetectPass
from imageblur.video.probe import VideoLimits, probe
from imageblur.video.second_look import SecondLookPolicy, SecondLooks
from imageblur.video.sightings import FrameSightings, MaskPlan, PerFramePlan
from imageblur.video.tracking import TrackSettings, build_plan

LOOK_BELOW = 0.5  # sightings under this score get a second look (the largest `--faint`)


def main() -> None:
    args = _parser().parse_args()
    sizes = args.face_px.split(",")
    settings = Settings()
    detector = build_detector(settings)
    if not isinstance(detector, PyramidDetector):
        raise SystemExit("the second look needs the pyramid detector (CenterFace)")
    geometry = MaskGeometry(
        scale=settings.mask_scale, margin_px=settings.mask_margin_px, shape=settings.mask_shape
    )
    jobs = clip_jobs(args.dataset, args.clips, (1280, 720), 30, args.seconds)
    tallies: dict[str, Tally] = {}
    looks: dict[str, int] = {}
    looked_frames = 0
    cost = {"looks": 0, "look_cpu_s": 0.0, "looked_frames": 0}
    for job in jobs:
        out = Path(args.work) / job.name
        clip = _clip_of(json.loads(Path(f"{out}.detections.json").read_text()))
        closer = _closer(out, clip, args.stride, sizes, detector, cost)
        motions = _motions(out, clip, args.stride)
        base = _sightings(clip, args.stride, motions)
        looked_frames += len(base)
        plans: dict[str, MaskPlan] = {
            "per-frame": PerFramePlan(_sightings(clip, 1)),
            "tracked": build_plan(base),
        }
        for size, faint, close, budget in itertools.product(
            sizes, _floats(args.faint), _floats(args.closer), args.budgets.split(",")
        ):
            given = budget.split(":")
            per_chain, every, iou = [*given, *("0", "0.2")[len(given) - 1 :]][:3]
            policy = SecondLookPolicy(faint, close, int(per_chain), int(every), float(iou))
            frames, taken = _with_closer(base, closer[size], policy)
            tracking = TrackSettings(faint_score=faint, closer_score=close)
            name = f"{size}px faint<{faint:g} closer<{close:g} looks {budget}"
            plans[name] = build_plan(frames, tracking)
            looks[name] = looks.get(name, 0) + taken
        for name, plan in plans.items():
            _score(clip, plan, geometry, tallies.setdefault(name, Tally()))
    detect_ms = _detect_ms(Path(args.work) / jobs[0].name, args.stride, detector)
    report = {
        "commit": measured_commit(),
        "clips": len(jobs),
        "stride": args.stride,
        "detect_ms_per_looked_frame": detect_ms,
        "looks": cost["looks"],
        "look_ms_per_looked_frame": 1000 * cost["look_cpu_s"] / max(cost["looked_frames"], 1),
        "looks_per_looked_frame": cost["looks"] / max(cost["looked_frames"], 1),
        "plans": {
            name: {**t.row(), "looks_per_frame": looks.get(name, 0) / max(looked_frames, 1)}
            for name, t in tallies.items()
        },
    }
    if args.cost:
        report["pass_cost"] = [_pass_cost(Path(args.work) / j.name, detector) for j in jobs]
    print(json.dumps(report) if args.json else _table(report))


def _pass_cost(path: Path, detector: PyramidDetector) -> dict[str, Any]:
    """CPU seconds (every thread) per video second of the detection pass over one clip,
    without and with the second looks (the default policy)."""
    info = probe(path, VideoLimits(max_seconds=3600, max_pixels=3840 * 2160))
    seconds = info.duration_s or info.frames / 30
    row: dict[str, Any] = {"clip": path.name}
    for name, looks in (("without", None), ("with", SecondLooks(SecondLookPolicy()))):
        started = _cpu_s()
        frames = list(DetectPass(detector, stride=3, looks=looks).run(path, info))
        row[name] = (_cpu_s() - started) / seconds
        row["looked_frames"] = len(frames)
        if looks is not None:
            row["looks"] = looks.taken
    return row


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def _closer(
    out: Path,
    clip: Clip,
    stride: int,
    sizes: list[str],
    detector: PyramidDetector,
    cost: dict[str, Any],
) -> dict[str, list[list[float | None]]]:
    """Per face size, per looked-at frame, per detection: the second look's score
    (None: not looked at, scoring LOOK_BELOW or more); computed once, kept beside
    the clip."""
    cached = Path(f"{out}.closer{stride}.json")
    known: dict[str, list[list[float | None]]] = (
        json.loads(cached.read_text()) if cached.exists() else {}
    )
    missing = [s for s in sizes if s not in known]
    if not missing:
        return known
    for size in missing:
        known[size] = []
    with av.open(str(out)) as box:
        for i, frame in enumerate(box.decode(video=0)):
            if i % stride:
                continue
            image = frame.to_ndarray(format="rgb24")
            cost["looked_frames"] += 1
            for size in missing:
                px, _, margin = size.partition(":")
                look = CloserLook(face_px=float(px), margin=float(margin or 1.0))
                started = time.process_time()
                scores = [
                    detector.look_closer(image, f, look) if f.score < LOOK_BELOW else None
                    for f in clip.detections[i]
                ]
                cost["look_cpu_s"] += time.process_time() - started
                cost["looks"] += sum(s is not None for s in scores)
                known[size].append(scores)
    cached.write_text(json.dumps(known))
    return known


def _with_closer(
    frames: list[FrameSightings], closer: list[list[float | None]], policy: SecondLookPolicy
) -> tuple[list[FrameSightings], int]:
    """The sightings with the second looks the detection pass takes under `policy`
    (`video.second_look.SecondLooks`, its looks answered from `closer`: a row per
    looked-at frame, in order, a score per face under LOOK_BELOW), and how many."""
    looks = SecondLooks(policy)
    out = []
    for f, row in zip(frames, closer, strict=True):
        cached = {id(face): score for face, score in zip(f.faces, row, strict=True)}
        if f.cut:
            looks.reset()

        def look(face: Face, cached: dict[int, float | None] = cached) -> float:
            score = cached[id(face)]
            if score is None:
                raise ValueError(f"no second look cached under {LOOK_BELOW}")
            return score

        out.append(replace(f, closer=looks.scores(f.faces, f.motion, look)))
    return out, looks.taken


def _detect_ms(path: Path, stride: int, detector: PyramidDetector) -> float:
    """CPU ms of detecting one looked-at frame (the first 10 of a clip)."""
    spent, count = 0.0, 0
    with av.open(str(path)) as box:
        for i, frame in enumerate(box.decode(video=0)):
            if i % stride:
                continue
            image = frame.to_ndarray(format="rgb24")
            started = time.process_time()
            detector.detect(image)
            spent += time.process_time() - started
            count += 1
            if count == 10:
                break
    return 1000 * spent / max(count, 1)


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"commit {report['commit']}, {report['clips']} clips, every {report['stride']}th frame; "
        f"detect {report['detect_ms_per_looked_frame']:.0f} ms CPU per looked-at frame, "
        f"second looks {report['look_ms_per_looked_frame']:.0f} ms "
        f"({report['looks_per_looked_frame']:.1f} looks; 0 if cached)",
        f"{'plan':<46} {'exp>=20':>8} {'exp>=40':>8} {'flashes':>8} {'background':>10} looks",
    ]
    for name, r in report["plans"].items():
        lines.append(
            f"{name:<46} {r['exposed_20']:>8.2%} {r['exposed_40']:>8.2%} {r['flashes']:>8} "
            f"{r['background_hidden']:>10.2%} {r['looks_per_frame']:5.1f}"
        )
    for row in report.get("pass_cost", []):
        lines.append(
            f"{row['clip']}: detection pass {row['without']:.2f} CPU s per video s without "
            f"the looks, {row['with']:.2f} with ({row['looks']} looks, "
            f"{row['looked_frames']} looked-at frames)"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--work", required=True, help="tracking_real.py's --work folder")
    parser.add_argument("--clips", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--stride", type=int, default=3)
    parser.add_argument(
        "--face-px", default="40", help="box heights of the second look, PX or PX:MARGIN"
    )
    parser.add_argument("--faint", default="0.4")
    parser.add_argument("--closer", default="0.3,0.4,0.5")
    parser.add_argument(
        "--budgets",
        default="99,2:5",
        help="looks per chain[:then every n-th[:chained at this IoU]], as SecondLookPolicy "
        "(99: every sighting)",
    )
    parser.add_argument("--cost", action="store_true", help="time the detection pass too")
    parser.add_argument("--json", action="store_true")
    return parser


if __name__ == "__main__":
    main()
