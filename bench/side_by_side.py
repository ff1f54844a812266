"""What each tool actually hid, read from the pixels it wrote: imageblur and deface side by
side on lossless copies of the same images (used by `detection.py --vs-deface`).

Both tools run in solid mode (black fill). The copies are PNGs of the decoded images in
which every pure black pixel is lifted to (1, 1, 1), an invisible change: afterwards a
pure black output pixel is one the tool filled, and nothing else.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from imageblur import imaging

Hidden = npt.NDArray[np.bool_]


def write_copy(source: Path, target: Path) -> tuple[int, int]:
    """A PNG of the decoded (upright) image, black lifted; returns (width, height)."""
    rgb = imaging.decode(source.read_bytes(), max_pixels=1 << 31).rgb.copy()
    black = (rgb == 0).all(axis=2)
    rgb[black] = 1
    Image.fromarray(rgb, "RGB").save(target, "PNG", compress_level=1)
    return rgb.shape[1], rgb.shape[0]


def hidden_pixels(png: Path) -> Hidden:
    """The pixels a tool filled black in its output."""
    rgb = np.asarray(Image.open(png).convert("RGB"))
    return np.asarray((rgb == 0).all(axis=2))


def stray_regions(hidden: Hidden, boxes: npt.NDArray[np.float64]) -> int:
    """Connected hidden regions (8-neighbourhood) that touch no labelled box at all."""
    count, labels = cv2.connectedComponents(hidden.astype(np.uint8), connectivity=8)
    if count <= 1:
        return 0
    touching = np.zeros(count, bool)
    height, width = hidden.shape
    for x0, y0, x1, y1 in boxes:
        xa, ya = max(0, round(x0)), max(0, round(y0))
        xb, yb = min(width, round(x1)), min(height, round(y1))
        if xb > xa and yb > ya:
            touching[np.unique(labels[ya:yb, xa:xb])] = True
    touching[0] = True  # label 0 is the background, not a region
    return int((~touching).sum())


def run_deface(deface: Path, copies: Sequence[Path], out_dir: Path) -> list[Path]:
    """deface 1.5.0 with its defaults (threshold 0.2, mask x1.3), solid fill; one output
    PNG per copy, in order. Images go in batches to spread its start-up cost."""
    from speed import _clean_env  # the bench's own helper: deface's venv, not ours

    outputs = [out_dir / f"{path.stem}_anonymized.png" for path in copies]
    batch = 50
    for start in range(0, len(copies), batch):
        chunk = copies[start : start + batch]
        for path in chunk:
            # deface takes one -o; without it, it writes NAME_anonymized.png beside NAME.
            (out_dir / path.name).symlink_to(path)
        subprocess.run(
            [str(deface), "--replacewith", "solid", *(str(out_dir / p.name) for p in chunk)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_clean_env(),
        )
    missing = [p for p in outputs if not p.is_file()]
    if missing:
        raise SystemExit(f"deface wrote no output for {len(missing)} images, e.g. {missing[0]}")
    return outputs
