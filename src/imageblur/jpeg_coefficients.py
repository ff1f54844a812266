"""Lossless JPEG transforms with access to the quantized DCT coefficients.

A thin ctypes binding to libjpeg-turbo's TurboJPEG library (Debian's `libturbojpeg0`,
API 2.1): `tjTransform` reads a JPEG's coefficients without decoding them to pixels,
optionally rotates or flips them losslessly, calls a Python function on every row of
blocks (which may read or change them), and writes the result as a new JPEG without
touching the Huffman-decoded values it was not asked to change.

Why this and not `jpegtran -drop` or a coefficient library from PyPI (measured in
docs/detection.md): one pass over the image handles any number of faces and any MCU
shape (jpegtran pastes one rectangle per run, each a full pass over the image); errors
come back as codes with a message instead of the `exit()` that plain libjpeg wrappers
fall back to; and nothing bigger than the system's own JPEG library is needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt

Coefficients = npt.NDArray[np.int16]  # rows x cols x 64, natural (not zigzag) order

# From turbojpeg.h (libjpeg-turbo 2.1).
_TJFLAG_STOPONWARNING = 8192  # a corrupt stream is an error, not a warning
# Refuse progressive files with > 500 scans (a CPU bomb); a backstop: `jpeg_patch`
# refuses past IMAGEBLUR_MAX_JPEG_SCANS (at most 500) before calling us.
_TJFLAG_LIMITSCANS = 32768
_TJXOPT_PERFECT = 1
_TJXOPT_NOOUTPUT = 16
_TJXOPT_PROGRESSIVE = 32
_TJXOPT_COPYNONE = 64


class Transform(IntEnum):
    """TurboJPEG's lossless transforms (TJXOP_*)."""

    NONE = 0
    HFLIP = 1
    VFLIP = 2
    TRANSPOSE = 3
    TRANSVERSE = 4
    ROT90 = 5
    ROT180 = 6
    ROT270 = 7


class TurboJPEGError(Exception):
    """The library is missing, or it refused the stream or the transform."""


class _Region(ctypes.Structure):
    _fields_ = (
        ("x", ctypes.c_int),
        ("y", ctypes.c_int),
        ("w", ctypes.c_int),
        ("h", ctypes.c_int),
    )


class _Transform(ctypes.Structure):
    pass


# The coefficients' pointer comes as a plain address (c_void_p): a numpy view of it is
# then about 2 us, against 8 us through a ctypes pointer, on each of a photo's hundreds
# of callbacks.
_FILTER = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_void_p,
    _Region,
    _Region,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(_Transform),
)
_Transform._fields_ = (
    ("r", _Region),
    ("op", ctypes.c_int),
    ("options", ctypes.c_int),
    ("data", ctypes.c_void_p),
    ("customFilter", _FILTER),
)


@dataclass(frozen=True, slots=True)
class BlockRow:
    """One row of 8 x 8 blocks of one component, as the filter sees it.

    `blocks` is a writable view (cols x 64) into the library's own buffer: valid only
    during the call. `row` counts block rows from the top of the component plane.
    """

    component: int
    row: int
    plane_rows: int
    blocks: Coefficients


Filter = Callable[[BlockRow], None]
# Per component, the block rows a filter needs to see (the others are not handed to it).
Rows = Sequence[AbstractSet[int]]

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _library() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            name = ctypes.util.find_library("turbojpeg") or "libturbojpeg.so.0"
            try:
                lib = ctypes.CDLL(name)
            except OSError as exc:
                raise TurboJPEGError(f"libturbojpeg not found ({name}): {exc}") from exc
            lib.tjInitTransform.restype = ctypes.c_void_p
            lib.tjDestroy.argtypes = (ctypes.c_void_p,)
            lib.tjGetErrorStr2.restype = ctypes.c_char_p
            lib.tjGetErrorStr2.argtypes = (ctypes.c_void_p,)
            lib.tjFree.argtypes = (ctypes.c_void_p,)
            lib.tjTransform.argtypes = (
                ctypes.c_void_p,
                ctypes.c_char_p,
                ctypes.c_ulong,
                ctypes.c_int,
                ctypes.POINTER(ctypes.c_void_p),
                ctypes.POINTER(ctypes.c_ulong),
                ctypes.POINTER(_Transform),
                ctypes.c_int,
            )
            _lib = lib
        return _lib


