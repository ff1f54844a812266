"""Untrusted bytes -> a checked, decoded, upright image; and back to bytes with no metadata.

Checks run cheapest first: magic bytes, then (JPEG) the scans counted from the markers,
then the pixel count from the header, then a strict decode of all the data (a JPEG's at
1/8 scale: `_scaled_for_check`). Decoding is never attempted on a header that announces
more pixels than allowed, so a decompression bomb costs us a few hundred bytes of
parsing, nor on a JPEG with more scans than allowed, each of which is a full pass over
the image (`imageblur.jpeg_scans`).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from imageblur import heif, jpeg_scans, png_chunks, sandbox
from imageblur.domain import InvalidImage
from imageblur.metadata import KeptMetadata, MetadataError, filter_metadata
from imageblur.ports import RGBImage

# Truncated files must fail, not be padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True, slots=True)
class ImageFormat:
    pil_name: str
    content_type: str
    extension: str
    label: str  # as people name it, in messages and on the page
    # Other names a browser or a file picker may give the same format.
    other_types: tuple[str, ...] = ()
    other_extensions: tuple[str, ...] = ()


JPEG = ImageFormat("JPEG", "image/jpeg", ".jpg", "JPEG", other_extensions=(".jpeg",))
PNG = ImageFormat("PNG", "image/png", ".png", "PNG")
WEBP = ImageFormat("WEBP", "image/webp", ".webp", "WebP")
HEIC = ImageFormat(
    "HEIF",
    "image/heic",
    ".heic",
    "HEIC/HEIF",
    other_types=("image/heif",),
    other_extensions=(".heif",),
)
AVIF = ImageFormat("AVIF", "image/avif", ".avif", "AVIF")
FORMATS = (JPEG, PNG, WEBP, HEIC, AVIF)
SUPPORTED_CONTENT_TYPES = tuple(f.content_type for f in FORMATS)
# The accepted formats as messages name them (the 415 answer, the OpenAPI text, the page
# through GET /limits): the one list, made from FORMATS.
ACCEPTED_FORMATS = ", ".join(f.label for f in FORMATS[:-1]) + f" or {FORMATS[-1].label}"


def megabytes(count: int) -> str:
    """A byte count as people read it: "25 MB", "1.5 MB" (10^6 bytes, as file managers)."""
    return f"{count / 1e6:.3g} MB"


def megapixels(count: int) -> str:
    """A pixel count as people read it: "50 megapixels", "0.3 megapixels"."""
    return f"{count / 1e6:.3g} megapixels"


# Uploads whose result may be written in another format (`IMAGEBLUR_OUTPUT_FORMAT`).
OutputFormat = Literal["jpeg", "same"]


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
    brand = heif.sniff_brand(data)
    if brand is not None:
        return HEIC if brand == "HEIF" else AVIF
    raise InvalidImage(
        f"not a supported image: send {ACCEPTED_FORMATS}",
        http_status=415,
        code="unsupported_media_type",
    )


def result_format(fmt: ImageFormat, output_format: OutputFormat) -> ImageFormat:
    """The format a result of a `fmt` upload is written in. HEIC is always JPEG: no HEVC
    encoder ships with us (see `imageblur.heif`)."""
    if fmt is HEIC or (fmt is AVIF and output_format == "jpeg"):
        return JPEG
    return fmt


def format_for_content_type(content_type: str) -> ImageFormat:
    for fmt in FORMATS:
        if fmt.content_type == content_type:
            return fmt
    raise ValueError(f"unsupported content type {content_type}")


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
    metadata: KeptMetadata  # what the metadata policy lets into the result
    orientation: int = 1  # the EXIF orientation that was applied to make `rgb` upright

    @property
    def icc_profile(self) -> bytes | None:
        return self.metadata.icc_profile


def _check_structure(data: bytes, fmt: ImageFormat, max_scans: int) -> None:
    """Before Pillow parses the file at all, what would make it cost more than its pixels:
    a JPEG's scans, each a pass of the decoder over the whole image, and a marker
    structure, or a PNG's chunks, that Pillow walks one Python loop each."""
    if fmt is PNG:
        try:
            png_chunks.count_chunks(data)
        except png_chunks.TooManyChunksError as exc:
            raise InvalidImage(str(exc), http_status=400, code="corrupt_image") from exc
    if fmt is not JPEG:
        return
    try:
        jpeg_scans.count_scans(data, limit=max_scans)
    except jpeg_scans.TooManyScansError as exc:
        raise InvalidImage(
            f"{exc} (IMAGEBLUR_MAX_JPEG_SCANS); a progressive JPEG usually has 10",
            http_status=400,
            code="too_many_scans",
        ) from exc
    except jpeg_scans.MalformedJPEGError as exc:
        raise InvalidImage(str(exc), http_status=400, code="corrupt_image") from exc


