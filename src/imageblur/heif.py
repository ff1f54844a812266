"""The formats phones write: HEIC (HEIF with HEVC, iPhones) and AVIF (HEIF with AV1).

Both are ISO base media files whose `ftyp` box names brands; the brands, never the name
or the Content-Type, tell which is which. AVIF is decoded by Pillow itself (its wheels
bundle libavif with dav1d, BSD-licensed); HEIC by `pi-heif`, the decode-only build of
pillow-heif (libheif and libde265, LGPLv3, loaded as shared libraries; no x265, which is
GPL). So no HEVC encoder ships with us, and a HEIC result is always written as JPEG.
"""

from __future__ import annotations

import functools
import struct
from typing import Literal

HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
AVIF_BRANDS = frozenset({b"avif", b"avis"})
_MAX_FTYP_BYTES = 4096  # a real ftyp box holds a few dozen brands at most


def sniff_brand(data: bytes) -> Literal["HEIF", "AVIF"] | None:
    """ "HEIF" (HEVC-coded), "AVIF" or None, from the `ftyp` box at the start of `data`.

    The major brand decides; a generic one (`mif1`, `msf1`) defers to the compatible
    brands, AVIF first since HEVC-coded files seldom list an AV1 brand.
    """
    if len(data) < 16 or data[4:8] != b"ftyp":
        return None
    (size,) = struct.unpack(">I", data[:4])
    if not 16 <= size <= min(len(data), _MAX_FTYP_BYTES):
        return None
    major = data[8:12]
    compatible = {data[i : i + 4] for i in range(16, size - 3, 4)}
    for brands in ({major}, compatible):
        if brands & AVIF_BRANDS:
            return "AVIF"
        if brands & HEIC_BRANDS:
            return "HEIF"
    return None


@functools.cache
def register_heic_decoder() -> None:
    """Let Pillow open HEIC through pi-heif, once per process. Thumbnails, depth and
    auxiliary images are not even parsed: only the primary image is ever decoded."""
    import pi_heif

    pi_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
