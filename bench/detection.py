#!/usr/bin/env python3
"""Measure face detection and the blur mask on a dataset in WIDER FACE layout.

    python bench/detection.py DATASET_DIR [--json] [--limit N] [--vs-deface]
        [--detector FAMILY[:MODEL.onnx[:THRESHOLD]] ...] [--uncertain-min-px PX]
        [--dump FILE]

DATASET_DIR holds `images/` and one `*_bbx_gt.txt` (path, count, then one
`x y w h blur expression illumination invalid occlusion pose` line per face). The data
is read in place; nothing is copied.

Each image is decoded with `imageblur.imaging.decode` and run through the project's
detector with the worker's settings (`load_settings()`: defaults, environment, flags),
then the masks come from `imageblur.blurring.mask_outlines`, the geometry the worker's
`Anonymizer` paints (the same function, not a copy of it).

`--detector` picks the family (centerface, retinaface, scrfd, yolo) and a brought model
(its sha256 is taken from the file: the operator vouches for it here); given more than
once, the first is the main detector, measured along the threshold curve, and the others
run beside it at their own threshold (default 0.5), as IMAGEBLUR_EXTRA_DETECTORS does.
A yolo model's class map comes from IMAGEBLUR_DETECTOR_CLASSES (all the same here).

Figures, for valid faces (not flagged invalid) at least 20 px and at least 40 px tall:
- recall: a detection overlaps the face with IoU >= 0.5 (comparable with published
  detectors);
- protected recall: at least 80% of the face box lies under the blur mask (what privacy
  needs: a loose or shifted box still protects the face if the mask covers it);
- false positives per image: detections matching no labelled face (of any size, valid
  or not) at IoU >= 0.5, the usual detection convention; it reproduces the baseline
  figures of issue 4 (single CenterFace pass: 5.1 FP/image at threshold 0.2, 1.0 at
  0.36). `fp_no_overlap_per_image` counts only detections overlapping no labelled
  face at all (IoU < 0.1): mostly real false alarms rather than loose boxes;
- collateral area: share of the image blurred outside every labelled face box, averaged
  over images;
- stray regions per image: connected hidden regions (8-neighbourhood) touching no
  labelled box at all: the blurred patches of background a user sees.
- review, at each uncertain floor of FLOORS: the uncertain candidates listed per image
  (groups scoring at least the floor but below the threshold their size needs, at least
  `--uncertain-min-px` across), those that are faces (matching a labelled face at IoU
  >= 0.5, as recall matches), and the protected recall a reviewer reaches by also
  hiding those, with the detector's mask.
`--dump FILE` writes every region the detector returns (hidden and uncertain, at the
curve's lowest threshold), one line each: image, H or U, x0 y0 x1 y1 score and kind, the
floats in full (`repr`), so two runs can be compared byte for byte (`cmp`) before and
after a change that must not move a detection.
The threshold curve reuses one detection run: decoding at the lowest threshold and then
dropping lower scores gives the same boxes as running at the higher threshold, because
grouping only ever merges a box into a better-scored one.

`--vs-deface` runs both tools end to end, side by side: lossless PNG copies of the images
in a temporary folder, our detector + the worker's masks and deface 1.5.0 with its defaults
(installed into a throwaway virtual environment, as bench/speed.py does), both in solid
mode, and each tool's hidden area read from the pixels it wrote (bench/side_by_side.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from provenance import measured_commit
from side_by_side import hidden_pixels, run_deface, stray_regions, write_copy
from speed import install_deface

from imageblur import imaging
from imageblur.blurring import full_mask, hide_masks, mask_outlines, masks_of
from imageblur.bootstrap import build_detector
from imageblur.config import DETECTION_PRESETS, DetectorSpec, Settings, load_settings
from imageblur.detection.centerface import UNCERTAIN_MIN_PX
from imageblur.detection.families import SHIPPED
from imageblur.detection.pyramid import size_thresholds
from imageblur.detection.runtime import file_sha256
from imageblur.domain import Face, MaskGeometry, MaskShape
from imageblur.ports import FaceDetector, RegionDetector

# Thresholds of the curve; a small-face threshold stays at least the threshold. Not
# below 0.1, the lowest per-pass score that joins a group: the grouping stays the same.
# From 0.5 up for the brought families (their default 0.5, `thorough`'s 0.7).
CURVE = (0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.35, 0.39, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75)
FP_IOU = 0.5
NO_OVERLAP_IOU = 0.1
MATCH_IOU = 0.5
PROTECTED_SHARE = 0.8
# Uncertain floors tried (IMAGEBLUR_UNCERTAIN_FLOOR): the groups scoring at least the
# floor but below the threshold their size needs are listed for a reviewer. Not below
# 0.1, the lowest per-pass score that joins a group: the same replay holds.
FLOORS = (0.1, 0.11, 0.15, 0.2)


@dataclass(frozen=True, slots=True)
class Truth:
    """Labelled faces of one image; rows x0 y0 x1 y1, plus the WIDER attributes."""

    name: str
    boxes: np.ndarray  # float, N x 4
    invalid: np.ndarray  # bool, N
    attrs: np.ndarray  # int, N x 6: blur expression illumination invalid occlusion pose


@dataclass(frozen=True, slots=True)
class ImageResult:
    width: int
    height: int
    truth: Truth
    faces: list[Face]  # at the lowest threshold evaluated


@dataclass(frozen=True, slots=True)
class Point:
    """An operating point: the detector's thresholds and the mask."""

    threshold: float
    small_threshold: float | None
    large_threshold: float | None
    mask_scale: float
    margin_px: float
    shape: MaskShape

    @classmethod
    def of(cls, settings: Settings) -> Point:
        # A brought family takes one threshold at every size (bootstrap.build_detector).
        sized = settings.detector == SHIPPED
        return cls(
            settings.detection_threshold,
            settings.detection_small_threshold if sized else None,
            settings.detection_large_threshold if sized else None,
            settings.mask_scale,
            settings.mask_margin_px,
            settings.mask_shape,
        )

    def at(self, threshold: float) -> Point:
        small, large = (max(threshold, t or threshold) for t in self.size_levels())
        return Point(threshold, small, large, self.mask_scale, self.margin_px, self.shape)

    @property
    def geometry(self) -> MaskGeometry:
        return MaskGeometry(scale=self.mask_scale, margin_px=self.margin_px, shape=self.shape)

    def size_levels(self) -> tuple[float, float]:
        """The small and large thresholds as the detector applies them."""
        small = max(self.threshold, self.small_threshold or self.threshold)
        return small, max(self.threshold, self.large_threshold or self.threshold)

    def keep(self, faces: Sequence[Face]) -> list[Face]:
        """The faces the detector returns at this point (same rule as `detect`)."""
        if not faces:
            return []
        rows = np.array([[f.x0, f.y0, f.x1, f.y1, f.score] for f in faces], np.float32)
        need = size_thresholds(rows, self.threshold, *self.size_levels())
        return [f for f, ok in zip(faces, rows[:, 4] >= need, strict=True) if ok]

    def uncertain(self, faces: Sequence[Face], floor: float, min_px: float) -> list[Face]:
        """The groups scoring at least `floor`, at least `min_px` across, that this
        point does not hide: the uncertain candidates a reviewer sees (the rule of
        `detect_regions`, with UNCERTAIN_MIN_PX)."""
        hidden = {id(f) for f in self.keep(faces)}
        return [
            f
            for f in faces
            if f.score >= floor and id(f) not in hidden and f.width * f.height >= min_px**2
        ]


