"""A video is refused from its header before any work, and decoding enforces what the
header promised: each refusal of issue 25's item 2 on a clip generated here."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from clips import Clip, write_sound
from imageblur.video.errors import BrokenVideo, InvalidVideo
from imageblur.video.frames import frames
from imageblur.video.probe import VideoLimits, probe, sniff_container

LIMITS = VideoLimits(max_seconds=1800, max_pixels=3840 * 2160)
EXAMPLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "example-pictures"


def _refusal(path: Path, limits: VideoLimits = LIMITS) -> InvalidVideo:
    with pytest.raises(InvalidVideo) as caught:
        probe(path, limits)
    return caught.value


def test_a_clip_within_the_limits_is_described(tmp_path: Path) -> None:
    path = Clip(frames=15, fps=15, audio=["aac"]).write(tmp_path / "clip.mp4")
    info = probe(path, LIMITS)
    assert (info.family, info.output, info.video_codec) == ("mp4", "mp4", "h264")
    assert (info.width, info.height, info.fps, info.frames) == (64, 48, 15.0, 15)
    assert info.duration_s == pytest.approx(1.0, abs=0.07)
    assert [a.codec for a in info.audio] == ["aac"]


def test_the_container_comes_from_the_bytes_not_the_name(tmp_path: Path) -> None:
    webm = Clip(container="webm", codec="libvpx-vp9").write(tmp_path / "clip.webm")
    misnamed = webm.rename(tmp_path / "clip.mp4")
    assert probe(misnamed, LIMITS).output == "webm"


def test_a_picture_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "photo.mp4"
    path.write_bytes((EXAMPLE / "bill-gates.jpg").read_bytes())
    refusal = _refusal(path)
    assert (refusal.http_status, refusal.code) == (415, "unsupported_video")


def test_audio_alone_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "sound.mp4"
    write_sound(path, "aac")
    refusal = _refusal(path)
    assert (refusal.http_status, refusal.code) == (415, "no_video")


def test_a_truncated_mp4_is_refused(tmp_path: Path) -> None:
    # PyAV writes the index (moov) last: cut in half, the file has no index at all.
    whole = Clip(frames=20).write(tmp_path / "whole.mp4").read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(whole[: len(whole) // 2])
    refusal = _refusal(path)
    assert (refusal.http_status, refusal.code) == (400, "invalid_video")
    assert "truncated" in refusal.message


def test_a_webm_with_an_unknown_codec_is_refused_by_name(tmp_path: Path) -> None:
    data = Clip(container="webm", codec="libvpx-vp9").write(tmp_path / "clip.webm").read_bytes()
    assert data.count(b"V_VP9") == 1
    path = tmp_path / "odd.webm"
    path.write_bytes(data.replace(b"V_VP9", b"V_QQ9"))  # same length: the file stays well formed
    refusal = _refusal(path)
    assert (refusal.http_status, refusal.code) == (415, "unsupported_codec")
    assert "codec unknown" in refusal.message


def test_an_unknown_audio_codec_is_refused_not_dropped(tmp_path: Path) -> None:
    clip = Clip(container="webm", codec="libvpx-vp9", audio=["libopus"])
    data = clip.write(tmp_path / "clip.webm").read_bytes()
    assert data.count(b"A_OPUS") == 1
    path = tmp_path / "odd.webm"
    path.write_bytes(data.replace(b"A_OPUS", b"A_QQUS"))
    refusal = _refusal(path)
    assert (refusal.http_status, refusal.code) == (415, "unsupported_codec")
    assert "audio codec unknown" in refusal.message


def test_a_codec_outside_the_list_is_named(tmp_path: Path) -> None:
    path = Clip(container="matroska", codec="ffv1", pix_fmt="yuv420p").write(tmp_path / "a.mkv")
    refusal = _refusal(path)
    assert (refusal.http_status, refusal.code) == (415, "unsupported_codec")
    assert "ffv1" in refusal.message


def test_a_tiny_file_claiming_8k_frames_is_refused(tmp_path: Path) -> None:
    flat = np.zeros((4320, 7680, 3), np.uint8)
    clip = Clip(width=7680, height=4320, frames=1, fps=1, picture=lambda _: flat)
    path = clip.write(tmp_path / "8k.mp4")
    assert path.stat().st_size < 200_000
    refusal = _refusal(path)
    assert (refusal.http_status, refusal.code) == (413, "too_many_pixels")
    assert "7680x4320" in refusal.message


def test_a_clip_longer_than_allowed_is_refused(tmp_path: Path) -> None:
    path = Clip(frames=20, fps=10).write(tmp_path / "clip.mp4")
    refusal = _refusal(path, replace(LIMITS, max_seconds=1))
    assert (refusal.http_status, refusal.code) == (413, "too_long")


def test_a_frame_count_bomb_is_refused(tmp_path: Path) -> None:
    # 300 frames one tick (1/90000 s) apart: 90000 frames/s, as no camera records.
    path = Clip(frames=300, pts=range(300)).write(tmp_path / "bomb.mp4")
    refusal = _refusal(path)
    assert (refusal.http_status, refusal.code) == (400, "bad_frame_rate")


def test_decoding_enforces_the_frame_count_whatever_the_header_said(tmp_path: Path) -> None:
    path = Clip(frames=20).write(tmp_path / "clip.mp4")
    lying = replace(probe(path, LIMITS), frames_allowed=12)  # as a header that lied
    with pytest.raises(BrokenVideo) as caught:
        list(frames(path, lying))
    assert caught.value.code == "too_many_frames"


def test_decoding_enforces_the_duration_whatever_the_header_said(tmp_path: Path) -> None:
    path = Clip(frames=30, fps=10).write(tmp_path / "clip.mp4")
    lying = replace(probe(path, LIMITS), max_seconds=2)
    with pytest.raises(BrokenVideo) as caught:
        list(frames(path, lying))
    assert caught.value.code == "too_long"


@pytest.mark.parametrize("brand", [b"heic", b"mif1", b"avif", b"avis"])
def test_a_heif_or_avif_picture_is_not_taken_for_a_video(brand: bytes) -> None:
    """Both are ISO-BMFF files, as MP4 is: the major brand says they are pictures."""
    head = b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00mif1heic"
    with pytest.raises(InvalidVideo):
        sniff_container(head)
    assert sniff_container(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2") == "mp4"
    assert sniff_container(b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ") == "mp4"
