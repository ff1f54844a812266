"""HEIC and AVIF uploads: recognised by their brands, checked like the others, decoded
upright, written as JPEG by default, with the metadata policy applied."""

from __future__ import annotations

import io
import struct
from dataclasses import replace

import numpy as np
import pytest
from PIL import ExifTags, Image

from imageblur import imaging
from imageblur.anonymizer import Anonymizer
from imageblur.bootstrap import anonymize_options
from imageblur.config import load_settings
from imageblur.domain import InvalidImage
from imageblur.metadata import parse_policy
from phone_photos import STORED, avif, exif_orientation, heic
from photo_metadata import LATITUDE, NEVER_KEPT, exif_block, icc_profile, pixels, xmp_packet

MAKERS = {"HEIC": heic, "AVIF": avif}


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\0" * 32


def quadrant_picture() -> Image.Image:
    """60x40 (landscape) with a white top-left quadrant: shows any rotation or flip."""
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:20, :30] = 255
    return Image.fromarray(arr)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (ftyp(b"heic", b"mif1", b"heic"), imaging.HEIC),
        (ftyp(b"mif1", b"heix"), imaging.HEIC),
        (ftyp(b"avif", b"mif1", b"miaf"), imaging.AVIF),
        (ftyp(b"mif1", b"avif"), imaging.AVIF),
    ],
)
def test_brands_decide_the_format(header: bytes, expected: imaging.ImageFormat) -> None:
    assert imaging.sniff_format(header) is expected


@pytest.mark.parametrize(
    "header",
    [ftyp(b"mp42", b"isom"), ftyp(b"mif1", b"jpeg"), ftyp(b"qt  "), b"\0\0\0\x20ftypheic"],
)
def test_other_iso_media_files_are_unsupported(header: bytes) -> None:
    with pytest.raises(InvalidImage) as err:
        imaging.sniff_format(header)
    assert err.value.http_status == 415


@pytest.mark.parametrize("kind", ["HEIC", "AVIF"])
def test_real_files_are_recognised_and_checked(kind: str) -> None:
    data = MAKERS[kind](pixels(60, 40))
    checked = imaging.check(data, max_pixels=2400)
    assert checked.format is getattr(imaging, kind)
    assert (checked.width, checked.height) == (60, 40)


@pytest.mark.parametrize("kind", ["HEIC", "AVIF"])
def test_the_pixel_limit_comes_from_the_header(kind: str) -> None:
    with pytest.raises(InvalidImage) as err:
        imaging.check(MAKERS[kind](pixels(60, 40)), max_pixels=2399)
    assert err.value.code == "too_many_pixels"


@pytest.mark.parametrize("kind", ["HEIC", "AVIF"])
@pytest.mark.parametrize("keep", [0.9, 0.5, 0.2])
def test_truncated_files_are_corrupt(kind: str, keep: float) -> None:
    data = MAKERS[kind](pixels(120, 80))
    with pytest.raises(InvalidImage) as err:
        imaging.check(data[: int(len(data) * keep)], max_pixels=10**6)
    assert err.value.http_status == 400
    assert err.value.code == "corrupt_image"


@pytest.mark.parametrize("kind", ["HEIC", "AVIF"])
@pytest.mark.parametrize("orientation", sorted(STORED))
def test_rotated_photos_decode_upright(kind: str, orientation: int) -> None:
    upright = quadrant_picture()
    stored = upright.transpose(STORED[orientation])
    data = MAKERS[kind](stored, exif=exif_orientation(orientation), quality=95)
    checked = imaging.check(data, max_pixels=10**6)
    assert (checked.width, checked.height) == (60, 40)

    decoded = imaging.decode(data, max_pixels=10**6)
    assert decoded.rgb.shape == (40, 60, 3)
    assert decoded.rgb[:20, :30].mean() > 200  # the white quadrant is top-left
    assert decoded.rgb[20:, 30:].mean() < 50


@pytest.mark.parametrize("kind", ["HEIC", "AVIF"])
@pytest.mark.parametrize("policy", ["", "gps", "gps,datetime,camera_settings,copyright"])
def test_metadata_policy_applies(kind: str, policy: str) -> None:
    data = MAKERS[kind](
        pixels(60, 40),
        exif=b"Exif\0\0" + exif_block(orientation=1),
        xmp=xmp_packet(),
        icc=icc_profile(),
    )
    decoded = imaging.decode(data, max_pixels=10**6, keep_metadata=parse_policy(policy))
    out = imaging.encode(decoded, jpeg_quality=95, target=imaging.JPEG)
    assert not [name for name, value in NEVER_KEPT.items() if value.encode() in out]
    img = Image.open(io.BytesIO(out))
    assert img.format == "JPEG"
    assert img.info["icc_profile"] == icc_profile()
    assert "xmp" not in img.info
    gps = img.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert (gps.get(2) == LATITUDE) is ("gps" in policy)


def test_only_the_primary_image_of_a_heic_is_decoded() -> None:
    first = Image.new("RGB", (60, 40), (250, 0, 0))
    primary = Image.new("RGB", (50, 30), (0, 0, 250))
    data = heic(first, extra=[primary], primary_index=1)
    decoded = imaging.decode(data, max_pixels=10**6)
    assert decoded.rgb.shape == (30, 50, 3)
    assert decoded.rgb[..., 2].mean() > 200 and decoded.rgb[..., 0].mean() < 50


def test_an_animated_avif_is_refused() -> None:
    frames = [Image.new("RGB", (20, 20), (i * 80, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "AVIF", save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(InvalidImage) as err:
        imaging.check(out.getvalue(), max_pixels=10**6)
    assert err.value.code == "animated_image"


class NoFaces:
    def detect(self, rgb: np.ndarray) -> list[object]:
        return []


@pytest.mark.parametrize(
    ("kind", "output_format", "expected"),
    [
        ("HEIC", "jpeg", "image/jpeg"),
        ("HEIC", "same", "image/jpeg"),  # no HEVC encoder ships with us
        ("AVIF", "jpeg", "image/jpeg"),
        ("AVIF", "same", "image/avif"),
    ],
)
def test_result_format(kind: str, output_format: str, expected: str) -> None:
    options = replace(anonymize_options(load_settings()), output_format=output_format)  # type: ignore[arg-type]
    anonymize = Anonymizer(NoFaces(), options)
    result = anonymize(MAKERS[kind](pixels(60, 40)))
    assert result.content_type == expected
    assert Image.open(io.BytesIO(result.data)).get_format_mimetype() == expected
    fmt = imaging.result_format(getattr(imaging, kind), output_format)  # type: ignore[arg-type]
    assert fmt.content_type == expected