def read_truth(dataset: Path) -> list[Truth]:
    files = sorted(dataset.glob("*_bbx_gt.txt"))
    if len(files) != 1:
        raise SystemExit(f"expected one *_bbx_gt.txt in {dataset}, found {len(files)}")
    lines = iter(files[0].read_text().splitlines())
    out: list[Truth] = []
    for name in lines:
        name = name.strip()
        if not name:
            continue
        count = int(next(lines))
        rows = [next(lines).split() for _ in range(max(count, 1))][:count]
        data = np.array(rows, float).reshape(-1, 10)
        boxes = np.column_stack(
            [data[:, 0], data[:, 1], data[:, 0] + data[:, 2], data[:, 1] + data[:, 3]]
        )
        bad = (data[:, 7] == 1) | (data[:, 2] <= 0) | (data[:, 3] <= 0)
        out.append(Truth(name, boxes, bad, data[:, 4:].astype(int)))
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every row of a against every row of b (x0 y0 x1 y1)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    ix = np.clip(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    iy = np.clip(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9))


@dataclass(slots=True)
class Tally:
    faces_20: int = 0
    faces_40: int = 0
    hit_20: int = 0
    hit_40: int = 0
    protected_20: int = 0
    protected_40: int = 0
    false_pos: int = 0
    no_overlap: int = 0
    collateral: float = 0.0
    stray: int = 0
    images: int = 0

    def summary(self) -> dict[str, float]:
        n = max(self.images, 1)
        return {
            "recall_20": self.hit_20 / max(self.faces_20, 1),
            "recall_40": self.hit_40 / max(self.faces_40, 1),
            "protected_recall_20": self.protected_20 / max(self.faces_20, 1),
            "protected_recall_40": self.protected_40 / max(self.faces_40, 1),
            "fp_per_image": self.false_pos / n,
            "fp_no_overlap_per_image": self.no_overlap / n,
            "collateral_area": self.collateral / n,
            "stray_per_image": self.stray / n,
            "faces_20": self.faces_20,
            "faces_40": self.faces_40,
            "images": self.images,
        }


