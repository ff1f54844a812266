"""JPEG in, JPEG out, with only the blocks under the masks re-encoded.

A full re-encode costs every block of the photo a generation of loss. Here the
original's quantized DCT coefficients are kept bit for bit everywhere except in the MCUs
(the 8 x 8, 16 x 8 or 16 x 16 pixel units of the chroma subsampling) that a mask touches:

1. the header says whether this path applies (Huffman baseline or progressive, 8 bits,
   grey or YCbCr, subsampling 4:4:4, 4:2:2 or 4:2:0 once upright); if not, `UnsupportedJPEGError`
   says why and the caller re-encodes the whole image as before;
2. each mask is snapped outward to whole MCUs (never inward: no face pixel escapes);
3. the blurred pixels of each mask's MCU rectangle are encoded with the original's
   quantization tables and subsampling, and their coefficients read back;
4. one lossless pass over the original (`jpeg_coefficients.transform`) applies the EXIF
   orientation, replaces the touched MCUs' blocks with those coefficients, and writes
   the result with no metadata at all: no EXIF (and so no EXIF thumbnail, which shows
   the unblurred face), no XMP, no MPF index; images appended after the main one (MPF
   previews, Ultra HDR gain maps) are not read at all. The ICC profile is put back.

An orientation that would move partial edge blocks into the picture has no lossless
form (TurboJPEG's "perfect" transform refuses it): `UnsupportedJPEGError` too.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from imageblur.jpeg_coefficients import (
    BlockRow,
    Coefficients,
    Transform,
    TurboJPEGError,
    read_coefficients,
    transform,
)
from imageblur.ports import RGBImage

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in upright pixels; x1, y1 exclusive
Region = tuple[Box, npt.NDArray[np.bool_]]  # a box and which of its pixels were changed

# Natural-order index of each zigzag position (the order DQT segments store tables in).
_ZIGZAG = np.array(
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48,
     41, 34, 27, 20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23,
     30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63]
)  # fmt: skip
_SOF_SUPPORTED = {0xC0: False, 0xC1: False, 0xC2: True}  # marker -> progressive
_SOF_OTHER = {
    0xC3: "lossless JPEG",
    0xC5: "hierarchical JPEG",
    0xC6: "hierarchical JPEG",
    0xC7: "hierarchical JPEG",
    0xC9: "arithmetic coding",
    0xCA: "arithmetic coding",
    0xCB: "arithmetic coding",
    0xCD: "arithmetic coding",
    0xCE: "arithmetic coding",
    0xCF: "arithmetic coding",
}
# EXIF orientation -> the lossless transform that makes the picture upright.
_ORIENT = {
    1: Transform.NONE,
    2: Transform.HFLIP,
    3: Transform.ROT180,
    4: Transform.VFLIP,
    5: Transform.TRANSPOSE,
    6: Transform.ROT90,
    7: Transform.TRANSVERSE,
    8: Transform.ROT270,
}
_TRANSPOSING = {Transform.TRANSPOSE, Transform.ROT90, Transform.TRANSVERSE, Transform.ROT270}
_PILLOW_SUBSAMPLING = {(1, 1): 0, (2, 1): 1, (2, 2): 2}  # luma (h, v) -> 4:4:4, 4:2:2, 4:2:0


class UnsupportedJPEGError(Exception):
    """This JPEG cannot be patched; the message says why (it is logged)."""


@dataclass(frozen=True, slots=True)
class Component:
    h: int
    v: int
    qtable: tuple[int, ...]  # 64 values, natural order


@dataclass(frozen=True, slots=True)
class Layout:
    """What the header says, as stored (before any EXIF orientation)."""

    width: int
    height: int
    components: tuple[Component, ...]
    progressive: bool


@dataclass(frozen=True, slots=True)
class _Patch:
    """Re-encoded blocks of one mask: their position in blocks of each component, the
    blocks themselves, and which of them replace the original's."""

    origin: tuple[tuple[int, int], ...]  # per component: (block row, block col)
    coefs: tuple[Coefficients, ...]
    use: tuple[npt.NDArray[np.bool_], ...]


