"""A minimal video pipeline for the service's tests that act while a job runs (its
progress, a DELETE): `CopyThrough` decodes every frame and encodes it again as H.264 in
MP4, hiding nothing (no detection) and carrying no sound, and holds a clip of
`HELD_FRAMES` frames until the test lets it go, so that no test races a job's end. The
other video tests run the real pipeline (`imageblur.video`). PyAV throughout: `CopyProbe`
reads the container's header; `make_clip` writes a test clip."""

from __future__ import annotations

import hashlib
import os
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from imageblur.domain import (
    AnonymizedVideo,
    ProcessingError,
    UploadOptions,
    VideoFacts,
    VideoRefused,
)
from imageblur.ports import VideoProgress
from support import wait_until

_CONTAINERS = {"mp4": "mp4", "mov": "mov", "webm": "webm", "matroska": "webm"}


class CopyProbe:
    """`VideoProbe` as plain PyAV: the container from the first bytes, the header's
    facts from the stored object; `VideoRefused` 415 for what PyAV cannot open or holds
    no video stream."""

    def extension(self, head: bytes) -> str:
        if head[4:8] == b"ftyp":
            return ".mp4"
        if head.startswith(b"\x1a\x45\xdf\xa3"):
            return ".webm"
        raise VideoRefused("not a video", http_status=415, code="unsupported_video")

    def __call__(self, source: BinaryIO) -> VideoFacts:
        brand = source.read(12)[8:12]
        source.seek(0)
        try:
            with av.open(source, "r") as container:
                return _facts(container, brand)
        except av.FFmpegError as exc:
            raise VideoRefused("not a video", http_status=415, code="unsupported_video") from exc


def _facts(container: av.container.InputContainer, brand: bytes) -> VideoFacts:
    names = container.format.name.split(",")
    kind = next((_CONTAINERS[n] for n in names if n in _CONTAINERS), None)
    if kind is None or not container.streams.video:
        raise VideoRefused("not a video", http_status=415, code="unsupported_video")
    stream = container.streams.video[0]
    fps = float(stream.average_rate or 0) or 1.0
    duration_s = float(container.duration or 0) / av.time_base
    if kind == "mov":  # the ISO family: QuickTime's own brand, else MP4
        kind = "mov" if brand == b"qt  " else "mp4"
    return VideoFacts(
        container=kind,
        video_codec=stream.codec_context.name,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        duration_s=round(duration_s, 3),
        fps=round(fps, 3),
        frames=stream.frames or round(duration_s * fps),
        audio_codec=container.streams.audio[0].codec_context.name
        if container.streams.audio
        else None,
    )


HELD_FRAMES = 30  # a clip this long is held at frame HOLD_AT until the test lets it go
HOLD_AT = 5


def gate_name(clip: bytes) -> str:
    """The file in the gate folder that lets a held clip go on."""
    return hashlib.sha256(clip).hexdigest()[:16]


class CopyThrough:
    """Decodes and re-encodes every frame (H.264, MP4), reporting each; hides nothing.
    With a `gate` folder (the launcher's VIDEO_TEST_GATE), a clip of `HELD_FRAMES` frames
    waits at frame `HOLD_AT`, reporting its progress, until the test makes its
    `gate_name` file there (or the job is cancelled): a job the tests act on while it
    runs."""

    def __init__(self, gate: Path | None = None) -> None:
        self.gate = gate

    def _hold(self, source: Path, done: int, total: int, progress: VideoProgress) -> None:
        assert self.gate is not None
        opened = self.gate / gate_name(source.read_bytes())

        def released() -> bool:
            progress(done, total)  # raises `Cancelled` once nobody wants the result
            return opened.exists()

        wait_until(released, timeout_s=120, interval_s=0.1, what="the test's go", retry_on=())

    def anonymize(
        self,
        source: Path,
        target: Path,
        progress: VideoProgress,
        *,
        options: UploadOptions | None = None,
    ) -> AnonymizedVideo:
        with source.open("rb") as file:
            facts = CopyProbe()(file)
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
                    if self.gate and facts.frames == HELD_FRAMES and frames == HOLD_AT:
                        self._hold(source, frames, facts.frames, progress)
                out.mux(encoder.encode(None))
            partial.replace(target)
        except av.FFmpegError as exc:
            raise ProcessingError(f"cannot decode the video: {exc}") from exc
        finally:
            partial.unlink(missing_ok=True)
        return AnonymizedVideo(
            frames=frames, tracks=0, audio="none", extension=".mp4", content_type="video/mp4"
        )


def make_clip(
    path: Path, *, frames: int = 20, width: int = 160, height: int = 120, seed: int = 0
) -> Path:
    """An H.264 MP4 of moving colour bars, 10 frames per second, no sound; `seed`
    shifts the colours (another clip, other bytes)."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            pixels = np.zeros((height, width, 3), np.uint8)
            pixels[:, :, 0] = (np.arange(width) * 3 + index * 10) % 256
            pixels[:, :, 1] = (128 + seed * 37) % 256
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, "rgb24")))
        out.mux(stream.encode(None))
    return path


def gate() -> Path | None:
    folder = os.environ.get("VIDEO_TEST_GATE")
    return Path(folder) if folder else None


def top_level_atoms(mp4: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of each top-level atom of an MP4."""
    atoms, offset = [], 0
    while offset < len(mp4):
        size, kind = int.from_bytes(mp4[offset : offset + 4], "big"), mp4[offset + 4 : offset + 8]
        atoms.append((kind, offset, size))
        offset += size
    return atoms


def padded_before_moov(mp4: bytes, pad_bytes: int) -> bytes:
    """The MP4 with a `free` atom of `pad_bytes` inserted before its `moov`, which must be
    its last atom (as FFmpeg writes it without faststart): still a valid MP4 (the sample
    offsets point into `mdat`, before the padding), with its header `pad_bytes` further
    from the start: a probe must seek to the end to find it."""
    kind, offset, _ = top_level_atoms(mp4)[-1]
    assert kind == b"moov", "the clip's moov is not its last atom"
    free = pad_bytes.to_bytes(4, "big") + b"free" + b"\0" * (pad_bytes - 8)
    return mp4[:offset] + free + mp4[offset:]