def score_image(result: ImageResult, point: Point, tally: Tally) -> np.ndarray:
    """Add one image to the tally; return, per labelled face, whether it is protected."""
    faces = point.keep(result.faces)
    det = np.array([[f.x0, f.y0, f.x1, f.y1] for f in faces], float).reshape(-1, 4)
    truth = result.truth
    ious = iou_matrix(truth.boxes, det)
    hit = ious.max(axis=1) >= MATCH_IOU if len(det) else np.zeros(len(truth.boxes), bool)
    mask = hidden_by(faces, result.width, result.height, point)
    for limit in (20, 40):
        valid = ~truth.invalid & (truth.boxes[:, 3] - truth.boxes[:, 1] >= limit)
        setattr(tally, f"hit_{limit}", getattr(tally, f"hit_{limit}") + int((hit & valid).sum()))
    if len(det):
        best = ious.max(axis=0) if len(truth.boxes) else np.zeros(len(det))
        tally.false_pos += int((best < FP_IOU).sum())
        tally.no_overlap += int((best < NO_OVERLAP_IOU).sum())
    return score_hidden(truth, mask, tally)


def hidden_by(faces: Sequence[Face], width: int, height: int, point: Point) -> np.ndarray:
    """Every pixel the worker hides for these faces at this point's mask geometry."""
    return full_mask(mask_outlines(faces, width, height, point.geometry), width, height)


def score_hidden(truth: Truth, hidden: np.ndarray, tally: Tally) -> np.ndarray:
    """Add what a hidden-pixel mask protects and costs to the tally; return, per
    labelled face, whether it is protected."""
    height, width = hidden.shape
    protected = np.zeros(len(truth.boxes), bool)
    labelled = np.zeros_like(hidden)
    for i, (x0, y0, x1, y1) in enumerate(truth.boxes):
        xa, ya = max(0, round(x0)), max(0, round(y0))
        xb, yb = min(width, round(x1)), min(height, round(y1))
        if xb <= xa or yb <= ya:
            continue
        labelled[ya:yb, xa:xb] = True
        protected[i] = hidden[ya:yb, xa:xb].mean() >= PROTECTED_SHARE
    for limit in (20, 40):
        valid = ~truth.invalid & (truth.boxes[:, 3] - truth.boxes[:, 1] >= limit)
        setattr(tally, f"faces_{limit}", getattr(tally, f"faces_{limit}") + int(valid.sum()))
        setattr(
            tally,
            f"protected_{limit}",
            getattr(tally, f"protected_{limit}") + int((protected & valid).sum()),
        )
    tally.collateral += float((hidden & ~labelled).mean())
    tally.stray += stray_regions(hidden, truth.boxes)
    tally.images += 1
    return protected


