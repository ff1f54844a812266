"""Untrusted bytes -> a checked, decoded, upright image; and back to bytes with no metadata.

Checks run cheapest first: magic bytes, then the pixel count from the header, then a
strict full decode. Decoding is never attempted on a header that announces more pixels
than allowed, so a decompression bomb costs us a few hundred bytes of parsing.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from imageblur.domain import InvalidImage
from imageblur.ports import RGBImage

# Truncated files must fail, not be padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True, slots=True)
class ImageFormat:
    pil_name: str
    content_type: str
    extension: str


JPEG = ImageFormat("JPEG", "image/jpeg", ".jpg")
PNG = ImageFormat("PNG", "image/png", ".png")
WEBP = ImageFormat("WEBP", "image/webp", ".webp")
FORMATS = (JPEG, PNG, WEBP)
SUPPORTED_CONTENT_TYPES = tuple(f.content_type for f in FORMATS)


def sniff_format(data: bytes) -> ImageFormat:
    """The format from the magic bytes; the client's name and Content-Type are ignored."""
    if not data:
        raise InvalidImage("the image is empty", http_status=400, code="empty_image")
    if data[:3] == b"\xff\xd8\xff":
        return JPEG
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return PNG
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    raise InvalidImage(
        "not a supported image: JPEG, PNG and WebP are accepted",
        http_status=415,
        code="unsupported_media_type",
    )


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """An upload that passed every check. `width`/`height` are as displayed (EXIF applied)."""

    format: ImageFormat
    width: int
    height: int


@dataclass(slots=True)
class DecodedImage:
    format: ImageFormat
    rgb: RGBImage  # upright, H x W x 3
    alpha: np.ndarray | None  # H x W uint8, or None when the input had no transparency
    grayscale: bool
    icc_profile: bytes | None
    orientation: int = 1  # the EXIF orientation that was applied to make `rgb` upright


def _open(data: bytes, fmt: ImageFormat) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is checked next; Pillow's bomb warning adds nothing.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=[fmt.pil_name])
    except Image.DecompressionBombError as exc:
        raise InvalidImage(
            f"the image announces too many pixels: {exc}", http_status=413, code="too_many_pixels"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(
            f"corrupt {fmt.pil_name} image: {exc}", http_status=400, code="corrupt_image"
        ) from exc


def _check_header(img: Image.Image, fmt: ImageFormat, *, max_pixels: int) -> None:
    width, height = img.size
    if width <= 0 or height <= 0:
        raise InvalidImage("the image has no pixels", http_status=400, code="corrupt_image")
    if width * height > max_pixels:
        raise InvalidImage(
            f"the image has {width}x{height} = {width * height} pixels; "
            f"at most {max_pixels} are accepted",
            http_status=413,
            code="too_many_pixels",
        )
    # A JPEG's extra frames are MPF previews or gain maps (Ultra HDR) that phones append:
    # only the main image is decoded, and nothing else is ever written back.
    if fmt is not JPEG and getattr(img, "n_frames", 1) > 1:
        # Only one frame would be anonymized; the others would leak faces.
        raise InvalidImage(
            "animated images are not supported", http_status=415, code="animated_image"
        )


def _load(img: Image.Image, fmt: ImageFormat) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise InvalidImage(
                f"truncated or corrupt {fmt.pil_name} image: {exc}",
                http_status=400,
                code="corrupt_image",
            ) from exc
    return img


def _displayed_size(img: Image.Image) -> tuple[int, int]:
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception as exc:  # Pillow raises many kinds on bad EXIF
        raise InvalidImage(
            f"corrupt EXIF metadata: {exc}", http_status=400, code="corrupt_image"
        ) from exc
    width, height = img.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def check(data: bytes, *, max_pixels: int) -> CheckedImage:
    """Validate an upload completely (format, size, strict decode) without keeping pixels."""
    fmt = sniff_format(data)
    with _open(data, fmt) as img:
        _check_header(img, fmt, max_pixels=max_pixels)
        width, height = _displayed_size(img)
        _load(img, fmt)
    return CheckedImage(format=fmt, width=width, height=height)


def decode(data: bytes, *, max_pixels: int) -> DecodedImage:
    """Decode to an upright RGB array (EXIF orientation applied), alpha kept apart."""
    fmt = sniff_format(data)
    with _open(data, fmt) as img:
        _check_header(img, fmt, max_pixels=max_pixels)
        _load(img, fmt)
        icc = img.info.get("icc_profile")
        try:
            orientation = img.getexif().get(0x0112, 1)
            # In place: a copy of a 50 MP image is 200 MB more at the worker's peak.
            ImageOps.exif_transpose(img, in_place=True)
        except Exception as exc:  # Pillow raises many kinds on bad EXIF
            raise InvalidImage(
                f"corrupt EXIF metadata: {exc}", http_status=400, code="corrupt_image"
            ) from exc
        upright = img
        grayscale = upright.mode in ("1", "L", "LA", "I", "I;16", "F")
        has_alpha = upright.mode in ("RGBA", "LA", "PA") or (
            upright.mode == "P" and "transparency" in upright.info
        )
        alpha: np.ndarray | None = None
        if has_alpha:
            rgba = upright.convert("RGBA")
            arr = np.asarray(rgba)
            rgb = np.ascontiguousarray(arr[:, :, :3])
            alpha = np.ascontiguousarray(arr[:, :, 3])
        else:
            rgb = np.asarray(upright if upright.mode == "RGB" else upright.convert("RGB"))
    if not rgb.flags.writeable:  # copied once the decoded image is closed and freed
        rgb = rgb.copy()
    return DecodedImage(
        format=fmt,
        rgb=rgb,
        alpha=alpha,
        grayscale=grayscale,
        icc_profile=icc if isinstance(icc, bytes) else None,
        orientation=orientation if isinstance(orientation, int) else 1,
    )


def encode(image: DecodedImage, *, jpeg_quality: int) -> bytes:
    """Encode in the input's format from pixels only: no EXIF, XMP, GPS or comments.

    The ICC colour profile is kept so colours stay right; it describes colours, not the
    photo or its owner.
    """
    if image.alpha is not None and image.format is not JPEG:
        pil = Image.fromarray(np.dstack([image.rgb, image.alpha]), "RGBA")
        if image.grayscale:
            pil = pil.convert("LA")
    else:
        pil = Image.fromarray(image.rgb, "RGB")
        if image.grayscale:
            pil = pil.convert("L")
    out = io.BytesIO()
    options: dict[str, object] = {}
    if image.icc_profile and not image.grayscale:
        options["icc_profile"] = image.icc_profile
    if image.format is JPEG:
        pil.save(out, "JPEG", quality=jpeg_quality, optimize=False, **options)
    elif image.format is PNG:
        pil.save(out, "PNG", compress_level=6, **options)
    else:
        pil.save(out, "WEBP", quality=jpeg_quality, method=4, **options)
    return out.getvalue()
