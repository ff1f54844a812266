"""Untrusted bytes -> a checked description of a video, from its container header only.

Checks run cheapest first: the container from the magic bytes (never the name, and
FFmpeg is then told which demuxer to use, so it never guesses one of the formats that
reference other files or URLs: HLS, concat, image sequences), then the header under a
time limit (the streams, sizes, codecs and duration), then the limits. Nothing is
decoded here; `frames` enforces the frame count and duration again while decoding,
whatever the header said.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Literal

import av
import av.container
import av.stream
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from imageblur.video.errors import InvalidVideo

Family = Literal["mp4", "matroska"]
OutputContainer = Literal["mp4", "webm"]

# FFmpeg's demuxer for each family: named, never probed.
DEMUXERS: dict[Family, str] = {"mp4": "mov", "matroska": "matroska"}
# Video codecs we decode, by container family (FFmpeg's decoder names). Others are
# refused by name: fewer decoders exposed to hostile bytes.
VIDEO_CODECS: dict[Family, frozenset[str]] = {
    "mp4": frozenset({"h264", "hevc", "av1", "vp9"}),
    "matroska": frozenset({"vp8", "vp9", "av1", "h264", "hevc"}),
}
# Slow-motion phones record 240 frames/s; a header announcing more than this is not a
# camera's (a frame-count bomb packs many tiny frames into a short duration).
MAX_FPS = 480.0
# Room for rounding in the durations and counts headers give: a stream may hold this
# share more frames than duration x frame rate, plus a few.
FRAME_SLACK = 1.1
FRAME_SLACK_COUNT = 16
PROBE_TIMEOUT_S = 10.0
# What FFmpeg may read to find the streams (bytes, and microseconds of media).
PROBE_BYTES = 5_000_000
PROBE_DURATION_US = 5_000_000
_QUICKTIME_ATOMS = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"


@dataclass(frozen=True, slots=True)
class VideoLimits:
    """What a video may be (IMAGEBLUR_MAX_VIDEO_SECONDS, IMAGEBLUR_MAX_VIDEO_PIXELS)."""

    max_seconds: float
    max_pixels: int


@dataclass(frozen=True, slots=True)
class AudioInfo:
    index: int
    codec: str
    channels: int
    sample_rate: int


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """A video that passed the checks. `width` and `height` are as stored (before the
    display matrix); `frames` is the header's count or duration x fps, an estimate;
    `frames_allowed` the most that decoding accepts."""

    family: Family
    output: OutputContainer
    video_index: int
    video_codec: str
    width: int
    height: int
    fps: float
    duration_s: float | None
    frames: int
    frames_announced: int  # the header's count; 0 when it gives none (WebM)
    frames_allowed: int
    max_seconds: float
    pixel_format: str
    audio: tuple[AudioInfo, ...]

    @property
    def demuxer(self) -> str:
        return DEMUXERS[self.family]


# HEIF and AVIF pictures are ISO-BMFF files too (`ftyp` first): their major brand says
# they are pictures, and they go the pictures' way.
_IMAGE_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
)


def sniff_container(head: bytes) -> Family:
    """The container family from the first bytes (`InvalidVideo` 415 if neither)."""
    picture = head[4:8] == b"ftyp" and head[8:12] in _IMAGE_BRANDS
    if len(head) >= 8 and head[4:8] in _QUICKTIME_ATOMS and not picture:
        return "mp4"
    if head.startswith(_EBML_MAGIC):
        return "matroska"
    raise InvalidVideo(
        "not a video we accept: MP4/MOV or WebM", http_status=415, code="unsupported_video"
    )


def open_input(
    source: Path | BinaryIO,
    family: Family,
    *,
    timeout_s: float,
    read_timeout_s: float | None = None,
) -> av.container.InputContainer:
    """The file (a path, or a seekable binary file such as ranged reads of a stored
    object) opened with the family's demuxer: opening bounded by `timeout_s`, each later
    read by `read_timeout_s` (default the same)."""
    return av.open(
        str(source) if isinstance(source, Path) else source,
        "r",
        format=DEMUXERS[family],
        timeout=(timeout_s, read_timeout_s or timeout_s),
        options={"probesize": str(PROBE_BYTES), "analyzeduration": str(PROBE_DURATION_US)},
    )


def probe(
    source: Path | BinaryIO, limits: VideoLimits, *, timeout_s: float = PROBE_TIMEOUT_S
) -> VideoInfo:
    """Check the video at `source` (a path, or a seekable binary file: the header may be
    at the end) from its header; `InvalidVideo` says why it is refused."""
    if isinstance(source, Path):
        with source.open("rb") as file:
            family = sniff_container(file.read(64))
    else:
        family = sniff_container(source.read(64))
        source.seek(0)
    try:
        container = open_input(source, family, timeout_s=timeout_s)
    except av.FFmpegError as exc:
        raise InvalidVideo(
            f"the video could not be read (truncated or damaged): {_reason(exc)}"
        ) from None
    with container:
        return _check(container, family, limits)


def _check(
    container: av.container.InputContainer, family: Family, limits: VideoLimits
) -> VideoInfo:
    stream = main_video_stream(container)
    if stream is None:
        raise InvalidVideo("the file has no video stream", http_status=415, code="no_video")
    codec = stream.codec_context.name if stream.codec_context is not None else "unknown"
    if codec not in VIDEO_CODECS[family] or not _decodable(codec):
        kind = "MP4/MOV" if family == "mp4" else "WebM/Matroska"
        known = ", ".join(sorted(VIDEO_CODECS[family]))
        raise InvalidVideo(
            f"the video codec {codec} cannot be decoded here ({kind} takes {known})",
            http_status=415,
            code="unsupported_codec",
        )
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise InvalidVideo("the video stream has no frame size")
    if width * height > limits.max_pixels:
        raise InvalidVideo(
            f"frames of {width}x{height} are larger than the {limits.max_pixels} pixels allowed",
            http_status=413,
            code="too_many_pixels",
        )
    duration_s = _duration_s(container, stream)
    if duration_s is not None and duration_s > limits.max_seconds:
        raise InvalidVideo(
            f"the video lasts {duration_s:.0f} s, longer than the {limits.max_seconds:g} s allowed",
            http_status=413,
            code="too_long",
        )
    fps = _frame_rate(stream)
    frames, allowed = _frame_counts(stream, fps, duration_s, limits.max_seconds)
    return VideoInfo(
        family=family,
        output="mp4" if family == "mp4" else "webm",
        video_index=stream.index,
        video_codec=codec,
        width=width,
        height=height,
        fps=fps,
        duration_s=duration_s,
        frames=frames,
        frames_announced=max(0, stream.frames),
        frames_allowed=allowed,
        max_seconds=limits.max_seconds,
        pixel_format=stream.codec_context.format.name if stream.codec_context.format else "",
        audio=_audio_streams(container),
    )


def main_video_stream(container: av.container.InputContainer) -> VideoStream | None:
    """The first video stream that is not a cover picture."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _decodable(codec: str) -> bool:
    try:
        av.Codec(codec, "r")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


