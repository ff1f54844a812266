"""JPEG in, JPEG out, with only the blocks under the masks re-encoded.

A full re-encode costs every block of the photo a generation of loss. Here the
original's quantized DCT coefficients are kept bit for bit everywhere except in the MCUs
(the 8 x 8, 16 x 8 or 16 x 16 pixel units of the chroma subsampling) that a mask touches:

1. the header says whether this path applies (Huffman baseline or progressive, 8 bits,
   grey or YCbCr, subsampling 4:4:4, 4:2:2 or 4:2:0 once upright); if not, `UnsupportedJPEGError`
   says why and the caller re-encodes the whole image as before;
2. each mask is snapped outward to whole MCUs (never inward: no face pixel escapes);
3. the MCU rows and columns that any mask touches are cut out of the anonymized pixels
   and put together as one smaller picture (never larger than the image, however many
   masks there are), which is encoded once with the original's quantization tables and
   subsampling, and its coefficients read back once: a block depends only on the pixels
   of its own MCU, so each block comes out as if the whole image had been encoded;
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

from imageblur import jpeg_scans
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
class _Paste:
    """One component's re-encoded blocks and where they go in the result."""

    coefs: Coefficients  # the cut-out picture's blocks: rows x cols x 64
    rows: dict[int, int]  # result block row -> cut-out block row, rows with blocks to paste
    cols: npt.NDArray[np.intp]  # result block column of each cut-out block column
    use: npt.NDArray[np.bool_]  # cut-out rows x cols: the blocks that replace the original's


