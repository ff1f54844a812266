"""Which metadata of an upload reaches the result: a whitelist, never a blacklist.

The result's metadata is rebuilt from nothing: a fresh EXIF block holding only the tags
of the kept groups, PNG text chunks only under the kept keywords, and the ICC colour
profile. Everything else is left behind by construction, whatever the policy: EXIF
thumbnails and previews (IFD1), maker notes, camera make, model and serial numbers, owner
names, comments, the whole XMP packet (face and people regions, edit history), IPTC, and
the secondary images phones append (MPF, gain maps, depth maps), since the result is
encoded from the primary image's pixels alone.

`filter_metadata` is the one entry point; anything that writes a result (the re-encoder,
a lossless JPEG path) asks it what may be written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from PIL import Image

KeepGroup = Literal["gps", "datetime", "camera_settings", "copyright"]
KEEP_GROUPS: Final[tuple[str, ...]] = get_args(KeepGroup)

_EXIF_IFD: Final = 0x8769
_GPS_IFD: Final = 0x8825
_ORIENTATION: Final = 0x0112

# IFD0 tags per group.
_IFD0_TAGS: Final[dict[str, frozenset[int]]] = {
    "datetime": frozenset({0x0132}),  # DateTime
    "copyright": frozenset({0x013B, 0x8298}),  # Artist, Copyright
}
# Exif sub-IFD tags per group. SubjectArea (0x9214) is left out on purpose: it can be
# the position of a face.
_EXIF_TAGS: Final[dict[str, frozenset[int]]] = {
    "datetime": frozenset(
        {0x9003, 0x9004, 0x9010, 0x9011, 0x9012, 0x9290, 0x9291, 0x9292}
    ),  # DateTimeOriginal, DateTimeDigitized, OffsetTime*, SubSecTime*
    "camera_settings": frozenset(
        {
            0x829A,  # ExposureTime
            0x829D,  # FNumber
            0x8822,  # ExposureProgram
            0x8827,  # ISOSpeedRatings / PhotographicSensitivity
            0x8830,  # SensitivityType
            0x8831,  # StandardOutputSensitivity
            0x8832,  # RecommendedExposureIndex
            0x8833,  # ISOSpeed
            0x9201,  # ShutterSpeedValue
            0x9202,  # ApertureValue
            0x9203,  # BrightnessValue
            0x9204,  # ExposureBiasValue
            0x9205,  # MaxApertureValue
            0x9206,  # SubjectDistance
            0x9207,  # MeteringMode
            0x9208,  # LightSource
            0x9209,  # Flash
            0x920A,  # FocalLength
            0xA215,  # ExposureIndex
            0xA217,  # SensingMethod
            0xA401,  # CustomRendered
            0xA402,  # ExposureMode
            0xA403,  # WhiteBalance
            0xA404,  # DigitalZoomRatio
            0xA405,  # FocalLengthIn35mmFilm
            0xA406,  # SceneCaptureType
            0xA407,  # GainControl
            0xA408,  # Contrast
            0xA409,  # Saturation
            0xA40A,  # Sharpness
            0xA40C,  # SubjectDistanceRange
        }
    ),
}
# GPS IFD tags 0..31 (GPSVersionID .. GPSHPositioningError) are all location or its time.
_GPS_TAGS: Final = frozenset(range(32))
# PNG text keywords (PNG specification, section 11.3.4.2) per group.
_PNG_TEXT_KEYS: Final[dict[str, frozenset[str]]] = {
    "datetime": frozenset({"Creation Time"}),
    "copyright": frozenset({"Author", "Copyright"}),
}


class MetadataError(ValueError):
    """The upload's metadata cannot be parsed."""


def parse_policy(text: str | Iterable[str]) -> frozenset[str]:
    """`"gps, datetime"` -> {"gps", "datetime"}; an unknown name raises ValueError."""
    items = text.split(",") if isinstance(text, str) else text
    groups = frozenset(item.strip().lower() for item in items if item.strip())
    unknown = sorted(groups - set(KEEP_GROUPS))
    if unknown:
        raise ValueError(
            f"unknown metadata group(s) {', '.join(unknown)}; choose from {', '.join(KEEP_GROUPS)}"
        )
    return groups


@dataclass(frozen=True, slots=True)
class KeptMetadata:
    """What may be written into a result. `exif` is None when no EXIF tag is kept."""

    icc_profile: bytes | None = None
    exif: Image.Exif | None = None
    png_text: Mapping[str, str] = field(default_factory=dict)

    def exif_bytes(self) -> bytes | None:
        """The EXIF block as written in a JPEG APP1 segment (`Exif\\0\\0` + TIFF)."""
        return self.exif.tobytes() if self.exif is not None else None

    def save_options(self, pil_format: str) -> dict[str, object]:
        """Keyword arguments for `Image.save` in `pil_format` (JPEG, PNG, WEBP)."""
        options: dict[str, object] = {}
        if self.icc_profile:
            options["icc_profile"] = self.icc_profile
        if self.exif is not None:
            options["exif"] = self.exif
        if self.png_text and pil_format == "PNG":
            from PIL.PngImagePlugin import PngInfo

            info = PngInfo()
            for key, value in self.png_text.items():
                info.add_itxt(key, value)
            options["pnginfo"] = info
        return options


def filter_metadata(img: Image.Image, keep: frozenset[str]) -> KeptMetadata:
    """The metadata of `img` (an opened upload) that the policy `keep` lets through.

    The orientation is never copied: the caller applies it to the pixels, and a kept
    EXIF block says 1 (upright). Raises `MetadataError` for EXIF that cannot be parsed.
    """
    icc = img.info.get("icc_profile")
    icc_profile = icc if isinstance(icc, bytes) and icc else None
    exif = _filter_exif(img, keep) if keep else None
    return KeptMetadata(icc_profile=icc_profile, exif=exif, png_text=_filter_text(img, keep))


def _filter_exif(img: Image.Image, keep: frozenset[str]) -> Image.Exif | None:
    try:
        source = img.getexif()
        source_exif = dict(source.get_ifd(_EXIF_IFD))
        source_gps = dict(source.get_ifd(_GPS_IFD)) if "gps" in keep else {}
    except Exception as exc:  # Pillow raises many kinds on bad EXIF
        raise MetadataError(f"corrupt EXIF metadata: {exc}") from exc
    ifd0 = {t: source[t] for g in keep for t in _IFD0_TAGS.get(g, ()) if t in source}
    sub = {t: source_exif[t] for g in keep for t in _EXIF_TAGS.get(g, ()) if t in source_exif}
    gps = {t: v for t, v in source_gps.items() if t in _GPS_TAGS}
    if not (ifd0 or sub or gps):
        return None
    out = Image.Exif()
    out[_ORIENTATION] = 1
    out.update(ifd0)
    if sub:
        out.get_ifd(_EXIF_IFD).update(sub)
    if gps:
        out.get_ifd(_GPS_IFD).update(gps)
    return out


def _filter_text(img: Image.Image, keep: frozenset[str]) -> dict[str, str]:
    if img.format != "PNG":
        return {}
    allowed = {key for g in keep for key in _PNG_TEXT_KEYS.get(g, ())}
    return {k: v for k, v in img.info.items() if k in allowed and isinstance(v, str)}
