"""HEIC and AVIF files as phones write them, made in the tests.

HEIC is written with pillow-heif (a test-only dependency: its x265 encoder is GPL), AVIF
with Pillow. A rotated photo is stored as phones store it: the pixels as the sensor saw
them plus a rotation (HEIF `irot`, from the EXIF orientation given).
"""

from __future__ import annotations

import io

import pillow_heif
from PIL import Image


def heic(
    img: Image.Image,
    *,
    exif: bytes | None = None,
    xmp: bytes | None = None,
    icc: bytes | None = None,
    quality: int = 90,
    extra: list[Image.Image] | None = None,
    primary_index: int = 0,
) -> bytes:
    """`img` as HEIC (with `extra` images after it in the same container)."""
    heif_file = pillow_heif.from_pillow(img)
    for other in extra or []:
        heif_file.add_from_pillow(other)
    kwargs: dict[str, object] = {"quality": quality, "primary_index": primary_index}
    if exif is not None:
        kwargs["exif"] = exif  # with an orientation, pillow-heif stores it as irot
    if xmp is not None:
        kwargs["xmp"] = xmp
    if icc is not None:
        kwargs["icc_profile"] = icc
    out = io.BytesIO()
    heif_file.save(out, format="HEIF", **kwargs)
    return out.getvalue()


def avif(
    img: Image.Image,
    *,
    exif: bytes | None = None,
    xmp: bytes | None = None,
    icc: bytes | None = None,
    quality: int = 90,
) -> bytes:
    out = io.BytesIO()
    kwargs: dict[str, object] = {"quality": quality}
    if exif is not None:
        kwargs["exif"] = exif
    if xmp is not None:
        kwargs["xmp"] = xmp
    if icc is not None:
        kwargs["icc_profile"] = icc
    img.save(out, "AVIF", **kwargs)
    return out.getvalue()


def exif_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# How a photo that displays upright is stored for each orientation (the inverse of what
# the orientation asks the viewer to do).
STORED = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
