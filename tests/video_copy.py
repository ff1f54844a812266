"""TEMPORARY: a real, minimal video pipeline for the service's end-to-end tests, until
the real one (`imageblur.video`: probe, detect, track, render) is wired in
`bootstrap.VideoParts`. PyAV throughout: `probe` reads the container's header,
`CopyThrough` decodes every frame and encodes it again as H.264 in MP4, hiding nothing
(no detection) and carrying no sound; `make_clip` writes a test clip. Remove it, and
point tests/e2e/video_server.py at the real pipeline, once that lands."""

from __future__ import annotations

import os
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from imageblur.domain import AnonymizedVideo, ProcessingError, VideoFacts, VideoRefused
from imageblur.ports import VideoProgress

_CONTAINERS = {"mp4": "mp4", "mov": "mov", "webm": "webm", "matroska": "webm"}


def probe(source: Path) -> VideoFacts:
    """The header's facts; `VideoRefused` 415 for what PyAV cannot open or holds no
    video stream."""
    try:
        with av.open(str(source), "r") as container:
            names = container.format.name.split(",")
            kind = next((_CONTAINERS[n] for n in names if n in _CONTAINERS), None)
            if kind is None or not container.streams.video:
                raise VideoRefused("not a video", http_status=415, code="unsupported_media_type")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 0) or 1.0
            duration_s = float(container.duration or 0) / av.time_base
            frames = stream.frames or round(duration_s * fps)
            if kind == "mov":  # the ISO family: QuickTime's own brand, else MP4
                with source.open("rb") as file:
                    kind = "mov" if file.read(12)[8:12] == b"qt  " else "mp4"
            return VideoFacts(
                container=kind,
                video_codec=stream.codec_context.name,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                duration_s=round(duration_s, 3),
                fps=round(fps, 3),
                frames=frames,
                audio_codec=container.streams.audio[0].codec_context.name
                if container.streams.audio
                else None,
            )
    except av.FFmpegError as exc:
        raise VideoRefused("not a video", http_status=415, code="unsupported_media_type") from exc


class CopyThrough:
    """Decodes and re-encodes every frame (H.264, MP4), reporting each; hides nothing.
    `frame_delay_s` (the launcher's VIDEO_TEST_FRAME_DELAY_S): a slow job, for the tests
    that act while one runs."""

    def __init__(self, frame_delay_s: float = 0.0) -> None:
        self.frame_delay_s = frame_delay_s

    def anonymize(self, source: Path, target: Path, progress: VideoProgress) -> AnonymizedVideo:
        facts = probe(source)
        partial = target.with_name(f".{target.name}.part")
        frames = 0
        try:
            with av.open(str(source)) as src, av.open(str(partial), "w", format="mp4") as out:
                video = src.streams.video[0]
                encoder = out.add_stream("libx264", rate=Fraction(round(facts.fps * 1000), 1000))
                encoder.width, encoder.height = facts.width, facts.height
                encoder.pix_fmt = "yuv420p"
                for frame in src.decode(video):
                    picture = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), "rgb24")
                    out.mux(encoder.encode(picture))
                    frames += 1
                    progress(frames, max(facts.frames, frames))
                    if self.frame_delay_s:
                        time.sleep(self.frame_delay_s)  # a slow job on purpose (test-only)
                out.mux(encoder.encode(None))
            partial.replace(target)
        except av.FFmpegError as exc:
            raise ProcessingError(f"cannot decode the video: {exc}") from exc
        finally:
            partial.unlink(missing_ok=True)
        return AnonymizedVideo(
            frames=frames, tracks=0, audio="none", extension=".mp4", content_type="video/mp4"
        )


def make_clip(path: Path, *, frames: int = 20, width: int = 160, height: int = 120) -> Path:
    """An H.264 MP4 of moving colour bars, 10 frames per second, no sound."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            pixels = np.zeros((height, width, 3), np.uint8)
            pixels[:, :, 0] = (np.arange(width) * 3 + index * 10) % 256
            pixels[:, :, 1] = 128
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, "rgb24")))
        out.mux(stream.encode(None))
    return path


def frame_delay_s() -> float:
    return float(os.environ.get("VIDEO_TEST_FRAME_DELAY_S", "0"))
