"""The PNG chunk counter: a flood of tiny chunks is refused before Pillow walks it."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from imageblur import imaging
from imageblur.domain import InvalidImage
from imageblur.png_chunks import MAX_CHUNKS, TooManyChunksError, count_chunks
from support import png_bytes


def chunk(kind: bytes, payload: bytes = b"") -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def flooded(chunks: int) -> bytes:
    """A small PNG with `chunks` empty ancillary chunks before its image data."""
    data = png_bytes(8, 8)
    return data[:33] + chunk(b"abCd") * chunks + data[33:]


def test_a_png_has_a_few_chunks_and_nothing_after_iend_counts() -> None:
    data = png_bytes(64, 48)
    assert count_chunks(data) == 3  # IHDR, IDAT, IEND
    assert count_chunks(data + chunk(b"abCd") * 10) == 3


def test_a_large_png_from_pillow_is_far_below_the_limit() -> None:
    out = io.BytesIO()
    Image.effect_noise((2000, 1500), 60).convert("RGB").save(out, "PNG", compress_level=0)
    assert count_chunks(out.getvalue()) < 200


def test_a_chunk_flood_is_refused_before_decoding() -> None:
    assert count_chunks(flooded(MAX_CHUNKS - 3)) == MAX_CHUNKS
    imaging.check(flooded(MAX_CHUNKS - 3), max_pixels=100)
    with pytest.raises(TooManyChunksError):
        count_chunks(flooded(MAX_CHUNKS))
    with pytest.raises(InvalidImage, match=f"more than {MAX_CHUNKS} chunks") as refused:
        imaging.check(flooded(MAX_CHUNKS), max_pixels=100)
    assert (refused.value.http_status, refused.value.code) == (400, "corrupt_image")


def test_a_length_past_the_end_is_left_to_the_decoder() -> None:
    data = png_bytes(8, 8)
    cut = data[:33] + struct.pack(">I", 1 << 30) + b"IDAT"
    assert count_chunks(cut) == 2
    with pytest.raises(InvalidImage):
        imaging.check(cut, max_pixels=100)