def patch(
    original: bytes,
    upright: RGBImage,
    regions: Sequence[Region],
    *,
    orientation: int,
    grayscale: bool,
    icc_profile: bytes | None,
    max_scans: int = jpeg_scans.MAX_SCANS,
) -> bytes:
    """The original JPEG with only the MCUs that `regions` touch taken from `upright`
    (the decoded, upright, anonymized pixels), oriented and stripped of metadata.

    Raises `UnsupportedJPEGError` when this JPEG needs the full re-encode instead, among
    others one with more than `max_scans` scans: the library's own limit (500) is fixed.
    """
    try:
        jpeg_scans.count_scans(original, limit=max_scans)
    except ValueError as exc:  # TooManyScansError, MalformedJPEGError
        raise UnsupportedJPEGError(str(exc)) from exc
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
    mcu = (8 * max(c.h for c in comps), 8 * max(c.v for c in comps))
    pastes = _re_encoded(upright, _touched(regions, upright.shape[:2], mcu), comps, mcu)

    def paste(row: BlockRow) -> None:
        p = pastes[row.component]
        k = p.rows.get(row.row)
        if k is not None:
            use = p.use[k]
            row.blocks[p.cols[use]] = p.coefs[k][use]

    try:
        out = transform(
            original,
            op=op,
            on_rows=paste,
            rows=[p.rows.keys() for p in pastes] if pastes else [set() for _ in comps],
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
        out[slot] = tuple(natural.tolist())
        pos += 1 + size
    return out


def _oriented(components: tuple[Component, ...], *, transposed: bool) -> tuple[Component, ...]:
    comps = tuple(Component(c.v, c.h, c.qtable) for c in components) if transposed else components
    if len(comps) == 3:
        luma, chroma = (comps[0].h, comps[0].v), [(c.h, c.v) for c in comps[1:]]
        if luma not in _PILLOW_SUBSAMPLING or any(hv != (1, 1) for hv in chroma):
            raise UnsupportedJPEGError(f"chroma subsampling {luma} / {chroma} once upright")
    return comps


def _touched(
    regions: Sequence[Region], size: tuple[int, int], mcu: tuple[int, int]
) -> npt.NDArray[np.bool_]:
    """The MCU grid (rows x cols) of the upright image: True where a mask has a pixel."""
    mcu_w, mcu_h = mcu
    height, width = size
    grid = np.zeros((-(-height // mcu_h), -(-width // mcu_w)), bool)
    for (x0, y0, x1, y1), mask in regions:
        mx0, my0 = x0 // mcu_w, y0 // mcu_h
        mx1, my1 = -(-x1 // mcu_w), -(-y1 // mcu_h)
        padded = np.zeros(((my1 - my0) * mcu_h, (mx1 - mx0) * mcu_w), bool)
        padded[y0 - my0 * mcu_h : y1 - my0 * mcu_h, x0 - mx0 * mcu_w : x1 - mx0 * mcu_w] = mask
        units = padded.reshape(my1 - my0, mcu_h, mx1 - mx0, mcu_w)
        grid[my0:my1, mx0:mx1] |= units.any(axis=(1, 3))
    return grid


def _re_encoded(
    upright: RGBImage,
    touched: npt.NDArray[np.bool_],
    comps: tuple[Component, ...],
    mcu: tuple[int, int],
) -> list[_Paste]:
    """Encode the MCU rows and columns that `touched` holds, cut out of `upright` as one
    picture, the way the original was encoded; per component, the blocks to paste. An
    MCU at the image's right or bottom edge stays at the cut-out's edge, so its partial
    blocks are padded as the whole image's are. Empty when nothing is touched."""
    mcu_rows, mcu_cols = np.flatnonzero(touched.any(axis=1)), np.flatnonzero(touched.any(axis=0))
    if not len(mcu_rows):
        return []
    if len(mcu_rows) == touched.shape[0] and len(mcu_cols) == touched.shape[1]:
        cut_out = upright  # every MCU row and column: no copy of the whole image
    else:
        cut_out = _cut_out(upright, mcu_rows, mcu_cols, mcu)
    coefs = read_coefficients(_encode_like(cut_out, comps))
    del cut_out
    if len(coefs) != len(comps):
        raise UnsupportedJPEGError("patch has a different number of components")
    grid = touched[np.ix_(mcu_rows, mcu_cols)]
    pastes = []
    for comp, plane in zip(comps, coefs, strict=True):
        rows, cols = _blocks(mcu_rows, comp.v)[: plane.shape[0]], _blocks(mcu_cols, comp.h)
        cols = cols[: plane.shape[1]]
        use = np.repeat(np.repeat(grid, comp.v, axis=0), comp.h, axis=1)[: len(rows), : len(cols)]
        keep = {int(rows[k]): int(k) for k in np.flatnonzero(use.any(axis=1))}
        pastes.append(_Paste(plane, keep, cols, np.ascontiguousarray(use)))
    return pastes


def _cut_out(
    upright: RGBImage,
    mcu_rows: npt.NDArray[np.intp],
    mcu_cols: npt.NDArray[np.intp],
    mcu: tuple[int, int],
) -> RGBImage:
    """These MCU rows and columns of `upright`, put together. Copied run of rows by run
    of rows into the result: no intermediate bigger than the result, and a third of the
    time of one `np.ix_` index on photos."""
    mcu_w, mcu_h = mcu
    height, width = upright.shape[:2]
    xs = _pixels(mcu_cols, mcu_w, width)
    out = np.empty((len(_pixels(mcu_rows, mcu_h, height)), len(xs), *upright.shape[2:]), np.uint8)
    top = 0
    for run in np.split(mcu_rows, np.flatnonzero(np.diff(mcu_rows) != 1) + 1):
        y0, y1 = int(run[0]) * mcu_h, min(height, (int(run[-1]) + 1) * mcu_h)
        # "clip" is never needed (`_pixels` keeps the columns inside) and not buffered.
        np.take(upright[y0:y1], xs, axis=1, out=out[top : top + y1 - y0], mode="clip")
        top += y1 - y0
    return out


def _pixels(units: npt.NDArray[np.intp], size: int, limit: int) -> npt.NDArray[np.intp]:
    """The pixel indices of these MCU rows (or columns), `size` pixels each, below `limit`."""
    pixels = (units[:, None] * size + np.arange(size)).ravel()
    return pixels[pixels < limit]


def _blocks(units: npt.NDArray[np.intp], per_unit: int) -> npt.NDArray[np.intp]:
    """The block rows (or columns) of one component in these MCU rows (or columns)."""
    return (units[:, None] * per_unit + np.arange(per_unit)).ravel()


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