def patch(
    original: bytes,
    upright: RGBImage,
    regions: Sequence[Region],
    *,
    orientation: int,
    grayscale: bool,
    icc_profile: bytes | None,
) -> bytes:
    """The original JPEG with only the MCUs that `regions` touch taken from `upright`
    (the decoded, upright, anonymized pixels), oriented and stripped of metadata.

    Raises `UnsupportedJPEGError` when this JPEG needs the full re-encode instead.
    """
    layout = read_layout(original)
    op = _ORIENT.get(orientation, Transform.NONE)
    comps = _oriented(layout.components, transposed=op in _TRANSPOSING)
    if grayscale != (len(comps) == 1):
        raise UnsupportedJPEGError("decoded colour mode does not match the stream")
    width, height = (
        (layout.height, layout.width) if op in _TRANSPOSING else (layout.width, layout.height)
    )
    if upright.shape[:2] != (height, width):
        raise UnsupportedJPEGError(f"decoded size {upright.shape[1::-1]} is not {width}x{height}")
    mcu_w, mcu_h = 8 * max(c.h for c in comps), 8 * max(c.v for c in comps)
    patches = [_encode_patch(upright, box, mask, comps, (mcu_w, mcu_h)) for box, mask in regions]
    rows = _rows_by_component(patches, len(comps))

    def paste(row: BlockRow) -> None:
        for col, coefs, use in rows[row.component].get(row.row, ()):
            dst = row.blocks[col : col + len(use)]
            dst[use] = coefs[use]

    try:
        out = transform(
            original,
            op=op,
            on_rows=paste,
            rows=[component.keys() for component in rows],
            progressive=layout.progressive,
        )
    except TurboJPEGError as exc:
        raise UnsupportedJPEGError(f"lossless transform refused: {exc}") from exc
    return with_icc_profile(out, icc_profile) if icc_profile else out


def read_layout(data: bytes) -> Layout:
    """Parse the markers up to the first scan. Raises `UnsupportedJPEGError` for anything the
    patch path does not handle."""
    tables: dict[int, tuple[int, ...]] = {}
    frame: tuple[int, bytes] | None = None
    adobe_transform: int | None = None
    for marker, payload in _segments(data):
        if marker == 0xDB:
            tables.update(_quant_tables(payload))
        elif marker in _SOF_SUPPORTED or marker in _SOF_OTHER:
            frame = (marker, payload)
        elif marker == 0xEE and payload[:5] == b"Adobe" and len(payload) >= 12:
            adobe_transform = payload[11]
    if frame is None:
        raise UnsupportedJPEGError("no frame header before the first scan")
    marker, sof = frame
    if marker in _SOF_OTHER:
        raise UnsupportedJPEGError(_SOF_OTHER[marker])
    if len(sof) < 6 or sof[0] != 8:
        raise UnsupportedJPEGError("not an 8-bit JPEG")
    height, width, count = int.from_bytes(sof[1:3]), int.from_bytes(sof[3:5]), sof[5]
    if count not in (1, 3) or len(sof) < 6 + 3 * count:
        raise UnsupportedJPEGError(f"{count} colour components (CMYK or unusual)")
    ids = bytes(sof[6 + 3 * i] for i in range(count))
    if count == 3 and (adobe_transform == 0 or (ids == b"RGB" and adobe_transform is None)):
        raise UnsupportedJPEGError("RGB-coded JPEG")
    components = []
    for i in range(count):
        hv, tq = sof[7 + 3 * i], sof[8 + 3 * i]
        if tq not in tables:
            raise UnsupportedJPEGError(f"quantization table {tq} is not defined")
        h, v = (1, 1) if count == 1 else (hv >> 4, hv & 15)
        components.append(Component(h, v, tables[tq]))
    return Layout(width, height, tuple(components), _SOF_SUPPORTED[marker])


