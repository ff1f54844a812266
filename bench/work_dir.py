#!/usr/bin/env python3
"""Peak use of a worker's work dir while it runs picture jobs: the figure behind the
worker's `emptyDir` sizeLimit (docs/operations.md, "Work folders").

Builds an embedded worker (local store, SQLite, in-process queue) in a temporary folder,
with TMPDIR pointed at an empty folder of its own, submits the example pictures and
photos made from them (a 12 MP JPEG, PNG, WebP and HEIC, a 3 MP AVIF; `--quick`: the
examples and a small HEIC) and runs their jobs with the worker's `JobProcessor`, while a
thread walks the work dir and TMPDIR every 2 ms. Prints the peak bytes and files of each
and what is left after the jobs. Asserts nothing.

    .venv/bin/python bench/work_dir.py [--json] [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from PIL import Image
from provenance import measured_commit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from phone_photos import avif, heic  # noqa: E402 - a test helper, found through tests/

EXAMPLES = ROOT.parent / "shared" / "example-pictures"


def _size(path: Path) -> tuple[int, int]:
    """Bytes and files under `path` (files may vanish while it is walked)."""
    total = files = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += (Path(folder) / name).lstat().st_size
            except FileNotFoundError:
                continue
            files += 1
    return total, files


class Peak:
    """Walks the folders every 2 ms until stopped; the largest bytes and files seen."""

    def __init__(self, **folders: Path) -> None:
        self.folders = folders
        self.peak = {name: {"bytes": 0, "files": 0} for name in folders}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._walk)

    def _walk(self) -> None:
        while not self._stop.is_set():
            for name, folder in self.folders.items():
                total, files = _size(folder)
                seen = self.peak[name]
                seen["bytes"], seen["files"] = max(seen["bytes"], total), max(seen["files"], files)
            self._stop.wait(0.002)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def pictures(quick: bool) -> dict[str, bytes]:
    found = {p.name: p.read_bytes() for p in sorted(EXAMPLES.glob("*.jpg"))}
    first = Image.open(io.BytesIO(next(iter(found.values())))).convert("RGB")
    if quick:
        return {**found, "small.heic": heic(first.resize((640, 480)))}
    big = first.resize((4000, 3000))
    for fmt in ("JPEG", "PNG", "WEBP"):
        out = io.BytesIO()
        big.save(out, fmt)
        found[f"12mp.{fmt.lower()}"] = out.getvalue()
    found["12mp.heic"] = heic(big)
    found["3mp.avif"] = avif(big.resize((2000, 1500)))
    return found


def measure(folder: Path, quick: bool) -> dict[str, Any]:
    system_temp = folder / "system-temp"
    system_temp.mkdir()
    os.environ["TMPDIR"] = str(system_temp)
    tempfile.tempdir = None  # read TMPDIR again
    from imageblur.bootstrap import build
    from imageblur.config import load_settings
    from imageblur.logs import configure_logging

    configure_logging(fmt="console", level="warning")  # the figures, not every job's line

    container = build(load_settings(data_dir=folder / "data"), with_detector=True)
    try:
        assert container.work is not None
        processor, queue = container.processor(), container.backends.queue
        inputs = pictures(quick)
        for data in inputs.values():
            container.images.submit(data)
        outcomes = []
        with Peak(work_dir=container.work.folder, system_temp=system_temp) as peak:
            while (delivery := queue.receive(timeout_s=0.5)) is not None:
                outcomes.append(str(processor.handle(delivery)))
        left = sorted(p.name for p in container.work.folder.iterdir())
    finally:
        container.close()
    return {"pictures": sorted(inputs), "outcomes": outcomes, "peak": peak.peak, "left": left}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="the examples and a small HEIC")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-work-dir-") as folder:
        report = {"commit": measured_commit(), **measure(Path(folder), args.quick)}
    if args.json:
        print(json.dumps(report))
        return
    print(f"commit {report['commit']}: {len(report['outcomes'])} jobs, {report['outcomes']}")
    for name, seen in report["peak"].items():
        print(f"{name:12} peak {seen['bytes']} bytes, {seen['files']} files")
    print(f"left in the worker's folder after the jobs: {report['left'] or 'nothing'}")


if __name__ == "__main__":
    main()
