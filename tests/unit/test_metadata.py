"""The metadata policy: what reaches a result, for every policy value and format, from
photos carrying real EXIF (with a thumbnail and serial numbers), XMP face regions, IPTC,
comments and an ICC profile."""

from __future__ import annotations

import io

import pytest
from PIL import ExifTags, Image

from imageblur import imaging
from imageblur.metadata import KEEP_GROUPS, filter_metadata, parse_policy
from photo_metadata import (
    ARTIST,
    COPYRIGHT,
    DATETIME_ORIGINAL,
    ISO,
    LATITUDE,
    NEVER_KEPT,
    icc_profile,
    photo,
    with_depth_map,
)

POLICIES = ["", *KEEP_GROUPS, "gps,datetime", ",".join(KEEP_GROUPS)]
EXIF_IFD, GPS_IFD = ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo


def blur_through(data: bytes, policy: str) -> bytes:
    decoded = imaging.decode(data, max_pixels=10**6, keep_metadata=parse_policy(policy))
    return imaging.encode(decoded, jpeg_quality=95)


def assert_nothing_identifying(out: bytes) -> None:
    leaked = [name for name, value in NEVER_KEPT.items() if value.encode() in out]
    assert not leaked
    img = Image.open(io.BytesIO(out))
    assert "xmp" not in img.info and "comment" not in img.info and "photoshop" not in img.info
    exif = img.getexif()
    assert not exif.get_ifd(ExifTags.IFD.IFD1)  # no thumbnail
    for tag in (0x010F, 0x0110, 0x010E):  # make, model, description
        assert tag not in exif
    assert not {0x927C, 0x9286, 0x9214, 0xA430, 0xA431, 0xA435} & set(exif.get_ifd(EXIF_IFD))
    assert out.count(b"\xff\xd8") <= 1  # no embedded JPEG (thumbnail, MPF image)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_keeps_its_groups_and_nothing_identifying(fmt: str, policy: str) -> None:
    keep = parse_policy(policy)
    out = blur_through(photo(fmt, orientation=6), policy)
    assert_nothing_identifying(out)

    img = Image.open(io.BytesIO(out))
    assert img.format == fmt
    assert img.size == (40, 60)  # orientation applied
    assert img.info["icc_profile"] == icc_profile()  # always kept
    exif = img.getexif()
    assert exif.get(0x0112, 1) == 1
    sub, gps = exif.get_ifd(EXIF_IFD), exif.get_ifd(GPS_IFD)
    assert (sub.get(0x9003) == DATETIME_ORIGINAL) is ("datetime" in keep)
    assert (0x0132 in exif) is ("datetime" in keep)
    assert (gps.get(2) == LATITUDE) is ("gps" in keep)
    assert (sub.get(0x8827) == ISO and 0x829A in sub and 0x920A in sub) is (
        "camera_settings" in keep
    )
    assert (exif.get(0x013B) == ARTIST and exif.get(0x8298) == COPYRIGHT) is ("copyright" in keep)
    if not keep:
        assert not exif and b"Exif" not in out


@pytest.mark.parametrize("policy", POLICIES)
def test_png_text_chunks_follow_the_policy(policy: str) -> None:
    keep = parse_policy(policy)
    img = Image.open(io.BytesIO(blur_through(photo("PNG"), policy)))
    assert img.info.get("Creation Time") == (DATETIME_ORIGINAL if "datetime" in keep else None)
    assert img.info.get("Copyright") == (COPYRIGHT if "copyright" in keep else None)
    assert img.info.get("Author") == (ARTIST if "copyright" in keep else None)
    assert "Comment" not in img.info and "Description" not in img.info
    assert "XML:com.adobe.xmp" not in img.info


@pytest.mark.parametrize("policy", ["", "gps,datetime"])
def test_a_phone_jpeg_with_a_depth_map_comes_back_as_one_image(policy: str) -> None:
    data = with_depth_map(photo("JPEG", orientation=1))
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert imaging.check(data, max_pixels=10**6).width == 60

    out = blur_through(data, policy)
    img = Image.open(io.BytesIO(out))
    assert img.format == "JPEG" and getattr(img, "n_frames", 1) == 1
    assert b"MPF\0" not in out
    assert_nothing_identifying(out)


def test_filter_metadata_is_the_api_for_other_writers() -> None:
    img = Image.open(io.BytesIO(photo("JPEG")))
    kept = filter_metadata(img, parse_policy("gps"))
    exif_app1 = kept.exif_bytes()
    assert exif_app1 is not None and exif_app1.startswith(b"Exif\0\0")
    assert kept.icc_profile == icc_profile()
    assert filter_metadata(img, frozenset()).exif_bytes() is None


@pytest.mark.parametrize(
    ("text", "groups"),
    [("", set()), (" GPS , datetime,", {"gps", "datetime"}), ("copyright", {"copyright"})],
)
def test_policy_parsing(text: str, groups: set[str]) -> None:
    assert parse_policy(text) == groups


def test_unknown_group_is_refused() -> None:
    with pytest.raises(ValueError, match="faces"):
        parse_policy("gps,faces")
