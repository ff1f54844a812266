"""Short clips made with PyAV for the video tests: tiny sizes, a second or two, built
in a few milliseconds each. Every frame is generated (never a file from the web)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
TIME_BASE = Fraction(1, 90_000)


def gradient(width: int, height: int) -> Callable[[int], Image]:
    """Frames of a moving colour gradient (nothing the detector takes for a face)."""
    ys, xs = np.mgrid[0:height, 0:width]

    def frame(index: int) -> Image:
        base = (xs * 3 + ys * 2 + index * 4) % 256
        return np.stack([base, (base + 85) % 256, (255 - base)], axis=-1).astype(np.uint8)

    return frame


@dataclass
class Clip:
    """What to write: `pts` in 1/90000 s (default: constant `fps`)."""

    width: int = 64
    height: int = 48
    frames: int = 10
    fps: int = 10
    container: str = "mp4"
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    pts: Sequence[int] | None = None
    rotation: int | None = None  # counter-clockwise degrees, as VideoFrame.rotation
    audio: Sequence[str] = ()  # audio codecs, one stream each
    metadata: dict[str, str] = field(default_factory=dict)
    video_metadata: dict[str, str] = field(default_factory=dict)  # `timecode`: a tmcd track
    muxer_options: dict[str, str] = field(default_factory=dict)
    picture: Callable[[int], Image] | None = None
    cover: bool = False  # an attached picture (MP4 `covr`, Matroska attachment)

    def write(self, path: Path) -> Path:
        picture = self.picture or gradient(self.width, self.height)
        out = av.open(str(path), "w", format=self.container, options=self.muxer_options)
        out.metadata.update(self.metadata)
        video = out.add_stream(self.codec, rate=self.fps, options=_fast(self.codec))
        video.width, video.height, video.pix_fmt = self.width, self.height, self.pix_fmt
        video.codec_context.time_base = TIME_BASE
        video.metadata.update(self.video_metadata)
        if self.rotation is not None:
            video.set_display_rotation(self.rotation)
        audio = [_audio_stream(out, codec) for codec in self.audio]
        cover = _cover(out) if self.cover else None
        pts = self.pts or [round(i * 90_000 / self.fps) for i in range(self.frames)]
        for index, stamp in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(picture(index), format="rgb24")
            frame.pts, frame.time_base = stamp, TIME_BASE
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        seconds = pts[-1] / 90_000 + 1 / self.fps
        for stream in audio:
            _write_tone(out, stream, seconds)
        if cover is not None:
            cover()
        out.close()
        return path


def write_sound(path: Path, codec: str, seconds: float = 0.5) -> Path:
    """A file with one audio stream and no video."""
    with av.open(str(path), "w") as out:
        _write_tone(out, _audio_stream(out, codec), seconds)
    return path


def _fast(codec: str) -> dict[str, str]:
    if codec == "libx264":
        return {"preset": "ultrafast"}
    if codec == "libvpx-vp9":
        return {"deadline": "realtime", "cpu-used": "8"}
    return {}


def _audio_stream(out: av.container.OutputContainer, codec: str) -> av.audio.stream.AudioStream:
    stream = out.add_stream(codec, rate=48_000)
    stream.layout = "stereo"
    return stream


def _write_tone(
    out: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float
) -> None:
    samples = 1024
    fmt = stream.codec_context.format.name
    for start in range(0, int(seconds * 48_000), samples):
        t = (np.arange(start, start + samples) / 48_000).astype(np.float32)
        wave = 0.2 * np.sin(2 * np.pi * 440 * t)
        if fmt.startswith("s16"):
            data = np.repeat((wave * 32767).astype(np.int16)[None, :], 2, axis=0)
            layout = data.T.reshape(1, -1) if not fmt.endswith("p") else data
        else:
            data = np.repeat(wave[None, :], 2, axis=0)
            layout = data.T.reshape(1, -1) if not fmt.endswith("p") else data
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(layout), format=fmt, layout="stereo"
        )
        frame.sample_rate, frame.pts = 48_000, start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _cover(out: av.container.OutputContainer) -> Callable[[], None]:
    """An attached picture: a stream of one PNG in MP4, an attachment in Matroska."""
    if out.format.name == "matroska":
        png = _png(np.zeros((16, 16, 3), np.uint8))
        out.add_attachment("cover.png", "image/png", png)
        return lambda: None
    stream = out.add_stream("png")
    stream.width, stream.height, stream.pix_fmt = 16, 16, "rgb24"
    stream.disposition = av.stream.Disposition.attached_pic

    def write() -> None:
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))

    return write


def _png(image: Image) -> bytes:
    import io

    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def decoded(path: Path) -> list[av.VideoFrame]:
    """Every frame of the first video stream."""
    with av.open(str(path)) as container:
        return list(container.decode(container.streams.video[0]))
