#!/usr/bin/env python3
"""Measure face detection and the blur mask on a dataset in WIDER FACE layout.

    python bench/detection.py DATASET_DIR [--json] [--limit N]
        [--detector FAMILY[:MODEL.onnx[:THRESHOLD]] ...]

DATASET_DIR holds `images/` and one `*_bbx_gt.txt` (path, count, then one
`x y w h blur expression illumination invalid occlusion pose` line per face). The data
is read in place; nothing is copied.

Each image is decoded with `imageblur.imaging.decode` and run through the project's
detector with the worker's settings (`load_settings()`: defaults, environment, flags),
then the masks come from `imageblur.blurring.full_mask`, the geometry `anonymize` paints.

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
  over images.
The threshold curve reuses one detection run: decoding at the lowest threshold and then
dropping lower scores gives the same boxes as running at the higher threshold, because
suppression only ever removes a box in favour of a better-scored one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imageblur import imaging
from imageblur.blurring import full_mask
from imageblur.bootstrap import build_detector
from imageblur.config import DetectorSpec, Settings, load_settings
from imageblur.detection import file_sha256
from imageblur.domain import Face
from imageblur.ports import FaceDetector

CURVE = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
FP_IOU = 0.5
NO_OVERLAP_IOU = 0.1
MATCH_IOU = 0.5
PROTECTED_SHARE = 0.8


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
            "faces_20": self.faces_20,
            "faces_40": self.faces_40,
            "images": self.images,
        }


def score_image(
    result: ImageResult, threshold: float, mask_scale: float, shape: str, tally: Tally
) -> np.ndarray:
    """Add one image to the tally; return, per labelled face, whether it is protected."""
    faces = [f for f in result.faces if f.score >= threshold]
    det = np.array([[f.x0, f.y0, f.x1, f.y1] for f in faces], float).reshape(-1, 4)
    truth = result.truth
    ious = iou_matrix(truth.boxes, det)
    hit = ious.max(axis=1) >= MATCH_IOU if len(det) else np.zeros(len(truth.boxes), bool)
    mask = full_mask(faces, result.width, result.height, mask_scale=mask_scale, shape=shape)  # type: ignore[arg-type]
    protected = np.zeros(len(truth.boxes), bool)
    labelled = np.zeros_like(mask)
    for i, (x0, y0, x1, y1) in enumerate(truth.boxes):
        xa, ya = max(0, round(x0)), max(0, round(y0))
        xb, yb = min(result.width, round(x1)), min(result.height, round(y1))
        if xb <= xa or yb <= ya:
            continue
        labelled[ya:yb, xa:xb] = True
        protected[i] = mask[ya:yb, xa:xb].mean() >= PROTECTED_SHARE
    height = truth.boxes[:, 3] - truth.boxes[:, 1]
    for limit in (20, 40):
        valid = ~truth.invalid & (height >= limit)
        setattr(tally, f"faces_{limit}", getattr(tally, f"faces_{limit}") + int(valid.sum()))
        setattr(tally, f"hit_{limit}", getattr(tally, f"hit_{limit}") + int((hit & valid).sum()))
        setattr(
            tally,
            f"protected_{limit}",
            getattr(tally, f"protected_{limit}") + int((protected & valid).sum()),
        )
    if len(det):
        best = ious.max(axis=0) if len(truth.boxes) else np.zeros(len(det))
        tally.false_pos += int((best < FP_IOU).sum())
        tally.no_overlap += int((best < NO_OVERLAP_IOU).sum())
    tally.collateral += float((mask & ~labelled).mean())
    tally.images += 1
    return protected


def evaluate(
    results: Sequence[ImageResult], threshold: float, mask_scale: float, shape: str
) -> dict[str, float]:
    tally = Tally()
    for result in results:
        score_image(result, threshold, mask_scale, shape, tally)
    return tally.summary()


def misses_by_attribute(
    results: Sequence[ImageResult], threshold: float, mask_scale: float, shape: str
) -> dict[str, float]:
    """Protected recall of valid faces >= 20 px split by the hard WIDER attributes."""
    groups: dict[str, list[int]] = {}
    names = {"heavy blur": (0, 2), "heavy occlusion": (4, 2), "atypical pose": (5, 1)}
    for result in results:
        protected = score_image(result, threshold, mask_scale, shape, Tally())
        height = result.truth.boxes[:, 3] - result.truth.boxes[:, 1]
        valid = ~result.truth.invalid & (height >= 20)
        for label, (col, value) in names.items():
            sel = valid & (result.truth.attrs[:, col] == value)
            total = groups.setdefault(label, [0, 0])
            total[0] += int((protected & sel).sum())
            total[1] += int(sel.sum())
    return {k: v[0] / v[1] for k, v in groups.items() if v[1]}


def run_detector(
    dataset: Path, truths: Sequence[Truth], detector: FaceDetector
) -> Iterator[tuple[ImageResult, float]]:
    for truth in truths:
        data = (dataset / "images" / truth.name).read_bytes()
        image = imaging.decode(data, max_pixels=1 << 31).rgb
        start = time.perf_counter()
        faces = detector.detect(image)
        seconds = time.perf_counter() - start
        yield ImageResult(image.shape[1], image.shape[0], truth, faces), seconds


def detector_settings(
    settings: Settings, choices: Sequence[str], lowest: float, threads: int
) -> Settings:
    """The settings with the detectors of `--detector` (FAMILY[:MODEL[:THRESHOLD]])."""
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
                classes=settings.detector_classes if family == "yolo" else "",
            )
        )
    main = specs[0] if specs else None
    changes: dict[str, object] = {"detection_threshold": lowest, "detector_threads": threads}
    if main is not None:
        changes |= {
            "detector": main.family,
            "model_path": main.model_path,
            "model_sha256": main.model_sha256,
            "detector_classes": main.classes,
            "extra_detectors": specs[1:],
        }
    return load_settings(**{**settings.model_dump(), **changes})


def main(argv: Sequence[str] | None = None) -> int:
    settings = load_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="folder with images/ and *_bbx_gt.txt")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threshold", type=float, default=settings.detection_threshold)
    parser.add_argument("--mask-scale", type=float, default=settings.mask_scale)
    parser.add_argument("--shape", choices=["ellipse", "box"], default=settings.mask_shape)
    parser.add_argument("--threads", type=int, default=settings.detector_threads)
    parser.add_argument("--limit", type=int, default=0, help="first N images only")
    parser.add_argument(
        "--detector",
        action="append",
        default=[],
        metavar="FAMILY[:MODEL[:THRESHOLD]]",
        help="family and model; repeat to run several together (default: the settings')",
    )
    args = parser.parse_args(argv)

    truths = read_truth(args.dataset)
    if args.limit:
        truths = truths[: args.limit]
    lowest = min(args.threshold, *CURVE)
    detector = build_detector(detector_settings(settings, args.detector, lowest, args.threads))
    results: list[ImageResult] = []
    seconds = 0.0
    pixels = 0
    for i, (result, took) in enumerate(run_detector(args.dataset, truths, detector), 1):
        results.append(result)
        seconds += took
        pixels += result.width * result.height
        if not args.json and i % 50 == 0:
            print(f"  {i}/{len(truths)} images", file=sys.stderr)

    main_figures = evaluate(results, args.threshold, args.mask_scale, args.shape)
    curve = {t: evaluate(results, t, args.mask_scale, args.shape) for t in CURVE}
    report = {
        **main_figures,
        "detectors": args.detector or [settings.detector],
        "threshold": args.threshold,
        "mask_scale": args.mask_scale,
        "shape": args.shape,
        "detect_ms_per_megapixel": 1000 * seconds / max(pixels / 1e6, 1e-9),
        "protected_recall_20_by_attribute": misses_by_attribute(
            results, args.threshold, args.mask_scale, args.shape
        ),
        "curve": [{"threshold": t, **v} for t, v in curve.items()],
    }
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


def print_report(report: dict[str, object]) -> None:
    print(
        f"detectors {', '.join(report['detectors'])}, "  # type: ignore[arg-type]
        f"threshold {report['threshold']}, mask {report['shape']} x{report['mask_scale']}, "
        f"{report['images']} images, {report['faces_20']} valid faces >= 20 px, "
        f"{report['faces_40']} >= 40 px"
    )
    header = "threshold  recall20 recall40  protected20 protected40  FP/image  collateral"
    print(header)
    rows = [{"threshold": report["threshold"], **report}, *report["curve"]]  # type: ignore[list-item]
    for i, row in enumerate(rows):
        mark = "*" if i == 0 else " "
        print(
            f"{mark}{row['threshold']:<9.2f} {row['recall_20']:8.3f} {row['recall_40']:8.3f}"
            f"  {row['protected_recall_20']:11.3f} {row['protected_recall_40']:11.3f}"
            f"  {row['fp_per_image']:8.2f}  {100 * row['collateral_area']:9.2f}%"
        )
    print("protected recall (>= 20 px) of hard faces:", end="")
    for label, value in report["protected_recall_20_by_attribute"].items():  # type: ignore[attr-defined]
        print(f"  {label} {value:.3f}", end="")
    print(f"\ndetection: {report['detect_ms_per_megapixel']:.0f} ms per megapixel")


if __name__ == "__main__":
    raise SystemExit(main())