def available() -> bool:
    """Whether libturbojpeg can be loaded on this machine."""
    try:
        _library()
    except TurboJPEGError:
        return False
    return True


def transform(
    data: bytes,
    *,
    op: Transform = Transform.NONE,
    on_rows: Filter | None = None,
    rows: Rows | None = None,
    progressive: bool = False,
    output: bool = True,
) -> bytes:
    """Losslessly apply `op` to the JPEG `data`, call `on_rows` on every block row of the
    result (before it is written), or only on `rows`, and return the new JPEG, with no
    metadata segments at all (`output=False`: only read, return b"").

    Partial edge blocks that `op` would have to move make it fail rather than trim or
    leave them in place (TJXOPT_PERFECT). Raises `TurboJPEGError`.
    """
    errors: list[BaseException] = []
    options = _TJXOPT_PERFECT | _TJXOPT_COPYNONE
    if progressive:
        options |= _TJXOPT_PROGRESSIVE
    if not output:
        options |= _TJXOPT_NOOUTPUT
    spec = _Transform(op=int(op), options=options, customFilter=_filter(on_rows, rows, errors))
    return _run(data, spec, errors, output=output)


def _filter(on_rows: Filter | None, wanted: Rows | None, errors: list[BaseException]) -> Any:
    """The C callback: hands each block row (of `wanted`, if given) to `on_rows`; an
    exception is kept in `errors` and stops the transform (it must not unwind through C).
    The library calls it for every few block rows of every component, hundreds of times
    per photo: rows nobody wants return at once (on a 1 MP photo the callbacks took 10%
    of the whole job when each one wrapped its rows in arrays)."""

    def call(coeffs: int, array: _Region, plane: _Region, component: int, _i: int, _t: Any) -> int:
        if on_rows is None:
            return 0
        first, count = array.y // 8, array.h // 8
        if wanted is not None and (
            component >= len(wanted) or wanted[component].isdisjoint(range(first, first + count))
        ):
            return 0
        try:
            cols = array.w // 8
            flat = np.frombuffer(
                (ctypes.c_short * (count * cols * 64)).from_address(coeffs), np.int16
            )
            blocks = flat.reshape(count, cols, 64)
            for i in range(count):
                row = first + i
                if row < plane.h // 8:
                    on_rows(BlockRow(component, row, plane.h // 8, blocks[i]))
        except BaseException as exc:  # noqa: BLE001 - re-raised by _run
            errors.append(exc)
            return -1
        return 0

    return _FILTER(call)


def _run(data: bytes, spec: _Transform, errors: list[BaseException], *, output: bool) -> bytes:
    lib = _library()
    out_buf = ctypes.c_void_p()
    out_size = ctypes.c_ulong(0)
    handle = lib.tjInitTransform()
    if not handle:
        raise TurboJPEGError("tjInitTransform failed")
    try:
        status = lib.tjTransform(
            handle,
            data,
            len(data),
            1,
            ctypes.byref(out_buf),
            ctypes.byref(out_size),
            ctypes.byref(spec),
            _TJFLAG_STOPONWARNING | _TJFLAG_LIMITSCANS,
        )
        if errors:
            raise errors[0]
        if status != 0:
            message = (lib.tjGetErrorStr2(handle) or b"unknown error").decode(errors="replace")
            raise TurboJPEGError(message)
        if not output or not out_buf.value:
            return b""
        return ctypes.string_at(out_buf.value, out_size.value)
    finally:
        if out_buf.value:
            lib.tjFree(out_buf)
        lib.tjDestroy(handle)


def read_coefficients(data: bytes) -> list[Coefficients]:
    """Every component's quantized coefficients (block rows x block cols x 64)."""
    planes: dict[int, Coefficients] = {}

    def keep(row: BlockRow) -> None:
        plane = planes.get(row.component)
        if plane is None:
            plane = np.zeros((row.plane_rows, *row.blocks.shape), np.int16)
            planes[row.component] = plane
        plane[row.row] = row.blocks

    transform(data, on_rows=keep, output=False)
    return [planes[c] for c in sorted(planes)]
