"""A video's sound that cannot be written to the result fails as `audio_failed`, not as
a corrupt input; an input's audio packet that does not decode, as `corrupt_audio`.

The tracks are real (`encode.AudioTrack` on a real clip and a real output container);
only the output's `mux` is made to refuse the sound, as a muxer refusing a packet (say,
non-monotonic timestamps) does, since no small input makes FFmpeg's muxers refuse it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import av.container
import pytest

from clips import Clip
from imageblur.bootstrap import video_options
from imageblur.config import load_settings
from imageblur.video.encode import AudioTrack, open_output
from imageblur.video.errors import AUDIO_FAILED, CORRUPT_AUDIO, BrokenVideo
from imageblur.video.probe import VideoInfo, probe


class RefusingSound:
    """The real output container, whose muxer refuses every audio packet."""

    def __init__(self, output: av.container.OutputContainer) -> None:
        self._output = output

    def mux(self, packets: Any) -> None:
        for packet in packets if isinstance(packets, list) else [packets]:
            if packet.stream.type == "audio":
                raise av.error.FFmpegError(22, "Invalid argument")
            self._output.mux(packet)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._output, name)


def _info(path: Path) -> VideoInfo:
    return probe(path, video_options(load_settings()).limits)


def _tracks(
    src: Path, target: Path, *, refuse: bool
) -> Iterator[tuple[av.container.InputContainer, AudioTrack]]:
    info = _info(src)
    with av.open(str(src)) as source:
        output = open_output(target, info, source, keep=frozenset())
        with output:
            writer: Any = RefusingSound(output) if refuse else output
            yield source, AudioTrack(writer, source.streams.audio[0], info)


@pytest.mark.parametrize(
    ("container", "codec", "copied"),
    [("mp4", "aac", True), ("mov", "pcm_s16le", False)],
)
def test_sound_the_result_refuses_fails_as_audio_failed(
    tmp_path: Path, container: str, codec: str, copied: bool
) -> None:
    src = Clip(container=container, audio=[codec]).write(tmp_path / f"a.{container}")
    for source, track in _tracks(src, tmp_path / "out.mp4", refuse=True):
        assert track.copied is copied
        with pytest.raises(BrokenVideo) as caught:
            for packet in source.demux(track.source):
                track.feed(packet)
            track.flush()
    assert caught.value.code == AUDIO_FAILED
    assert "could not be written to the result" in caught.value.message


def test_an_audio_packet_that_does_not_decode_fails_as_corrupt_audio(tmp_path: Path) -> None:
    # Matroska's AAC is re-encoded to Opus for WebM: its packets are decoded.
    src = Clip(container="matroska", codec="libvpx-vp9", audio=["aac"]).write(tmp_path / "a.mkv")
    for source, track in _tracks(src, tmp_path / "out.webm", refuse=False):
        assert not track.copied
        packet = next(p for p in source.demux(track.source) if p.size)
        garbage = av.Packet(b"\xff" * packet.size)
        garbage.stream = track.source
        with pytest.raises(BrokenVideo) as caught:
            track.feed(garbage)
    assert caught.value.code == CORRUPT_AUDIO