def evaluate(results: Sequence[ImageResult], point: Point) -> dict[str, float]:
    tally = Tally()
    for result in results:
        score_image(result, point, tally)
    return tally.summary()


def reviewed(
    results: Sequence[ImageResult], point: Point, floor: float, min_px: float
) -> dict[str, float]:
    """What a reviewer reaches who hides, besides what the detector hid, every uncertain
    candidate (at `floor`) that is a real face: one matching a labelled face (any, valid
    or not) at IoU >= MATCH_IOU, as recall matches. Hidden with the detector's mask."""
    tally = Tally()
    listed = real = 0
    for result in results:
        unsure = point.uncertain(result.faces, floor, min_px)
        det = np.array([[f.x0, f.y0, f.x1, f.y1] for f in unsure], float).reshape(-1, 4)
        ious = iou_matrix(result.truth.boxes, det)
        is_face = np.zeros(len(det), bool)
        if len(result.truth.boxes) and len(det):
            is_face = ious.max(axis=0) >= MATCH_IOU
        faces = point.keep(result.faces) + [f for f, ok in zip(unsure, is_face, strict=True) if ok]
        mask = hidden_by(faces, result.width, result.height, point)
        score_hidden(result.truth, mask, tally)
        listed += len(unsure)
        real += int(np.sum(is_face))
    n = max(len(results), 1)
    summary = tally.summary()
    return {
        "floor": floor,
        "min_px": min_px,
        "uncertain_per_image": listed / n,
        "real_uncertain_per_image": real / n,
        "reviewed_protected_recall_20": summary["protected_recall_20"],
        "reviewed_protected_recall_40": summary["protected_recall_40"],
    }


def misses_by_attribute(results: Sequence[ImageResult], point: Point) -> dict[str, float]:
    """Protected recall of valid faces >= 20 px split by the hard WIDER attributes."""
    groups: dict[str, list[int]] = {}
    names = {"heavy blur": (0, 2), "heavy occlusion": (4, 2), "atypical pose": (5, 1)}
    for result in results:
        protected = score_image(result, point, Tally())
        height = result.truth.boxes[:, 3] - result.truth.boxes[:, 1]
        valid = ~result.truth.invalid & (height >= 20)
        for label, (col, value) in names.items():
            sel = valid & (result.truth.attrs[:, col] == value)
            total = groups.setdefault(label, [0, 0])
            total[0] += int((protected & sel).sum())
            total[1] += int(sel.sum())
    return {k: v[0] / v[1] for k, v in groups.items() if v[1]}


def run_detector(
    images: Sequence[Path], truths: Sequence[Truth], detector: FaceDetector
) -> Iterator[tuple[ImageResult, list[Face], float]]:
    """Per image: the result, the uncertain candidates, and the detection time."""
    for path, truth in zip(images, truths, strict=True):
        image = imaging.decode(path.read_bytes(), max_pixels=1 << 31).rgb
        start = time.perf_counter()
        if isinstance(detector, RegionDetector):
            faces, uncertain = detector.detect_regions(image)
        else:
            faces, uncertain = detector.detect(image), []
        seconds = time.perf_counter() - start
        yield ImageResult(image.shape[1], image.shape[0], truth, faces), uncertain, seconds


def dump_lines(name: str, hidden: Sequence[Face], uncertain: Sequence[Face]) -> Iterator[str]:
    """The `--dump` lines of one image, in the detector's order."""
    for tag, faces in (("H", hidden), ("U", uncertain)):
        for f in faces:
            box = " ".join(repr(v) for v in (f.x0, f.y0, f.x1, f.y1, f.score))
            yield f"{name}\t{tag}\t{box}\t{f.kind}\n"