def _open(data: bytes, fmt: ImageFormat, max_scans: int) -> Image.Image:
    _check_structure(data, fmt, max_scans)
    if fmt is HEIC:
        heif.register_heic_decoder()
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is checked next; Pillow's bomb warning adds nothing.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=[fmt.pil_name])
    except Image.DecompressionBombError as exc:
        raise InvalidImage(
            # Pillow's text gives raw pixel counts; the decoder's own bomb guard went off.
            "the image announces far more pixels than this server accepts",
            http_status=413,
            code="too_many_pixels",
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
            f"the image is {width} x {height} pixels ({megapixels(width * height)}); "
            f"this server accepts at most {megapixels(max_pixels)}",
            http_status=413,
            code="too_many_pixels",
        )
    if getattr(img, "n_frames", 1) > 1 and fmt not in (JPEG, HEIC):
        # Only one frame would be anonymized; the others would leak faces. The extra
        # images of a JPEG (MPF: gain maps, depth maps, previews; Ultra HDR) or a HEIC
        # (a burst, alternatives) are never decoded nor written: only the primary image is.
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


# Formats whose strict check decodes in a child under CPU and memory limits
# (`imageblur.sandbox`): a HEIF primary image may be derived from many others, and no
# check of ours reads that structure. JPEG, PNG and WebP cost what their pixels (and the
# checks before decoding) allow: measured in bench/decode_limits.py.
ISOLATED = (HEIC, AVIF)
# Limits of that child: CPU seconds and address space per pixel of the primary image,
# about 10 times what a 50 MP HEIC or AVIF takes (docs/operations.md, decode limits).
_CHILD_CPU_S = 2
_CHILD_CPU_S_PER_MP = 0.5
_CHILD_BYTES = 512 << 20
_CHILD_BYTES_PER_PIXEL = 24


def _load_in_child(data: bytes, fmt: ImageFormat, pixels: int) -> None:
    cpu_s = math.ceil(_CHILD_CPU_S + _CHILD_CPU_S_PER_MP * pixels / 1e6)
    try:
        refused = sandbox.run(
            "imageblur.imaging:decode_check",
            data,
            fmt.pil_name,
            cpu_s=cpu_s,
            memory_bytes=_CHILD_BYTES + _CHILD_BYTES_PER_PIXEL * pixels,
            wall_s=4.0 * cpu_s + 10.0,
        )
    except sandbox.LimitExceededError as exc:
        raise InvalidImage(
            f"decoding the {fmt.pil_name} image was stopped: {exc}",
            http_status=400,
            code="too_costly",
        ) from exc
    if refused is not None:
        message, status, code = refused
        raise InvalidImage(message, http_status=status, code=code)


def decode_check(data: bytes, pil_name: str) -> list[Any] | None:
    """In the sandbox's child: open and decode; None, or why the image is refused
    (message, HTTP status, code)."""
    fmt = next(f for f in FORMATS if f.pil_name == pil_name)
    try:
        with _open(data, fmt, jpeg_scans.MAX_SCANS) as img:
            _load(img, fmt)
    except InvalidImage as exc:
        return [exc.message, exc.http_status, exc.code]
    return None


def _displayed_size(img: Image.Image) -> tuple[int, int]:
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception as exc:  # Pillow raises many kinds on bad EXIF
        raise InvalidImage(
            f"corrupt EXIF metadata: {exc}", http_status=400, code="corrupt_image"
        ) from exc
    width, height = img.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def check(
    data: bytes,
    *,
    max_pixels: int,
    max_scans: int = jpeg_scans.MAX_SCANS,
    hold: Callable[[int], AbstractContextManager[None]] | None = None,
) -> CheckedImage:
    """Validate an upload completely (format, scans, size, strict decode) without keeping
    pixels. `hold(pixels)`, once the header is read, is held during the decode (a budget
    that uploads decoded at once share)."""
    fmt = sniff_format(data)
    with _open(data, fmt, max_scans) as img:
        _check_header(img, fmt, max_pixels=max_pixels)
        width, height = _displayed_size(img)
        pixels = img.size[0] * img.size[1]
        with hold(pixels) if hold else nullcontext():
            if fmt in ISOLATED:
                _load_in_child(data, fmt, pixels)
            else:
                _load(_scaled_for_check(img, fmt), fmt)
    return CheckedImage(format=fmt, width=width, height=height)


