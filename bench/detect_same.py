#!/usr/bin/env python3
"""Whether two versions of the detection code find the same regions.

    python bench/detect_same.py dump OUT.jsonl [FOLDER ...] [--inflight K] [--limit N]
    python bench/detect_same.py compare A.jsonl B.jsonl [--tolerance 1e-6]

`dump`: the default detector (`bootstrap.build_detector`, default settings) on every JPEG
under each FOLDER (default: the development subset's photos, ../shared/wider-face-dev/
images), sorted by path, K images in flight (default: the worker's 2, so the calls take
the infer requests the worker's do); one JSON line per photo: its hidden and uncertain
regions (x0 y0 x1 y1 score kind) in the detector's order. Photos made by
`bench/speed.py --_make DIR` give the generated set.

`compare`: the same photos, the same number of hidden and uncertain regions, in the
same order, every coordinate and score within the tolerance (default 1e-6); exits 1 and
names the first photos that differ otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REAL_PHOTOS = ROOT.parent / "shared" / "wider-face-dev" / "images"


def dump(out: Path, folders: list[Path], inflight: int, limit: int | None) -> None:
    import numpy as np
    from PIL import Image

    from imageblur.bootstrap import build_detector
    from imageblur.config import Settings

    paths = [p for f in folders for p in sorted(f.rglob("*.jpg"))]
    paths = paths[:limit] if limit else paths
    detector = build_detector(Settings())

    def regions(path: Path) -> dict[str, Any]:
        image = np.asarray(Image.open(path).convert("RGB"))
        hidden, uncertain = detector.detect_regions(image)
        rows = {
            name: [[f.x0, f.y0, f.x1, f.y1, f.score, f.kind] for f in faces]
            for name, faces in (("hidden", hidden), ("uncertain", uncertain))
        }
        return {"photo": str(path), **rows}

    with ThreadPoolExecutor(max_workers=inflight) as pool, out.open("w") as fh:
        for line in pool.map(regions, paths):
            fh.write(json.dumps(line) + "\n")
    print(f"{len(paths)} photos -> {out}")


def differs(a: dict[str, Any], b: dict[str, Any], tolerance: float) -> str | None:
    """Why two photos' lines differ, None if they agree."""
    for key in ("hidden", "uncertain"):
        if len(a[key]) != len(b[key]):
            return f"{key}: {len(a[key])} against {len(b[key])} regions"
        for ra, rb in zip(a[key], b[key], strict=True):
            apart = max(abs(x - y) for x, y in zip(ra[:5], rb[:5], strict=True))
            if ra[5] != rb[5] or apart > tolerance:
                return f"{key}: {ra} against {rb}"
    return None


def compare(first: Path, second: Path, tolerance: float) -> int:
    a = [json.loads(line) for line in first.read_text().splitlines()]
    b = [json.loads(line) for line in second.read_text().splitlines()]
    if [x["photo"] for x in a] != [y["photo"] for y in b]:
        print("not the same photos")
        return 1
    largest = 0.0
    bad = []
    for x, y in zip(a, b, strict=True):
        why = differs(x, y, tolerance)
        if why:
            bad.append(f"{x['photo']}: {why}")
            continue
        for key in ("hidden", "uncertain"):
            for ra, rb in zip(x[key], y[key], strict=True):
                largest = max([largest, *(abs(p - q) for p, q in zip(ra[:5], rb[:5], strict=True))])
    regions = sum(len(x["hidden"]) + len(x["uncertain"]) for x in a)
    print(
        f"{len(a)} photos, {regions} regions: {len(bad)} photos differ;"
        f" largest difference where they agree {largest:g}"
    )
    for line in bad[:10]:
        print(" ", line)
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("out", type=Path)
    d.add_argument("folders", type=Path, nargs="*", default=[REAL_PHOTOS])
    d.add_argument("--inflight", type=int, default=2)
    d.add_argument("--limit", type=int)
    c = sub.add_parser("compare")
    c.add_argument("first", type=Path)
    c.add_argument("second", type=Path)
    c.add_argument("--tolerance", type=float, default=1e-6)
    args = parser.parse_args()
    if args.command == "dump":
        dump(args.out, args.folders, args.inflight, args.limit)
        return 0
    return compare(args.first, args.second, args.tolerance)


if __name__ == "__main__":
    sys.exit(main())