def our_hidden(copy: Path, faces: Sequence[Face], point: Point) -> np.ndarray:
    """What the worker's write path hides in solid mode, read back from its PNG."""
    decoded = imaging.decode(copy.read_bytes(), max_pixels=1 << 31)
    height, width = decoded.rgb.shape[:2]
    masks = masks_of(mask_outlines(faces, width, height, point.geometry))
    decoded.rgb = hide_masks(decoded.rgb, masks, mode="solid", in_place=True)
    out = Path(f"{copy}.ours.png")
    out.write_bytes(imaging.encode(decoded, jpeg_quality=95))
    hidden = hidden_pixels(out)
    out.unlink()
    return hidden


def detector_specs(choices: Sequence[str], classes: str) -> list[DetectorSpec]:
    """The detectors of `--detector` (FAMILY[:MODEL[:THRESHOLD]]); a yolo model's class
    map is `classes` (IMAGEBLUR_DETECTOR_CLASSES)."""
    specs = []
    for text in choices:
        family, _, rest = text.partition(":")
        path_text, _, threshold = rest.partition(":")
        path = Path(path_text) if path_text else None
        specs.append(
            DetectorSpec(
                family=family,  # type: ignore[arg-type]  # validated by pydantic
                model_path=path,
                model_sha256=file_sha256(path) if path else None,
                threshold=float(threshold or 0.5),
                classes=classes if family == "yolo" else "",
            )
        )
    return specs


def main_detector(specs: Sequence[DetectorSpec]) -> dict[str, object]:
    """The settings naming the main detector (the first of `specs`), so the preset maps
    to that family's values as the service maps them (`config.preset_values`)."""
    if not specs:
        return {}
    main = specs[0]
    return {
        "detector": main.family,
        "model_path": main.model_path,
        "model_sha256": main.model_sha256,
        "detector_classes": main.classes,
    }


def detector_settings(settings: Settings, specs: Sequence[DetectorSpec], lowest: float) -> Settings:
    """The settings with the extra detectors of `--detector`, the main one at the curve's
    lowest threshold at every size (`Point` applies the size-dependent thresholds
    afterwards, at each point of the curve)."""
    changes: dict[str, object] = {
        "detection_threshold": lowest,
        "detection_small_threshold": lowest,
        "detection_large_threshold": lowest,
        # Uncertain candidates are replayed from `detect`'s faces (Point.uncertain), not
        # listed by the detector; the setting must only stay below the lowest threshold.
        "uncertain_floor": lowest / 2,
        "extra_detectors": list(specs[1:]),
    }
    return load_settings(**{**settings.model_dump(), **changes})


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Point]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="folder with images/ and *_bbx_gt.txt")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--preset", choices=list(DETECTION_PRESETS), help="default: the settings'")
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--small-threshold", type=float)
    parser.add_argument("--large-threshold", type=float)
    parser.add_argument("--mask-scale", type=float)
    parser.add_argument("--margin", type=float, help="mask margin in px on each side")
    parser.add_argument("--shape", choices=["ellipse", "box"])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--limit", type=int, default=0, help="first N images only")
    parser.add_argument("--vs-deface", action="store_true", help="also run deface 1.5.0")
    parser.add_argument(
        "--uncertain-min-px",
        type=float,
        default=UNCERTAIN_MIN_PX,
        help="smallest uncertain candidate listed (default: the detector's)",
    )
    parser.add_argument(
        "--dump",
        type=Path,
        metavar="FILE",
        help="write every region found, in full precision, for comparing runs",
    )
    parser.add_argument(
        "--detector",
        action="append",
        default=[],
        metavar="FAMILY[:MODEL[:THRESHOLD]]",
        help="family and model; repeat to run several together (default: the settings')",
    )
    args = parser.parse_args(argv)
    args.specs = detector_specs(args.detector, load_settings().detector_classes)
    # Unset flags fall back to the worker's settings, the preset applied as it does, for
    # the main detector's family.
    settings = load_settings(
        **main_detector(args.specs),
        detection_preset=args.preset,
        detection_threshold=args.threshold,
        detection_small_threshold=args.small_threshold,
        detection_large_threshold=args.large_threshold,
        mask_scale=args.mask_scale,
        mask_margin_px=args.margin,
        mask_shape=args.shape,
        detector_threads=args.threads,
    )
    args.settings = settings
    return args, Point.of(settings)


