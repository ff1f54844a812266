"""Decoding with the header's promises enforced: the frame count, the duration and the
frame size are checked on every decoded frame, whatever the header said, and FFmpeg's
errors (corrupt or truncated data) become `BrokenVideo`.

Decoders are asked to report damage rather than hide it (`err_detect`): a damaged frame
of a clip being anonymized would otherwise be concealed with guessed pixels, and its
face detected on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import av
import av.container
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from imageblur.ports import RGBImage
from imageblur.video.errors import BrokenVideo
from imageblur.video.probe import PROBE_TIMEOUT_S, VideoInfo, open_input

DECODER_OPTIONS = {"err_detect": "crccheck+bitstream+buffer+explode"}
# Decoding may outlast the probe: a slow read of one packet is what this bounds.
READ_TIMEOUT_S = 60.0
# A stream ending before this share of its header's frame count (less a few an edit
# list may trim) is truncated.
TRUNCATED_SHARE = 0.98
TRUNCATED_SLACK = 2


def rgb_of(frame: VideoFrame) -> RGBImage:
    """The frame as 8-bit RGB, with its own colour matrix and range."""
    rgb = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range)
    return cast(RGBImage, rgb)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded frame: `index` counts frames from 0 in presentation order."""

    index: int
    frame: VideoFrame
    time_s: float


@contextmanager
def opened(path: Path, info: VideoInfo) -> Iterator[av.container.InputContainer]:
    """The video opened with the demuxer its probe found; errors as `BrokenVideo`."""
    try:
        container = open_input(
            path, info.family, timeout_s=PROBE_TIMEOUT_S, read_timeout_s=READ_TIMEOUT_S
        )
    except av.FFmpegError as exc:
        raise BrokenVideo(f"the video could not be opened again: {exc}") from None
    with container:
        yield container


def video_stream(container: av.container.InputContainer, info: VideoInfo) -> VideoStream:
    stream = container.streams[info.video_index]
    if not isinstance(stream, VideoStream):
        raise BrokenVideo("the video stream changed between passes")
    stream.codec_context.options = dict(DECODER_OPTIONS)
    stream.thread_type = "AUTO"  # frame threads: both cores decode
    return stream


def frames(path: Path, info: VideoInfo) -> Iterator[Decoded]:
    """Every frame of the video stream, checked (pass 1)."""
    with opened(path, info) as container:
        stream = video_stream(container, info)
        checker = FrameChecker(info)
        with translated_errors(checker):
            for packet in container.demux(stream):
                for frame in packet.decode():
                    yield checker.check(frame)
        checker.finish()


class FrameChecker:
    """Counts frames and checks each against the header's promises and the limits."""

    def __init__(self, info: VideoInfo) -> None:
        self._info = info
        self.count = 0

    def check(self, frame: VideoFrame) -> Decoded:
        info = self._info
        if frame.is_corrupt:
            raise BrokenVideo(f"frame {self.count} is corrupt")
        if (frame.width, frame.height) != (info.width, info.height):
            raise BrokenVideo(
                f"the frame size changes mid-stream ({info.width}x{info.height} to "
                f"{frame.width}x{frame.height})",
                code="size_changed",
            )
        if self.count >= info.frames_allowed:
            raise BrokenVideo(
                f"the stream holds more frames than its header allows ({info.frames_allowed})",
                code="too_many_frames",
            )
        time_s = float(frame.time) if frame.time is not None else self.count / info.fps
        if time_s > info.max_seconds:
            raise BrokenVideo(
                f"the stream runs past the {info.max_seconds:g} s allowed", code="too_long"
            )
        decoded = Decoded(self.count, frame, time_s)
        self.count += 1
        return decoded

    def finish(self) -> None:
        """After the last frame: a stream that ends well short of the frames its header
        counts is truncated (an edit list may trim a few)."""
        if self.count == 0:
            raise BrokenVideo("the video stream holds no decodable frame")
        announced = self._info.frames_announced
        if announced and self.count < announced * TRUNCATED_SHARE - TRUNCATED_SLACK:
            raise BrokenVideo(
                f"the video is truncated: {self.count} of the {announced} frames its header "
                "announces",
                code="truncated_video",
            )


@contextmanager
def translated_errors(checker: FrameChecker) -> Iterator[None]:
    try:
        yield
    except av.FFmpegError as exc:
        raise BrokenVideo(
            f"the video is corrupt or truncated after {checker.count} frames: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
