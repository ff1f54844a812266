"""Detector families that operators bring (RetinaFace, SCRFD, YOLO), behind the
`FaceDetector` port, sharing the pyramid, tiling and grouping of `imageblur.detection`
(where the shipped CenterFace detector lives).

Each family is a small module that knows one export's tensors: how to prepare a tile,
which outputs to expect, and how to decode them into boxes. `pyramid.PyramidDetector`
runs any of them over the image pyramid; `factory.make_detector` loads the chosen ones
and runs several together as one. This module stays light (the settings import it).
"""

from __future__ import annotations

from typing import get_args

from imageblur.domain import RegionKind

FAMILIES = ("centerface", "retinaface", "scrfd", "yolo")
KINDS: tuple[RegionKind, ...] = get_args(RegionKind)  # ("face", "plate")


def parse_classes(text: str) -> dict[int, RegionKind]:
    """A YOLO class map, `"0=plate, 2=face"` -> {0: "plate", 2: "face"}; ValueError if
    malformed or empty."""
    out: dict[int, RegionKind] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        index, sep, kind = item.partition("=")
        kind = kind.strip().lower()
        if not sep or not index.strip().isdigit() or kind not in KINDS:
            raise ValueError(f"class map entries are INDEX=face or INDEX=plate, not {item!r}")
        out[int(index)] = "face" if kind == "face" else "plate"
    if not out:
        raise ValueError("a yolo detector needs a class map, e.g. 0=plate")
    return out