def main(argv: Sequence[str] | None = None) -> int:
    args, point = parse_args(argv)
    settings: Settings = args.settings
    commit = measured_commit()  # before the run: the code it starts from
    truths = read_truth(args.dataset)
    if args.limit:
        truths = truths[: args.limit]
    lowest = min(point.threshold, *CURVE)
    detector = build_detector(detector_settings(settings, args.specs, lowest))
    with tempfile.TemporaryDirectory(prefix="imageblur-eval-") as tmp_text:
        tmp = Path(tmp_text)
        images = [args.dataset / "images" / t.name for t in truths]
        if args.vs_deface:
            images = [tmp / f"{i:05d}.png" for i in range(len(truths))]
            for truth, copy in zip(truths, images, strict=True):
                write_copy(args.dataset / "images" / truth.name, copy)
        results: list[ImageResult] = []
        dump: list[str] = []
        seconds = pixels = 0.0
        runs = run_detector(images, truths, detector)
        for i, (result, uncertain, took) in enumerate(runs, 1):
            results.append(result)
            dump.extend(dump_lines(truths[i - 1].name, result.faces, uncertain))
            seconds += took
            pixels += result.width * result.height
            if not args.json and i % 50 == 0:
                print(f"  {i}/{len(truths)} images", file=sys.stderr)
        if args.dump:
            args.dump.write_text("".join(dump))
        ms_per_mp = 1000 * seconds / max(pixels / 1e6, 1e-9)
        report = figures(results, point, ms_per_mp, args.uncertain_min_px)
        report["detectors"] = args.detector or [settings.detector]
        report["preset"] = settings.detection_preset
        report["mirrored_passes"] = settings.detection_mirrored_passes
        report["small_face_pass_scale"] = settings.detection_small_face_pass_scale
        report["commit"] = commit
        if args.vs_deface:
            report.update(versus_deface(results, images, point, tmp, quiet=args.json))
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


def figures(
    results: Sequence[ImageResult], point: Point, ms_per_mp: float, min_px: float
) -> dict[str, Any]:
    curve = [{"threshold": t, **evaluate(results, point.at(t))} for t in CURVE]
    floors = [f for f in FLOORS if f >= min(CURVE)]
    return {
        **evaluate(results, point),
        "threshold": point.threshold,
        "small_threshold": point.small_threshold,
        "large_threshold": point.large_threshold,
        "mask_scale": point.mask_scale,
        "margin_px": point.margin_px,
        "shape": point.shape,
        "detect_ms_per_megapixel": ms_per_mp,
        "protected_recall_20_by_attribute": misses_by_attribute(results, point),
        "curve": curve,
        "review": [reviewed(results, point, f, min_px) for f in floors],
    }


def versus_deface(
    results: Sequence[ImageResult], copies: Sequence[Path], point: Point, tmp: Path, *, quiet: bool
) -> dict[str, Any]:
    """Both tools' figures from the pixels they wrote on the same PNG copies."""
    ours, theirs = Tally(), Tally()
    for result, copy in zip(results, copies, strict=True):
        score_hidden(result.truth, our_hidden(copy, point.keep(result.faces), point), ours)
    if not quiet:
        print("installing deface 1.5.0 into a throwaway venv...", file=sys.stderr)
    deface = install_deface(tmp / "deface-venv")
    out_dir = tmp / "deface-out"
    out_dir.mkdir()
    for result, output in zip(results, run_deface(deface, copies, out_dir), strict=True):
        score_hidden(result.truth, hidden_pixels(output), theirs)
    keys = ("protected_recall_20", "protected_recall_40", "collateral_area", "stray_per_image")
    a, b = ours.summary(), theirs.summary()
    return {
        **{f"deface_{k}": b[k] for k in keys},
        "vs_deface": {"imageblur": {k: a[k] for k in keys}, "deface": {k: b[k] for k in keys}},
    }


