"""`RangedReader` on every store, as it is and under the encryption of originals: a
stored object read as a seekable file by ranged reads, what the API's video probe reads
an upload through (issue 25: the upload is never on the API's disk). An MP4 whose header
(`moov`) is at its end, megabytes past its start, is probed through a few ranges."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from imageblur.ports import ObjectStore
from imageblur.ranged_reader import RangedReader
from imageblur.video.errors import InvalidVideo
from imageblur.video.probe import VideoLimits, probe
from video_copy import make_clip, padded_before_moov, top_level_atoms

BLOCK = 64 * 1024
LIMITS = VideoLimits(max_seconds=1800, max_pixels=3840 * 2160)


def test_reads_and_seeks_give_the_objects_bytes(store: ObjectStore) -> None:
    data = os.urandom(5 * BLOCK + 123)
    store.put_stream("k.bin", [data[:70_000], data[70_000:]], content_type="video/mp4")
    rng = random.Random(7)
    with RangedReader(store, "k.bin", block_bytes=BLOCK, blocks_kept=2) as reader:
        assert reader.size == len(data) and reader.seekable()
        assert reader.read() == data  # to the end, across blocks
        assert reader.read(10) == b""  # past the end
        for _ in range(50):
            start, length = rng.randrange(len(data) + 10), rng.randrange(3 * BLOCK)
            reader.seek(start)
            assert reader.read(length) == data[start : start + length]
        assert reader.seek(-5, os.SEEK_END) == len(data) - 5
        assert reader.read() == data[-5:]
        with pytest.raises(ValueError, match="negative"):
            reader.seek(-1)


def test_an_mp4_with_its_header_at_the_end_is_probed_through_a_few_ranges(
    store: ObjectStore, tmp_path: Path
) -> None:
    clip = padded_before_moov(make_clip(tmp_path / "c.mp4").read_bytes(), 8 << 20)
    assert top_level_atoms(clip)[-1][1] > 8 << 20  # the header is 8 MB in
    store.put_stream(
        "c.mp4", [clip[i : i + BLOCK] for i in range(0, len(clip), BLOCK)], content_type="video/mp4"
    )
    with RangedReader(store, "c.mp4", block_bytes=BLOCK) as reader:
        info = probe(reader, LIMITS)
        assert (info.width, info.height, info.frames, info.video_codec) == (160, 120, 20, "h264")
        # The start and the end, not the 128 blocks between.
        assert reader.ranges_read <= 8, reader.ranges_read


def test_a_truncated_mp4_is_refused_through_ranges(store: ObjectStore, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4").read_bytes()
    store.put("t.mp4", clip[: len(clip) // 2], content_type="video/mp4")
    with RangedReader(store, "t.mp4", block_bytes=BLOCK) as reader, pytest.raises(InvalidVideo):
        probe(reader, LIMITS)