def _duration_s(container: av.container.InputContainer, stream: VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None  # a live-recorded WebM: decoding enforces the limit


def _frame_rate(stream: VideoStream) -> float:
    rate: Fraction | None = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if not math.isfinite(fps) or fps <= 0 or fps > MAX_FPS:
        raise InvalidVideo(
            f"the frame rate {fps:g} frames/s is not a camera's (at most {MAX_FPS:g})",
            code="bad_frame_rate",
        )
    return fps


def _frame_counts(
    stream: VideoStream, fps: float, duration_s: float | None, max_seconds: float
) -> tuple[int, int]:
    """(frames expected, frames allowed while decoding); 400 if the header announces
    more frames than its duration and frame rate allow."""
    seconds = duration_s if duration_s is not None else max_seconds
    allowed = math.ceil(seconds * fps * FRAME_SLACK) + FRAME_SLACK_COUNT
    if stream.frames > allowed:
        raise InvalidVideo(
            f"the header announces {stream.frames} frames, more than {seconds:.1f} s at "
            f"{fps:g} frames/s allows",
            code="too_many_frames",
        )
    expected = stream.frames or max(1, round(seconds * fps))
    return expected, allowed


def _audio_streams(container: av.container.InputContainer) -> tuple[AudioInfo, ...]:
    """The audio streams; one we could neither copy nor decode is refused rather than
    dropped in silence (every codec an output copies has a decoder)."""
    streams = tuple(_audio_info(s) for s in container.streams.audio)
    for audio in streams:
        if not _decodable(audio.codec):
            raise InvalidVideo(
                f"the audio codec {audio.codec} cannot be decoded here",
                http_status=415,
                code="unsupported_codec",
            )
    return streams


def _audio_info(stream: AudioStream) -> AudioInfo:
    ctx = stream.codec_context
    return AudioInfo(
        index=stream.index,
        codec=ctx.name if ctx is not None else "unknown",
        channels=ctx.channels if ctx is not None else 0,
        sample_rate=ctx.sample_rate if ctx is not None else 0,
    )


def _reason(exc: av.FFmpegError) -> str:
    return exc.strerror or type(exc).__name__