def print_report(report: dict[str, object]) -> None:
    print(
        f"commit {report['commit']}; "
        f"detectors {', '.join(report['detectors'])}, "  # type: ignore[arg-type]
        f"threshold {report['threshold']} (boxes <= 14 px: {report['small_threshold']}, "
        f">= 128 px: {report['large_threshold']}), "
        f"mask {report['shape']} x{report['mask_scale']} + {report['margin_px']} px, "
        f"preset {report['preset']}, mirrored passes {report['mirrored_passes']}, "
        f"small-face pass x{report['small_face_pass_scale']}, "
        f"{report['images']} images, {report['faces_20']} valid faces >= 20 px, "
        f"{report['faces_40']} >= 40 px"
    )
    header = (
        "threshold  recall20 recall40  protected20 protected40  FP/image  collateral  stray/image"
    )
    print(header)
    rows = [{"threshold": report["threshold"], **report}, *report["curve"]]  # type: ignore[list-item]
    for i, row in enumerate(rows):
        mark = "*" if i == 0 else " "
        print(
            f"{mark}{row['threshold']:<9.2f} {row['recall_20']:8.3f} {row['recall_40']:8.3f}"
            f"  {row['protected_recall_20']:11.3f} {row['protected_recall_40']:11.3f}"
            f"  {row['fp_per_image']:8.2f}  {100 * row['collateral_area']:9.2f}%"
            f"  {row['stray_per_image']:11.2f}"
        )
    print("protected recall (>= 20 px) of hard faces:", end="")
    for label, value in report["protected_recall_20_by_attribute"].items():  # type: ignore[attr-defined]
        print(f"  {label} {value:.3f}", end="")
    print(f"\ndetection: {report['detect_ms_per_megapixel']:.0f} ms per megapixel")
    print_review(report)
    if "vs_deface" in report:
        print_versus(report["vs_deface"], str(report["preset"]))  # type: ignore[arg-type]


def print_review(report: dict[str, Any]) -> None:
    """Uncertain candidates per floor, and the protected recall after a reviewer hid
    those that are faces, next to the detector's own."""
    rows = report["review"]
    size = rows[0]["min_px"] if rows else UNCERTAIN_MIN_PX
    print(f"\nreview: uncertain candidates (below the threshold, >= the floor, >= {size:g} px)")
    print("floor  listed/image  faces/image  protected20 protected40  (detector alone)")
    for row in rows:
        print(
            f" {row['floor']:<5.2f} {row['uncertain_per_image']:12.2f}"
            f" {row['real_uncertain_per_image']:12.2f}"
            f"  {row['reviewed_protected_recall_20']:11.3f}"
            f" {row['reviewed_protected_recall_40']:11.3f}"
            f"  ({report['protected_recall_20']:.3f} / {report['protected_recall_40']:.3f})"
        )


def print_versus(both: dict[str, dict[str, float]], preset: str) -> None:
    """The side-by-side table, each tool's figures from its output pixels."""
    ours, theirs = both["imageblur"], both["deface"]
    print("\nsolid mode, hidden area from output pixels (PNG copies)")
    print("                     protected20 protected40  collateral  stray/image")
    for label, row in ((f"imageblur {preset}", ours), ("deface 1.5.0", theirs)):
        print(
            f"  {label:<18} {row['protected_recall_20']:11.3f} {row['protected_recall_40']:11.3f}"
            f"  {100 * row['collateral_area']:9.2f}%  {row['stray_per_image']:11.2f}"
        )
    d = {k: ours[k] - theirs[k] for k in ours}
    ratio_area = ours["collateral_area"] / max(theirs["collateral_area"], 1e-9)
    ratio_stray = ours["stray_per_image"] / max(theirs["stray_per_image"], 1e-9)
    print(
        f"  {'difference':<18} {d['protected_recall_20']:+11.3f} {d['protected_recall_40']:+11.3f}"
        f"  {100 * d['collateral_area']:+9.2f}%  {d['stray_per_image']:+11.2f}"
    )
    print(f"  {'ratio':<18} {'':11} {'':11}  {ratio_area:9.2f}x  {ratio_stray:10.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
