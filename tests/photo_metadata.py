"""Photos carrying the metadata a phone or a photo manager writes, built byte by byte.

The EXIF block is written by hand (little-endian TIFF) rather than through Pillow, so it
holds what Pillow would not write itself: an IFD1 with a JPEG thumbnail, a maker note,
serial numbers. Every identifying value contains a marker string, so a test can assert
that none of them reaches a result by searching the result's bytes.
"""

from __future__ import annotations

import functools
import io
import struct
from typing import Any

import numpy as np
from PIL import Image, ImageCms

# Values that must never reach a result, whatever the policy.
NEVER_KEPT = {
    "make": "SecretMake",
    "model": "SecretModel",
    "description": "SecretDescription at Bob's",
    "owner": "SecretOwner Name",
    "body_serial": "SecretSerial 123456",
    "lens_serial": "SecretLens 987",
    "maker_note": "SecretMakerNote",
    "user_comment": "SecretUserComment",
    "person": "Jane SecretPerson",  # XMP face region, IPTC person
    "comment": "SecretComment",
    "thumbnail": "SecretThumb",  # the thumbnail's own JPEG comment
}
# Kept values per policy group (tag -> value, as Pillow reads them back).
DATETIME_ORIGINAL = "2024:05:06 07:08:09"
ARTIST = "Ann Artist"
COPYRIGHT = "(c) 2024 Ann Artist"
ISO = 400
LATITUDE = (52.0, 31.0, 12.0)

_ASCII, _SHORT, _LONG, _RATIONAL, _UNDEFINED, _BYTE = 2, 3, 4, 5, 7, 1
Entry = tuple[int, int, int, bytes]  # tag, type, count, payload


def _ascii(tag: int, text: str) -> Entry:
    raw = text.encode() + b"\0"
    return (tag, _ASCII, len(raw), raw)


def _short(tag: int, *values: int) -> Entry:
    return (tag, _SHORT, len(values), struct.pack(f"<{len(values)}H", *values))


def _long(tag: int, *values: int) -> Entry:
    return (tag, _LONG, len(values), struct.pack(f"<{len(values)}I", *values))


def _rational(tag: int, *pairs: tuple[int, int]) -> Entry:
    flat = [n for pair in pairs for n in pair]
    return (tag, _RATIONAL, len(pairs), struct.pack(f"<{len(flat)}I", *flat))


def _undefined(tag: int, raw: bytes) -> Entry:
    return (tag, _UNDEFINED, len(raw), raw)


def _ifd_size(entries: list[Entry]) -> int:
    data = sum(len(p) + len(p) % 2 for *_, p in entries if len(p) > 4)
    return 2 + 12 * len(entries) + 4 + data


def _ifd_bytes(entries: list[Entry], offset: int, next_ifd: int) -> bytes:
    entries = sorted(entries)
    head = struct.pack("<H", len(entries))
    data = b""
    data_offset = offset + 2 + 12 * len(entries) + 4
    for tag, kind, count, payload in entries:
        if len(payload) <= 4:
            head += struct.pack("<HHI", tag, kind, count) + payload.ljust(4, b"\0")
        else:
            head += struct.pack("<HHII", tag, kind, count, data_offset + len(data))
            data += payload + b"\0" * (len(payload) % 2)
    return head + struct.pack("<I", next_ifd) + data


def thumbnail_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 30)).save(
        out, "JPEG", comment=NEVER_KEPT["thumbnail"].encode()
    )
    return out.getvalue()


