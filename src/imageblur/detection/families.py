"""The detector families by name, and the kinds of region they find.

The settings validate against these names; a family's code is the module of the same
name in this package, imported only when a detector is built (`factory`). This module
imports no runtime, so the API process reads its settings without loading OpenCV,
onnxruntime or OpenVINO.
"""

from __future__ import annotations

from typing import Literal, get_args

from imageblur.domain import RegionKind

Family = Literal["centerface", "retinaface", "scrfd", "yolo"]
FAMILIES: tuple[Family, ...] = get_args(Family)
# The family whose model is installed with the package; the others are brought.
SHIPPED: Family = "centerface"
# The family whose export finds several classes, named by a class map.
CLASS_MAPPED: Family = "yolo"
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
