"""How many scans a JPEG has, read from its markers before anything decodes it.

A progressive JPEG may repeat a scan without limit: each repeat is a few bytes and a
full pass of the decoder over every coefficient of the image, so a 68 KB file can cost
seconds of CPU and a 25 MB one many minutes. Neither Pillow nor libjpeg bounds the count
by default, so every JPEG is walked here first, the way libjpeg reads it:

- a segment's length is followed, never searched through (an APP segment may hold any
  bytes, a thumbnail's markers among them);
- after a scan's header, the entropy-coded data runs to the next marker: an 0xFF
  followed by 0x00 is a stuffed data byte, 0xFF fill bytes may precede a marker, and the
  restart markers RST0-7 are part of the scan;
- bytes other than a marker where a marker should be are skipped, as libjpeg and
  Pillow skip them (with a warning), so that both count the same scans, up to a few KB;
- the stream ends at EOI: what follows (MPF previews, gain maps) is never decoded.

Entropy-coded data and junk are skipped with one regular-expression search per marker,
in C: a 25 MB baseline photo is walked in a few milliseconds.
"""

from __future__ import annotations

import re

# libjpeg's default progression writes 10 scans; 100 leaves room for any encoder seen in
# the wild. The lossless patch path (`jpeg_patch`) refuses past the same number.
MAX_SCANS = 100

_SOI = b"\xff\xd8"
_SOS, _EOI = 0xDA, 0xD9
# A marker that has a length or ends the stream: an 0xFF followed by a byte that is not
# 0xFF (a fill byte: the marker follows), 0x00 (a stuffed data byte), TEM, RST0-7
# (restart markers inside a scan) nor SOI. No quantifier, so the search stays linear
# whatever the bytes (a run of 0xFF included).
_MARKER = re.compile(rb"\xff[^\x00\x01\xd0-\xd8\xff]")
# Real files have a few dozen segments (a few hundred with a large ICC profile or XMP,
# 64 KB each) and no bytes between them but a few fill bytes. Pillow parses the header in
# Python, one loop per byte of junk and per segment: 25 MB of either costs it seconds.
_MAX_SEGMENTS = 4096
_MAX_EXTRANEOUS_BYTES = 4096


class MalformedJPEGError(ValueError):
    """The marker structure is broken: not a JPEG, or a segment runs past the end."""


class TooManyScansError(ValueError):
    """More scans than allowed."""


def count_scans(data: bytes, *, limit: int = MAX_SCANS) -> int:
    """The number of scans (SOS segments) of the JPEG `data`, up to EOI or the end of the
    data. Raises `TooManyScansError` as soon as `limit` is passed; `MalformedJPEGError`
    for a segment length that is missing, too short or runs past the end, and for a marker
    structure that would make Pillow's own parser (a Python loop per byte and per
    segment) slow."""
    if data[:2] != _SOI:
        raise MalformedJPEGError("not a JPEG stream (no SOI marker)")
    scans, segments, extraneous, pos, in_scan = 0, 0, 0, 2, False
    while (found := _MARKER.search(data, pos)) is not None:
        if not in_scan:
            extraneous += found.start() - pos
        marker, pos = data[found.start() + 1], found.end()
        if marker == _EOI:
            break
        pos = _skip_segment(data, pos, marker)
        segments += 1
        in_scan = marker == _SOS
        scans += in_scan
        if scans > limit:
            raise TooManyScansError(f"the JPEG has more than {limit} scans")
        if segments > _MAX_SEGMENTS or extraneous > _MAX_EXTRANEOUS_BYTES:
            raise MalformedJPEGError(
                f"corrupt JPEG: more than {_MAX_SEGMENTS} segments or "
                f"{_MAX_EXTRANEOUS_BYTES} bytes between them"
            )
    # No EOI: the decoder says whether the image is complete.
    return scans


def _skip_segment(data: bytes, pos: int, marker: int) -> int:
    """The position after the segment whose length field starts at `pos`."""
    if pos + 2 > len(data):
        raise MalformedJPEGError(f"truncated JPEG: the 0xFF{marker:02X} segment has no length")
    length = int.from_bytes(data[pos : pos + 2], "big")
    if length < 2 or pos + length > len(data):
        raise MalformedJPEGError(f"corrupt JPEG: the 0xFF{marker:02X} segment length {length}")
    return pos + length
