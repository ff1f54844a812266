"""The JPEG scan counter: it counts what libjpeg decodes, whatever the entropy-coded data
holds, and refuses a scan bomb and a broken marker structure before any decode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imageblur import imaging, jpeg_patch
from imageblur.domain import InvalidImage
from imageblur.jpeg_scans import MAX_SCANS, MalformedJPEGError, TooManyScansError, count_scans
from jpeg_bombs import progressive, scan_bomb, scan_segments
from support import BILL, decode, jpeg_bytes


def noisy_jpeg(**options: object) -> bytes:
    """Noise: its entropy-coded data is full of stuffed 0xFF bytes."""
    pixels = np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=98, **options)
    return out.getvalue()


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def test_a_baseline_photo_has_one_scan_and_stuffed_bytes_are_data() -> None:
    data = noisy_jpeg()
    scan_start = scan_segments(data)[0][0]
    assert b"\xff\x00" in data[scan_start:]
    assert count_scans(data) == 1
    assert count_scans(BILL.read_bytes()) == 1


def test_a_progressive_jpeg_has_libjpegs_ten_scans() -> None:
    assert count_scans(noisy_jpeg(progressive=True)) == 10
    assert count_scans(progressive(64, 64)) == 10


def test_restart_markers_are_part_of_the_scan() -> None:
    data = noisy_jpeg(restart_marker_blocks=1)
    assert sum(data.count(bytes([0xFF, m])) for m in range(0xD0, 0xD8)) > 40
    assert count_scans(data) == 1
    assert count_scans(noisy_jpeg(progressive=True, restart_marker_rows=1)) == 10


def test_markers_inside_a_segment_are_not_counted() -> None:
    """An APP segment may hold any bytes, an embedded JPEG's scans among them."""
    data = jpeg_bytes()
    inner = progressive(16, 16)
    app = segment(0xE5, b"junk\x00" + inner)
    assert count_scans(data[:2] + app + data[2:]) == 1


def test_fill_bytes_and_what_follows_eoi_are_handled_like_libjpeg() -> None:
    data = jpeg_bytes()
    filled = data[:2] + b"\xff" * 20 + data[2:]
    appended = data + progressive(16, 16)  # an MPF preview after EOI: never decoded
    assert count_scans(filled) == count_scans(appended) == 1
    assert decode(filled).shape == decode(data).shape


def test_scans_past_the_limit_are_refused() -> None:
    bomb = scan_bomb(64, 64, scans=MAX_SCANS + 1)
    assert count_scans(bomb, limit=MAX_SCANS + 1) == MAX_SCANS + 1
    with pytest.raises(TooManyScansError):
        count_scans(bomb)
    assert decode(bomb).shape == (64, 64, 3)  # libjpeg would decode it, every scan


def test_a_large_scan_bomb_is_refused_at_once() -> None:
    bomb = scan_bomb(4096, 4096, scans=1000)
    assert len(bomb) < 300_000
    with pytest.raises(TooManyScansError):
        count_scans(bomb)
    with pytest.raises(InvalidImage) as refused:
        imaging.check(bomb, max_pixels=50_000_000)
    assert (refused.value.http_status, refused.value.code) == (400, "too_many_scans")
    with pytest.raises(InvalidImage, match="scans"):
        imaging.decode(bomb, max_pixels=50_000_000)
    assert imaging.header_pixels(bomb) == 0  # the worker's budget does not open it either


def test_the_limit_is_a_setting() -> None:
    bomb = scan_bomb(32, 32, scans=30)
    assert imaging.check(bomb, max_pixels=10_000, max_scans=30).width == 32
    with pytest.raises(InvalidImage, match="more than 29 scans"):
        imaging.check(bomb, max_pixels=10_000, max_scans=29)


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda d: d[:30], id="cut inside a segment"),
        pytest.param(lambda d: d[:2] + b"\xff\xe1\x00", id="cut inside a length"),
        pytest.param(lambda d: d[:2] + b"\xff\xe1\x00\x01" + d[2:], id="length below 2"),
        pytest.param(lambda d: d[:2] + b"\xff\xe1\xff\xf0" + d[2:], id="length past the end"),
        pytest.param(lambda d: b"\xff\xe0" + d, id="no SOI"),
        pytest.param(lambda d: d[:2] + b"\x00" * 10_000 + d[2:], id="junk between segments"),
        pytest.param(lambda d: d[:2] + segment(0xFE, b"") * 5000 + d[2:], id="5000 segments"),
    ],
)
def test_a_broken_marker_structure_is_a_corrupt_image(broken: object) -> None:
    data = broken(jpeg_bytes())  # type: ignore[operator]
    with pytest.raises(MalformedJPEGError):
        count_scans(data)
    with pytest.raises(InvalidImage) as refused:
        imaging.check(data, max_pixels=10_000)
    assert refused.value.code in {"corrupt_image", "unsupported_media_type"}


def test_entropy_data_cut_short_is_left_to_the_decoder() -> None:
    data = noisy_jpeg()
    assert count_scans(data[: len(data) // 2]) == 1
    with pytest.raises(InvalidImage, match="truncated"):
        imaging.check(data[: len(data) // 2], max_pixels=10_000_000)


def test_the_lossless_patch_refuses_past_the_same_limit() -> None:
    data = noisy_jpeg(progressive=True)
    upright = decode(data)
    regions = [((0, 0, 16, 16), np.ones((16, 16), bool))]
    options = {"orientation": 1, "grayscale": False, "icc_profile": None}
    assert jpeg_patch.patch(data, upright, regions, max_scans=10, **options)  # type: ignore[arg-type]
    with pytest.raises(jpeg_patch.UnsupportedJPEGError, match="more than 9 scans"):
        jpeg_patch.patch(data, upright, regions, max_scans=9, **options)  # type: ignore[arg-type]
