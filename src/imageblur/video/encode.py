"""The result's container: the video encoder, the audio streams (copied or re-encoded)
and the kept metadata. docs/video.md says why each encoder.

MP4 and MOV give MP4 with H.264 (libx264, High profile, 8-bit 4:2:0: what every phone
and browser plays); WebM and Matroska give WebM with VP9 (libvpx). Frames keep their
timestamps (variable frame rate included) in the input stream's time base, and the
stored orientation with the input's display matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import av.container
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.packet import Packet
from av.stream import Stream
from av.video.stream import VideoStream

from imageblur.video.errors import AUDIO_FAILED, CORRUPT_AUDIO, ENCODE_FAILED, BrokenVideo
from imageblur.video.metadata import kept_metadata
from imageblur.video.orientation import Orientation
from imageblur.video.probe import OutputContainer, VideoInfo

AudioOutcome = Literal["kept", "reencoded", "none"]


@dataclass(frozen=True, slots=True)
class Encoder:
    codec: str
    options: dict[str, str]
    even_size: bool  # 4:2:0 H.264 needs even widths and heights


# libx264 `veryfast`: a 10-frame look-ahead (memory: 10 frames, not 40 as `medium`) at
# about twice `medium`'s speed; CRF 20 is visually near-lossless for camera footage. No
# B-frames (`bf` 0): frames are then stored in the order they are shown, so an MP4's
# durations, stored as the gaps between decoding times, carry a variable frame rate and
# the last frame's duration over exactly (B-frames shift them by the reorder delay).
# libvpx `realtime` with cpu-used 8: the fastest VP9, row-multithreaded.
ENCODERS: dict[OutputContainer, Encoder] = {
    "mp4": Encoder(
        "libx264",
        {"preset": "veryfast", "crf": "20", "profile": "high", "bf": "0"},
        even_size=True,
    ),
    "webm": Encoder(
        "libvpx-vp9",
        {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0", "row-mt": "1"},
        even_size=False,
    ),
}
PIXEL_FORMAT = "yuv420p"
# Audio codecs each output plays as they are (Chromium, Safari, Android and iOS); any
# other is re-encoded to the output's own.
PLAYABLE_AUDIO: dict[OutputContainer, frozenset[str]] = {
    "mp4": frozenset({"aac", "mp3"}),
    "webm": frozenset({"opus", "vorbis"}),
}
AUDIO_ENCODERS: dict[OutputContainer, str] = {"mp4": "aac", "webm": "libopus"}
AAC_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
MUXER_OPTIONS: dict[OutputContainer, dict[str, str]] = {
    # The index first: a <video> element starts playing before the whole file is read.
    "mp4": {"movflags": "+faststart"},
    "webm": {},
}
CONTENT_TYPES: dict[OutputContainer, str] = {"mp4": "video/mp4", "webm": "video/webm"}


def encoded_size(info: VideoInfo) -> tuple[int, int]:
    """The result's stored frame size: the input's, one pixel larger where an odd side
    meets an encoder that needs even ones (the last column or row repeated)."""
    width, height = info.width, info.height
    if ENCODERS[info.output].even_size:
        width, height = width + width % 2, height + height % 2
    return width, height


def open_output(
    path: Path, info: VideoInfo, source: av.container.InputContainer, *, keep: frozenset[str]
) -> av.container.OutputContainer:
    container = av.open(str(path), "w", format=info.output, options=MUXER_OPTIONS[info.output])
    container.metadata.update(kept_metadata(source.metadata, keep))
    return container


def add_video(
    output: av.container.OutputContainer,
    source: VideoStream,
    info: VideoInfo,
    orientation: Orientation,
) -> VideoStream:
    encoder = ENCODERS[info.output]
    rate = Fraction(info.fps).limit_denominator(1001)
    stream = output.add_stream(encoder.codec, rate=rate, options=dict(encoder.options))
    assert isinstance(stream, VideoStream)
    stream.width, stream.height = encoded_size(info)
    stream.pix_fmt = PIXEL_FORMAT
    # The input's time base: every timestamp is kept as it was (variable frame rate).
    assert source.time_base is not None
    stream.time_base = source.time_base
    stream.codec_context.time_base = source.time_base
    ctx, src = stream.codec_context, source.codec_context
    # The colour tags as they were (10-bit input is stored 8-bit with the same tags).
    ctx.colorspace, ctx.color_range = src.colorspace, src.color_range
    ctx.color_primaries, ctx.color_trc = src.color_primaries, src.color_trc
    if orientation.matrix is not None:
        stream.set_display_matrix(orientation.matrix)
    return stream


class AudioTrack:
    """One audio stream of the input in the output: packets copied when the output plays
    its codec, else decoded and re-encoded (AAC in MP4, Opus in WebM)."""

    def __init__(
        self, output: av.container.OutputContainer, source: AudioStream, info: VideoInfo
    ) -> None:
        self.source = source
        self._output = output
        codec = source.codec_context.name
        self.copied = codec in PLAYABLE_AUDIO[info.output]
        if self.copied:
            self._stream = output.add_stream_from_template(source)
        else:
            self._stream = _reencoder(output, source, info.output)
        self._stream.metadata.clear()  # language, handler name: dropped

    def feed(self, packet: Packet[Stream]) -> None:
        """Raises `BrokenVideo`: `corrupt_audio` for a packet of the input that does not
        decode, `audio_failed` for a failure to encode or mux into the result (the
        render's own errors would otherwise read as a corrupt video)."""
        if self.copied:
            if packet.size == 0:  # the demuxer's flush packet: nothing to copy
                return
            packet.stream = self._stream
            with _writing():
                self._output.mux(packet)
            return
        try:
            frames = packet.decode()
        except av.FFmpegError as exc:
            raise BrokenVideo(
                f"an audio packet of the video is corrupt: {_why(exc)}", code=CORRUPT_AUDIO
            ) from None
        for frame in frames:
            assert isinstance(frame, AudioFrame)
            with _writing():
                self._output.mux(self._stream.encode(frame))

    def flush(self) -> None:
        if not self.copied:
            with _writing():
                self._output.mux(self._stream.encode(None))


@contextmanager
def _writing() -> Iterator[None]:
    """Encoding or muxing a track's sound into the result."""
    try:
        yield
    except av.FFmpegError as exc:
        raise BrokenVideo(
            f"the sound could not be written to the result: {_why(exc)}", code=AUDIO_FAILED
        ) from None


@contextmanager
def writing(output: av.container.OutputContainer) -> Iterator[av.container.OutputContainer]:
    """`output`, closed on the way out. Its setup and its trailer (written by the close)
    are the render's own writes: a failure there is `encode_failed`. After an error the
    close is only cleanup (the partial file is thrown away): its own failure (the same
    full disk, say) must not hide the first error, a corrupt input's included."""
    try:
        with writing_video():
            yield output
    except BaseException:
        with suppress(av.FFmpegError):
            output.close()
        raise
    with writing_video():
        output.close()


@contextmanager
def writing_video() -> Iterator[None]:
    """Setting up the output, encoding and muxing the frames, writing the trailer: a
    failure there is the render's (an encoder or muxer refusing, a disk that will not
    take the bytes), never a corrupt input."""
    try:
        yield
    except av.FFmpegError as exc:
        raise BrokenVideo(
            f"the anonymized video could not be written: {_why(exc)}", code=ENCODE_FAILED
        ) from None


def _why(exc: av.FFmpegError) -> str:
    return exc.strerror or type(exc).__name__


def _reencoder(
    output: av.container.OutputContainer, source: AudioStream, container: OutputContainer
) -> AudioStream:
    ctx = source.codec_context
    codec = AUDIO_ENCODERS[container]
    if codec == "libopus":
        rate, layout = 48000, "stereo" if ctx.channels >= 2 else "mono"
    else:
        rate = ctx.sample_rate if ctx.sample_rate in AAC_RATES else 48000
        layout = ctx.layout.name if ctx.channels <= 2 else "stereo"
    stream = output.add_stream(codec, rate=rate)
    assert isinstance(stream, AudioStream)
    stream.layout = layout
    return stream


def audio_outcome(tracks: list[AudioTrack]) -> AudioOutcome:
    if not tracks:
        return "none"
    return "kept" if all(t.copied for t in tracks) else "reencoded"
