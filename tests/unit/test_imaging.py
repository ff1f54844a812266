"""Untrusted bytes in, clean pixels out."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imageblur import imaging
from imageblur.domain import InvalidImage
from support import jpeg_bytes


def save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "expected"), [("JPEG", imaging.JPEG), ("PNG", imaging.PNG), ("WEBP", imaging.WEBP)]
)
def test_format_comes_from_magic_bytes(fmt: str, expected: imaging.ImageFormat) -> None:
    data = save(Image.new("RGB", (8, 8)), fmt)
    assert imaging.sniff_format(data) is expected
    assert imaging.check(data, max_pixels=100).format is expected


@pytest.mark.parametrize(
    "data", [b"GIF89a....", b"BM....", b"%PDF-1.4", b"<svg/>", b"RIFF0000WAVE"]
)
def test_other_formats_are_unsupported(data: bytes) -> None:
    with pytest.raises(InvalidImage) as err:
        imaging.sniff_format(data)
    assert err.value.http_status == 415


def test_empty_is_a_400() -> None:
    with pytest.raises(InvalidImage) as err:
        imaging.check(b"", max_pixels=100)
    assert err.value.http_status == 400


def test_pixel_limit_uses_the_header() -> None:
    with pytest.raises(InvalidImage) as err:
        imaging.check(jpeg_bytes(20, 10), max_pixels=199)
    assert err.value.http_status == 413
    assert imaging.check(jpeg_bytes(20, 10), max_pixels=200).width == 20


def test_truncation_is_detected() -> None:
    data = jpeg_bytes(200, 200)
    with pytest.raises(InvalidImage) as err:
        imaging.check(data[: len(data) // 2], max_pixels=10**6)
    assert err.value.code == "corrupt_image"


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_cut_in_its_last_rows_is_refused_at_any_scale(progressive: bool) -> None:
    # The check decodes JPEGs at 1/8 scale: the entropy-coded data is still read to
    # its end, so a file missing only its last rows (or its last scan) fails as before.
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    data = save(Image.fromarray(pixels), "JPEG", quality=90, progressive=progressive)
    checked = imaging.check(data, max_pixels=10**6)
    assert (checked.width, checked.height) == (320, 240)  # the full size, not the scaled
    with pytest.raises(InvalidImage) as err:
        imaging.check(data[: len(data) * 95 // 100], max_pixels=10**6)
    assert err.value.code == "corrupt_image"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_an_upright_array(orientation: int) -> None:
    # A 30x20 picture whose top-left quadrant is white, stored rotated per `orientation`.
    upright = np.zeros((20, 30, 3), np.uint8)
    upright[:10, :15] = 255
    transposes = {
        1: None,
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }
    stored = Image.fromarray(upright)
    if transposes[orientation] is not None:
        stored = stored.transpose(transposes[orientation])  # type: ignore[arg-type]
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = save(stored, "PNG", exif=exif)
    decoded = imaging.decode(data, max_pixels=10**6)
    assert decoded.rgb.shape == (20, 30, 3)
    assert decoded.rgb[2, 2].tolist() == [255, 255, 255]
    assert decoded.rgb[17, 27].tolist() == [0, 0, 0]
    assert (imaging.check(data, max_pixels=10**6).width) == 30


def test_reencoding_drops_metadata_and_keeps_quality() -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"
    # A smooth photo-like gradient: what JPEG is made for.
    yy, xx = np.mgrid[0:64, 0:64]
    pixels = np.dstack([xx * 4, yy * 4, (xx + yy) * 2]).astype(np.uint8)
    data = save(Image.fromarray(pixels), "JPEG", exif=exif, quality=98, comment=b"hello")
    decoded = imaging.decode(data, max_pixels=10**6)
    out = imaging.encode(decoded, jpeg_quality=95)
    assert b"SecretCam" not in out and b"hello" not in out
    again = np.asarray(Image.open(io.BytesIO(out)))
    assert np.abs(again.astype(int) - decoded.rgb.astype(int)).mean() < 2


def test_png_transparency_and_grayscale_survive() -> None:
    rgba = Image.new("RGBA", (10, 10), (1, 2, 3, 4))
    out = imaging.encode(imaging.decode(save(rgba, "PNG"), max_pixels=1000), jpeg_quality=95)
    assert Image.open(io.BytesIO(out)).getpixel((0, 0)) == (1, 2, 3, 4)
    gray = Image.new("L", (10, 10), 77)
    out = imaging.encode(imaging.decode(save(gray, "JPEG"), max_pixels=1000), jpeg_quality=95)
    assert Image.open(io.BytesIO(out)).mode == "L"


def test_animation_is_refused() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    data = save(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    with pytest.raises(InvalidImage) as err:
        imaging.check(data, max_pixels=1000)
    assert err.value.http_status == 415


def test_corrupt_exif_is_a_400_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow raises SyntaxError, struct.error, ... on broken EXIF blocks."""
    import struct

    def broken(self: Image.Image) -> Image.Exif:
        raise struct.error("unpack requires a buffer of 2 bytes")

    monkeypatch.setattr(Image.Image, "getexif", broken)
    data = jpeg_bytes()
    for step in (imaging.check, imaging.decode):
        with pytest.raises(InvalidImage) as err:
            step(data, max_pixels=10**6)
        assert err.value.http_status == 400 and err.value.code == "corrupt_image"


def test_header_pixels_read_without_decoding() -> None:
    data = save(Image.new("RGB", (40, 30)), "JPEG")
    assert imaging.header_pixels(data) == 1200
    assert imaging.header_pixels(b"not an image") == 0  # decoding then says why


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_the_alpha_path_copies_by_bands(mode: str) -> None:
    """RGBA, LA and palette images with transparency are converted and copied a band of
    rows at a time, like RGB ones: the Python-side peak is the arrays themselves plus a
    band, not the three or four whole-image copies of a whole `convert` + `asarray`."""
    import tracemalloc

    width, height = 4000, 3000
    gradient = Image.linear_gradient("L").resize((width, height))
    if mode == "P":
        img = gradient.convert("P")
        img.info["transparency"] = 0
    else:
        img = Image.merge(mode, [gradient] * len(mode))
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=1, **({"transparency": 0} if mode == "P" else {}))
    data = out.getvalue()
    tracemalloc.start()
    try:
        decoded = imaging.decode(data, max_pixels=50_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded.alpha is not None and decoded.alpha.shape == (height, width)
    arrays = decoded.rgb.nbytes + decoded.alpha.nbytes  # 48 MB; a whole copy: 144 MB more
    assert peak < arrays + 4 * imaging._BAND_BYTES, (peak, arrays)