def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of every segment before the first scan (SOS)."""
    if data[:2] != b"\xff\xd8":
        raise UnsupportedJPEGError("not a JPEG stream")
    out: list[tuple[int, bytes]] = []
    pos = 2
    while True:
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1  # fill bytes before a marker
        if pos >= len(data) or data[pos - 1] != 0xFF:
            raise UnsupportedJPEGError("corrupt marker structure")
        marker = data[pos]
        pos += 1
        if marker == 0xDA:
            return out
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:
            continue  # standalone markers have no length
        if pos + 2 > len(data):
            raise UnsupportedJPEGError("truncated header")
        length = int.from_bytes(data[pos : pos + 2])
        if length < 2 or pos + length > len(data):
            raise UnsupportedJPEGError("corrupt segment length")
        out.append((marker, data[pos + 2 : pos + length]))
        pos += length


def _quant_tables(payload: bytes) -> dict[int, tuple[int, ...]]:
    out: dict[int, tuple[int, ...]] = {}
    pos = 0
    while pos < len(payload):
        precision, slot = payload[pos] >> 4, payload[pos] & 15
        size = 128 if precision else 64
        raw = payload[pos + 1 : pos + 1 + size]
        if len(raw) != size:
            raise UnsupportedJPEGError("corrupt quantization table")
        zigzag = np.frombuffer(raw, ">u2" if precision else "u1").astype(np.int32)
        natural = np.empty(64, np.int32)
        natural[_ZIGZAG] = zigzag
        out[slot] = tuple(int(v) for v in natural)
        pos += 1 + size
    return out


def _oriented(components: tuple[Component, ...], *, transposed: bool) -> tuple[Component, ...]:
    comps = tuple(Component(c.v, c.h, c.qtable) for c in components) if transposed else components
    if len(comps) == 3:
        luma, chroma = (comps[0].h, comps[0].v), [(c.h, c.v) for c in comps[1:]]
        if luma not in _PILLOW_SUBSAMPLING or any(hv != (1, 1) for hv in chroma):
            raise UnsupportedJPEGError(f"chroma subsampling {luma} / {chroma} once upright")
    return comps


def _encode_patch(
    upright: RGBImage,
    box: Box,
    mask: npt.NDArray[np.bool_],
    comps: tuple[Component, ...],
    mcu: tuple[int, int],
) -> _Patch:
    """Encode the MCU-aligned rectangle around `box` the way the original was encoded,
    and mark the MCUs that `mask` (the changed pixels of `box`) touches."""
    mcu_w, mcu_h = mcu
    height, width = upright.shape[:2]
    x0, y0, x1, y1 = box
    mx0, my0 = x0 // mcu_w, y0 // mcu_h
    mx1, my1 = -(-x1 // mcu_w), -(-y1 // mcu_h)
    padded = np.zeros(((my1 - my0) * mcu_h, (mx1 - mx0) * mcu_w), bool)
    padded[y0 - my0 * mcu_h : y1 - my0 * mcu_h, x0 - mx0 * mcu_w : x1 - mx0 * mcu_w] = mask
    touched = padded.reshape(my1 - my0, mcu_h, mx1 - mx0, mcu_w).any(axis=(1, 3))
    crop = upright[my0 * mcu_h : min(height, my1 * mcu_h), mx0 * mcu_w : min(width, mx1 * mcu_w)]
    coefs = read_coefficients(_encode_like(crop, comps))
    if len(coefs) != len(comps):
        raise UnsupportedJPEGError("patch has a different number of components")
    origin, use = [], []
    for comp, plane in zip(comps, coefs, strict=True):
        blocks = np.repeat(np.repeat(touched, comp.v, axis=0), comp.h, axis=1)
        use.append(np.ascontiguousarray(blocks[: plane.shape[0], : plane.shape[1]]))
        origin.append((my0 * comp.v, mx0 * comp.h))
    return _Patch(tuple(origin), tuple(coefs), tuple(use))


def _encode_like(crop: RGBImage, comps: tuple[Component, ...]) -> bytes:
    """`crop` as a JPEG with the original's quantization tables and subsampling;
    checked, since blocks quantized otherwise must not be mixed in."""
    pil = (
        Image.fromarray(np.ascontiguousarray(crop[:, :, 0]), "L")
        if len(comps) == 1
        else (Image.fromarray(np.ascontiguousarray(crop), "RGB"))
    )
    options: dict[str, object] = {"qtables": [list(c.qtable) for c in comps]}
    if len(comps) == 3:
        options["subsampling"] = _PILLOW_SUBSAMPLING[(comps[0].h, comps[0].v)]
    out = io.BytesIO()
    pil.save(out, "JPEG", **options)
    data = out.getvalue()
    got = read_layout(data).components
    if [(c.h, c.v, c.qtable) for c in got] != [(c.h, c.v, c.qtable) for c in comps]:
        raise UnsupportedJPEGError("the patch could not be encoded with the original's tables")
    return data


def _rows_by_component(
    patches: Sequence[_Patch], count: int
) -> list[dict[int, list[tuple[int, Coefficients, npt.NDArray[np.bool_]]]]]:
    """For each component: block row -> (first block col, coefficients, use) to paste."""
    rows: list[dict[int, list[tuple[int, Coefficients, npt.NDArray[np.bool_]]]]] = [
        {} for _ in range(count)
    ]
    for p in patches:
        for c in range(count):
            top, left = p.origin[c]
            for r in range(p.coefs[c].shape[0]):
                if p.use[c][r].any():
                    rows[c].setdefault(top + r, []).append((left, p.coefs[c][r], p.use[c][r]))
    return rows


def with_icc_profile(jpeg: bytes, profile: bytes) -> bytes:
    """`jpeg` with `profile` in APP2 ICC_PROFILE segments after SOI and any JFIF APP0."""
    chunk = 65519  # 65535 - length (2) - "ICC_PROFILE\0" (12) - sequence and count (2)
    parts = [profile[i : i + chunk] for i in range(0, len(profile), chunk)]
    if len(parts) > 255:
        raise UnsupportedJPEGError("ICC profile too large for APP2 segments")
    segments = b"".join(
        b"\xff\xe2"
        + (len(part) + 16).to_bytes(2, "big")
        + b"ICC_PROFILE\x00"
        + bytes([i + 1, len(parts)])
        + part
        for i, part in enumerate(parts)
    )
    pos = 2
    if jpeg[2:4] == b"\xff\xe0":  # keep JFIF first, as its specification requires
        pos = 4 + int.from_bytes(jpeg[4:6], "big")
    return jpeg[:pos] + segments + jpeg[pos:]
