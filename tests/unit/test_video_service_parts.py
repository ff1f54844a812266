"""The pipeline of `imageblur.video` behind the service's ports (`video.service_parts`):
the probe's facts as the record keeps them, its refusals with their status and code,
the two passes' progress as frames done of frames in all, the result's outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageblur.bootstrap import video_parts
from imageblur.config import load_settings
from imageblur.domain import VideoRefused
from unit.fakes import FakeDetector
from video_copy import make_clip


def test_the_probe_gives_the_facts_and_refuses_with_the_pipelines_codes(tmp_path: Path) -> None:
    parts = video_parts(load_settings(video=True, max_video_seconds=60), None)
    assert parts.anonymizer is None  # a process that runs no jobs (the API)
    facts = parts.probe(make_clip(tmp_path / "c.mp4", frames=20))
    assert (facts.container, facts.video_codec, facts.width, facts.height) == (
        "mp4",
        "h264",
        160,
        120,
    )
    assert (facts.fps, facts.frames, facts.audio_codec) == (10.0, 20, None)
    assert facts.duration_s == pytest.approx(2.0)
    text = tmp_path / "t.mp4"
    text.write_bytes(b"not a video at all" * 10)
    with pytest.raises(VideoRefused) as refused:
        parts.probe(text)
    assert (refused.value.http_status, refused.value.code) == (415, "unsupported_video")
    long = make_clip(tmp_path / "long.mp4", frames=20)
    with pytest.raises(VideoRefused) as too_long:
        video_parts(load_settings(video=True, max_video_seconds=1), None).probe(long)
    assert (too_long.value.http_status, too_long.value.code) == (413, "too_long")


def test_the_anonymizer_reports_both_passes_and_its_outcome(tmp_path: Path) -> None:
    parts = video_parts(load_settings(video=True), FakeDetector([]))
    assert parts.anonymizer is not None
    seen: list[tuple[int, int]] = []
    target = tmp_path / "result"
    result = parts.anonymizer.anonymize(
        make_clip(tmp_path / "c.mp4", frames=20), target, lambda d, t: seen.append((d, t))
    )
    assert (result.frames, result.tracks, result.audio) == (20, 0, "none")
    assert (result.extension, result.content_type) == (".mp4", "video/mp4")
    assert target.read_bytes()[4:8] == b"ftyp"
    assert seen[-1] == (40, 40)  # two passes over 20 frames, each counted
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
