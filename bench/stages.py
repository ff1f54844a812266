#!/usr/bin/env python3
"""Where the worker's time goes on a set of photos, stage by stage.

    python bench/stages.py [FOLDER] [--limit N] [--threads T] [--json]

FOLDER (default ../shared/wider-face-dev/images) is read in place: every JPEG under it,
sorted by path, the first N with `--limit`. The worker's own anonymizer
(`bootstrap.worker_anonymizer`, default settings) takes them one at a time, so that no
stage waits for another image's; per image, on average:

- decode, blur (masks and hiding), patch/encode (the lossless JPEG patch, or the whole
  re-encode): the anonymizer's own stopwatch (`AnonymizedImage.timings`);
- detect, and within it inference (the network's passes, `TileModel.run` with the
  decoding of its output maps, one call per tile of each pyramid scale; summed over
  the tiles, which OpenVINO runs two at a time on two cores, so it may exceed detect)
  and group (the grouping of every pass's candidates, `detection.pyramid.grouped`):
  both timed by wrapping those functions in this process; the product's code is not
  changed;
- other: what the call took beyond those stages (the pixel budget's header read, ...).

Then, outside the timed calls: the share of 16 x 16 blocks each output changed and its
size against the input's. `bench/speed.py` runs this as a child for its profile.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
REAL_PHOTOS = ROOT.parent / "shared" / "wider-face-dev" / "images"
STAGES = ("decode", "detect", "inference", "group", "blur", "encode", "other")


def photos_in(folder: Path, limit: int | None = None) -> list[Path]:
    """Every JPEG under `folder`, sorted by path: the same list for every tool."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        raise SystemExit(f"no JPEG photos under {folder}")
    return paths[:limit] if limit else paths


class Tally:
    """Seconds spent in, and calls of, the functions it wraps."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        return timed


def tile_models(detector: Any) -> list[Any]:
    """The network(s) under a detector: a `PyramidDetector`'s `model`, or those of each
    detector a `CombinedDetector` holds."""
    if hasattr(detector, "model"):
        return [detector.model]
    return [m for inner in getattr(detector, "detectors", []) for m in tile_models(inner)]


def install_tallies(detector: Any) -> dict[str, Tally]:
    """Wrap the network's passes and the grouping. This process only profiles and then
    exits, so nothing is unwrapped."""
    from imageblur.detection import pyramid

    tallies = {"inference": Tally(), "group": Tally()}
    for model in tile_models(detector):
        model.run = tallies["inference"].wrap(model.run)  # on the instance only
    # `detect_regions` looks `grouped` up in its module at each call. Should a rewrite
    # rename it, `group` (what it calls) is timed instead; neither: no group figure.
    for name in ("grouped", "group"):
        if hasattr(pyramid, name):
            setattr(pyramid, name, tallies["group"].wrap(getattr(pyramid, name)))
            break
    return tallies


def changed_blocks(before: bytes, after: bytes) -> float:
    """Share of 16 x 16 blocks whose inside (each block's one-pixel border ignored, as
    chroma upsampling reads across it) decodes to other pixels in `after`."""
    old = np.asarray(Image.open(io.BytesIO(before)).convert("RGB"))
    new = np.asarray(Image.open(io.BytesIO(after)).convert("RGB"))
    if old.shape != new.shape:
        return 1.0
    diff = (old != new).any(axis=2)
    rows, cols = diff.shape[0] // 16, diff.shape[1] // 16
    blocks = diff[: rows * 16, : cols * 16].reshape(rows, 16, cols, 16)
    return float(blocks[:, 1:15, :, 1:15].any(axis=(1, 3)).mean())


def profile(anonymizer: Any, tallies: dict[str, Tally], paths: Sequence[Path]) -> dict[str, Any]:
    """Milliseconds per image of each stage over `paths`, one image at a time."""
    sums = dict.fromkeys(STAGES, 0.0)
    before = {k: (t.seconds, t.calls) for k, t in tallies.items()}
    total = cpu = 0.0
    regions = fallbacks = 0
    changed: list[float] = []
    in_bytes = out_bytes = 0
    for path in paths:
        data = path.read_bytes()
        cpu_start = _cpu_seconds()
        start = time.perf_counter()
        result = anonymizer(data)
        seconds = time.perf_counter() - start
        cpu += _cpu_seconds() - cpu_start
        total += seconds
        for stage, value in result.timings.items():
            sums[stage] += value
        sums["other"] += seconds - sum(result.timings.values())
        regions += result.faces + result.plates
        fallbacks += result.jpeg_fallback is not None
        changed.append(changed_blocks(data, result.data))
        in_bytes, out_bytes = in_bytes + len(data), out_bytes + len(result.data)
    for key, tally in tallies.items():
        sums[key] = tally.seconds - before[key][0]
    n = len(paths)
    out: dict[str, Any] = {f"{k}_ms": 1000 * v / n for k, v in sums.items()}
    out.update(
        {
            "images": n,
            "total_ms": 1000 * total / n,
            "cpu_ms": 1000 * cpu / n,
            "passes_per_image": (tallies["inference"].calls - before["inference"][1]) / n,
            "regions_per_image": regions / n,
            "full_reencodes": fallbacks,
            "blocks_changed": sum(changed) / n,
            "size_ratio": out_bytes / in_bytes,
        }
    )
    return out


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return float(usage.ru_utime + usage.ru_stime)


def profiles(sets: dict[str, list[Path]], threads: int | None) -> dict[str, dict[str, Any]]:
    """Each set's profile through one worker anonymizer, after one warm-up image (the
    first call's allocations and the network's first-shape compilation)."""
    from imageblur.bootstrap import build_detector, worker_anonymizer
    from imageblur.config import load_settings

    overrides = {} if threads is None else {"detector_threads": threads}
    settings = load_settings(**overrides)
    anonymizer = worker_anonymizer(settings, build_detector(settings))
    tallies = install_tallies(anonymizer.detector)
    anonymizer(next(iter(sets.values()))[0].read_bytes())
    return {label: profile(anonymizer, tallies, paths) for label, paths in sets.items()}


HEADER = (
    "ms per image, one at a time   decode  detect (infer group passes)  blur"
    "  patch/enc  other  total    CPU  regions"
)


def print_profile(label: str, p: dict[str, Any]) -> None:
    name = f"{label} ({p['images']})"
    print(
        f"  {name:<27} {p['decode_ms']:7.1f} {p['detect_ms']:7.1f}"
        f" ({p['inference_ms']:5.1f} {p['group_ms']:5.1f} {p['passes_per_image']:6.2f})"
        f" {p['blur_ms']:5.1f} {p['encode_ms']:10.1f} {p['other_ms']:6.1f}"
        f" {p['total_ms']:6.1f} {p['cpu_ms']:6.1f} {p['regions_per_image']:8.1f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", default=REAL_PHOTOS)
    parser.add_argument("--limit", type=int, help="the first N photos only")
    parser.add_argument("--threads", type=int, help="detector threads (default: settings)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    # bench/speed.py: a JSON file of {label: [paths]}, each set profiled in turn.
    parser.add_argument("--_sets", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._sets:
        listed = json.loads(args._sets.read_text())
        sets = {label: [Path(p) for p in paths] for label, paths in listed.items()}
    else:
        sets = {args.folder.name: photos_in(args.folder, args.limit)}
    report = profiles(sets, args.threads)
    if args.json:
        print(json.dumps(report))
        return 0
    print(HEADER)
    for label, p in report.items():
        print_profile(label, p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