def exif_block(*, orientation: int = 1) -> bytes:
    """A TIFF EXIF block (no `Exif\\0\\0` prefix): IFD0, Exif IFD, GPS IFD, IFD1 + thumbnail."""
    exif_ifd = [
        _rational(0x829A, (1, 250)),  # ExposureTime
        _rational(0x829D, (18, 10)),  # FNumber
        _short(0x8827, ISO),
        _ascii(0x9003, DATETIME_ORIGINAL),
        _ascii(0x9011, "+02:00"),  # OffsetTimeOriginal
        _rational(0x920A, (43, 10)),  # FocalLength
        _short(0x9214, 100, 80, 20, 20),  # SubjectArea: where the face is
        _undefined(0x927C, NEVER_KEPT["maker_note"].encode()),
        _undefined(0x9286, b"ASCII\0\0\0" + NEVER_KEPT["user_comment"].encode()),
        _ascii(0xA430, NEVER_KEPT["owner"]),
        _ascii(0xA431, NEVER_KEPT["body_serial"]),
        _ascii(0xA435, NEVER_KEPT["lens_serial"]),
    ]
    gps_ifd = [
        (0x0000, _BYTE, 4, bytes([2, 3, 0, 0])),  # GPSVersionID
        _ascii(0x0001, "N"),
        _rational(0x0002, *((int(v), 1) for v in LATITUDE)),
        _ascii(0x0003, "E"),
        _rational(0x0004, (13, 1), (24, 1), (36, 1)),
    ]
    thumb = thumbnail_jpeg()

    def ifd0(exif_at: int, gps_at: int) -> list[Entry]:
        return [
            _ascii(0x010E, NEVER_KEPT["description"]),
            _ascii(0x010F, NEVER_KEPT["make"]),
            _ascii(0x0110, NEVER_KEPT["model"]),
            _short(0x0112, orientation),
            _ascii(0x0132, "2024:05:07 10:00:00"),  # DateTime
            _ascii(0x013B, ARTIST),
            _ascii(0x8298, COPYRIGHT),
            _long(0x8769, exif_at),
            _long(0x8825, gps_at),
        ]

    ifd0_at = 8
    exif_at = ifd0_at + _ifd_size(ifd0(0, 0))
    gps_at = exif_at + _ifd_size(exif_ifd)
    ifd1_at = gps_at + _ifd_size(gps_ifd)

    def ifd1(thumb_at: int) -> list[Entry]:
        return [_short(0x0103, 6), _long(0x0201, thumb_at), _long(0x0202, len(thumb))]

    thumb_at = ifd1_at + _ifd_size(ifd1(0))
    return (
        b"II*\0"
        + struct.pack("<I", ifd0_at)
        + _ifd_bytes(ifd0(exif_at, gps_at), ifd0_at, ifd1_at)
        + _ifd_bytes(exif_ifd, exif_at, 0)
        + _ifd_bytes(gps_ifd, gps_at, 0)
        + _ifd_bytes(ifd1(thumb_at), ifd1_at, 0)
        + thumb
    )


def xmp_packet() -> bytes:
    """XMP with an MWG face region and an IPTC PersonInImage naming the person."""
    person = NEVER_KEPT["person"]
    return f"""<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about=""
 xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"
 xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#"
 xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">
<mwg-rs:Regions rdf:parseType="Resource"><mwg-rs:RegionList><rdf:Bag>
<rdf:li rdf:parseType="Resource"><mwg-rs:Name>{person}</mwg-rs:Name><mwg-rs:Type>Face</mwg-rs:Type>
<mwg-rs:Area stArea:x="0.5" stArea:y="0.4" stArea:w="0.2" stArea:h="0.3" stArea:unit="normalized"/>
</rdf:li></rdf:Bag></mwg-rs:RegionList></mwg-rs:Regions>
<Iptc4xmpExt:PersonInImage><rdf:Bag><rdf:li>{person}</rdf:li></rdf:Bag></Iptc4xmpExt:PersonInImage>
</rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>""".encode()


def iptc_app13() -> bytes:
    """A JPEG APP13 segment (Photoshop IRB 0x0404) with IPTC By-line and a person name."""
    person = NEVER_KEPT["person"].encode()
    iptc = b"\x1c\x02\x50" + struct.pack(">H", len(person)) + person  # 2:80 By-line
    irb = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(iptc)) + iptc
    payload = b"Photoshop 3.0\0" + irb
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


@functools.cache  # the profile holds its creation time: make it once per test run
def icc_profile() -> bytes:
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def pixels(width: int = 60, height: int = 40, seed: int = 1) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def photo(pil_format: str, *, orientation: int = 6, width: int = 60, height: int = 40) -> bytes:
    """A JPEG, PNG or WebP photo carrying all of the above (PNG: also text chunks)."""
    out = io.BytesIO()
    kwargs: dict[str, Any] = {
        "exif": b"Exif\0\0" + exif_block(orientation=orientation),
        "icc_profile": icc_profile(),
    }
    if pil_format == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp_packet().decode())
        info.add_text("Author", ARTIST)
        info.add_text("Copyright", COPYRIGHT)
        info.add_text("Creation Time", DATETIME_ORIGINAL)
        info.add_text("Comment", NEVER_KEPT["comment"])
        info.add_text("Description", NEVER_KEPT["description"])
        kwargs["pnginfo"] = info
    else:
        kwargs["xmp"] = xmp_packet()
    if pil_format == "JPEG":
        kwargs["comment"] = NEVER_KEPT["comment"].encode()
    pixels(width, height).save(out, pil_format, **kwargs)
    data = out.getvalue()
    if pil_format == "JPEG":
        data = data[:2] + iptc_app13() + data[2:]
    return data


def with_depth_map(jpeg: bytes) -> bytes:
    """`jpeg` made a multi-picture (MPF) file with a second image, as phones append depth
    maps and gain maps."""
    primary = Image.open(io.BytesIO(jpeg))
    depth = Image.new("RGB", (primary.width // 2, primary.height // 2), (90, 90, 90))
    out = io.BytesIO()
    primary.save(
        out,
        "MPO",
        save_all=True,
        append_images=[depth],
        exif=primary.info["exif"],
        icc_profile=primary.info["icc_profile"],
    )
    return out.getvalue()
