"""JPEGs whose decoding costs far more than their size: generated here, never stored."""

from __future__ import annotations

import io

from PIL import Image

from imageblur.jpeg_scans import _MARKER


def progressive(width: int, height: int, *, subsampling: int = 0) -> bytes:
    """A flat grey progressive JPEG: a few KB however large, 10 scans (libjpeg's default)."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 130, 140)).save(
        out, "JPEG", progressive=True, subsampling=subsampling, quality=90
    )
    return out.getvalue()


def scan_segments(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every scan: its SOS header and entropy-coded data, up to the next
    marker."""
    spans, pos = [], 2
    while (found := _MARKER.search(data, pos)) is not None:
        start, marker = found.start(), data[found.start() + 1]
        if marker == 0xD9:
            break
        pos = found.end() + int.from_bytes(data[found.end() : found.end() + 2], "big")
        if marker == 0xDA:
            nxt = _MARKER.search(data, pos)
            assert nxt is not None
            spans.append((start, nxt.start()))
    return spans


def scan_bomb(width: int = 4096, height: int = 4096, *, scans: int = 1000) -> bytes:
    """A progressive JPEG with its last AC scan repeated until it has `scans` scans: each
    repeat is a few bytes and another full pass of the decoder over the image. libjpeg
    decodes it (a repeated scan only warns), so only a scan count refuses it."""
    data = progressive(width, height)
    spans = scan_segments(data)
    start, end = spans[-1]  # an AC refinement of the first component, tables unchanged
    repeat = data[start:end] * (scans - len(spans))
    return data[:end] + repeat + data[end:]