def _scaled_for_check(img: Image.Image, fmt: ImageFormat) -> Image.Image:
    """A JPEG is checked at 1/8 scale (libjpeg's DCT scaling): every coefficient of every
    scan is still entropy-decoded, which is where a truncated or corrupt file fails, but
    not transformed and colour-converted at full size: a third of the check's CPU on a
    640 x 480 upload (1.8 -> 1.2 ms), a fifth on a 320 x 240 one (0.46 -> 0.37 ms), and
    the same answers on 1,414 truncated and corrupted files (baseline, progressive,
    grey and CMYK). The budget held stays the full image's: a progressive JPEG's
    coefficients are buffered whole at any scale."""
    if fmt is JPEG:
        img.draft(None, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
    return img


def header_pixels(data: bytes, *, max_scans: int = jpeg_scans.MAX_SCANS) -> int:
    """Width x height as the header announces them, without decoding; 0 when the header
    cannot be read or is refused (decoding then says why)."""
    try:
        fmt = sniff_format(data)
        with _open(data, fmt, max_scans) as img:
            width, height = img.size
    except InvalidImage:
        return 0
    return max(0, width) * max(0, height)


# Rows copied at a time out of a decoded image: about 8 MB of pixels.
_BAND_BYTES = 8 << 20


def _pixels(img: Image.Image, *, alpha: bool) -> tuple[RGBImage, np.ndarray | None]:
    """The RGB pixels of `img` (and its alpha if `alpha`) as new writable arrays, converted
    and copied a band of rows at a time. A whole-image `convert` is a full copy, and
    `np.asarray(img)` goes through `tobytes`, which joins a list of chunks, so the image
    would briefly be held three or four times: on a 50 MP RGBA PNG about 600 MB more at
    the worker's peak than the arrays themselves; on a 12 MP RGB photo about 130 MB."""
    width, height = img.size
    mode = "RGBA" if alpha else "RGB"
    rgb = np.empty((height, width, 3), np.uint8)
    out_alpha = np.empty((height, width), np.uint8) if alpha else None
    rows = max(1, _BAND_BYTES // (width * 4))
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        band = img.crop((0, top, width, bottom))  # keeps the palette and transparency
        arr = np.asarray(band if band.mode == mode else band.convert(mode))
        rgb[top:bottom] = arr[:, :, :3]
        if out_alpha is not None:
            out_alpha[top:bottom] = arr[:, :, 3]
    return rgb, out_alpha


def decode(
    data: bytes,
    *,
    max_pixels: int,
    keep_metadata: frozenset[str] = frozenset(),
    max_scans: int = jpeg_scans.MAX_SCANS,
) -> DecodedImage:
    """Decode to an upright RGB array (EXIF orientation applied), alpha kept apart, with
    the metadata that the policy `keep_metadata` lets into the result."""
    fmt = sniff_format(data)
    with _open(data, fmt, max_scans) as img:
        _check_header(img, fmt, max_pixels=max_pixels)
        _load(img, fmt)
        try:
            kept = filter_metadata(img, keep_metadata)
        except MetadataError as exc:
            raise InvalidImage(str(exc), http_status=400, code="corrupt_image") from exc
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
        rgb, alpha = _pixels(upright, alpha=has_alpha)
    return DecodedImage(
        format=fmt,
        rgb=rgb,
        alpha=alpha,
        grayscale=grayscale,
        metadata=kept,
        orientation=orientation if isinstance(orientation, int) else 1,
    )


def encode(image: DecodedImage, *, jpeg_quality: int, target: ImageFormat | None = None) -> bytes:
    """Encode in `target` (default: the input's format) from the pixels and the kept
    metadata only.

    The ICC colour profile is kept so colours stay right; it describes colours, not the
    photo or its owner. Other metadata only as the policy allows (`imageblur.metadata`).
    """
    fmt = target or image.format
    grey = image.grayscale and fmt is not AVIF  # Pillow writes AVIF from RGB(A) only
    if image.alpha is not None and fmt is not JPEG:
        pil = Image.fromarray(np.dstack([image.rgb, image.alpha]), "RGBA")
        if grey:
            pil = pil.convert("LA")
    else:
        pil = Image.fromarray(image.rgb, "RGB")
        if grey:
            pil = pil.convert("L")
    out = io.BytesIO()
    options = image.metadata.save_options(fmt.pil_name)
    if image.grayscale:
        options.pop("icc_profile", None)  # an RGB profile does not fit grey pixels
    if fmt is JPEG:
        pil.save(out, "JPEG", quality=jpeg_quality, optimize=False, **options)
    elif fmt is PNG:
        pil.save(out, "PNG", compress_level=6, **options)
    elif fmt is AVIF:
        pil.save(out, "AVIF", quality=jpeg_quality, **options)
    elif fmt is WEBP:
        pil.save(out, "WEBP", quality=jpeg_quality, method=4, **options)
    else:
        raise ValueError(f"cannot write {fmt.pil_name}")
    return out.getvalue()
