"""Pass 2: decode again, hide each frame's boxes with the pictures' blur, encode, mux
the audio beside it.

A frame with nothing to hide goes to the encoder as decoded (no colour round trip); a
frame with boxes is converted to RGB, hidden with `blurring.hide_masks` (the masks of
`blurring.mask_outlines`, found upright and mapped to the stored frame) and converted
back with the same colour matrix and range. Memory: one frame in hand, plus the
encoder's look-ahead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import av.container
import cv2
import numpy as np
from av.audio.stream import AudioStream
from av.video.frame import PictureType, VideoFrame
from av.video.stream import VideoStream

from imageblur.blurring import Box, Mode, hide_masks, mask_outlines, masks_of, merged_masks
from imageblur.domain import MaskGeometry, Rect
from imageblur.video.encode import (
    PIXEL_FORMAT,
    AudioOutcome,
    AudioTrack,
    add_video,
    audio_outcome,
    encoded_size,
    open_output,
    writing,
    writing_video,
)
from imageblur.video.frames import (
    Decoded,
    FrameChecker,
    opened,
    rgb_of,
    translated_errors,
    video_stream,
)
from imageblur.video.orientation import Orientation
from imageblur.video.probe import VideoInfo
from imageblur.video.progress import Throttled
from imageblur.video.sightings import HiddenBox, MaskPlan


@dataclass(frozen=True, slots=True)
class Look:
    """How boxes are hidden: the pictures' settings (IMAGEBLUR_BLUR_MODE, the mask
    scale, margin and shape)."""

    mode: Mode
    geometry: MaskGeometry


@dataclass(frozen=True, slots=True)
class Rendered:
    frames: int
    audio: AudioOutcome
    width: int
    height: int


def render(
    source_path: Path,
    target_path: Path,
    info: VideoInfo,
    plan: MaskPlan,
    *,
    look: Look,
    orientation: Orientation,
    keep_metadata: frozenset[str],
    progress: Throttled,
    hide: Sequence[Rect] = (),
) -> Rendered:
    """Write the anonymized video to `target_path` (the caller removes it on error);
    `hide`: rectangles of the upright frame hidden whole in every frame."""
    with opened(source_path, info) as source:
        stream = video_stream(source, info)
        with writing(open_output(target_path, info, source, keep=keep_metadata)) as output:
            encoder = add_video(output, stream, info, orientation)
            tracks = [AudioTrack(output, s, info) for s in source.streams.audio]
            frames = _FrameRenderer(info, plan, look, orientation, encoder, output, hide)
            checker = FrameChecker(info)
            by_index = {t.source.index: t for t in tracks}
            demuxed: list[VideoStream | AudioStream] = [stream, *(t.source for t in tracks)]
            # The encoders opened and the header written here, outside the translation
            # below: a failure to set up the output is ours (`encode_failed`), not a
            # corrupt input.
            output.start_encoding()
            with translated_errors(checker):
                for packet in source.demux(*demuxed):
                    track = by_index.get(packet.stream.index)
                    if track is not None:
                        track.feed(packet)
                        continue
                    frames.expect(packet.pts, packet.duration)
                    for frame in packet.decode():
                        assert isinstance(frame, VideoFrame)
                        frames.write(checker.check(frame))
                        progress(checker.count)
                checker.finish()
                frames.flush()
                for track in tracks:
                    track.flush()
    width, height = encoded_size(info)
    return Rendered(checker.count, audio_outcome(tracks), width, height)


class _FrameRenderer:
    def __init__(
        self,
        info: VideoInfo,
        plan: MaskPlan,
        look: Look,
        orientation: Orientation,
        encoder: VideoStream,
        output: av.container.OutputContainer,
        hide: Sequence[Rect] = (),
    ) -> None:
        self._info, self._plan, self._look, self._hide = info, plan, look, hide
        self._orientation = orientation
        self._encoder, self._output = encoder, output
        self._size = encoded_size(info)
        self._last_pts: int | None = None
        self._given: dict[int, int] = {}  # pts -> duration of the packets in the decoder
        self._durations: dict[int, int] = {}  # pts -> duration of the frames in the encoder

    def write(self, decoded: Decoded) -> None:
        frame = decoded.frame
        boxes = self._plan.boxes_at(decoded.index, decoded.time_s)
        padded = self._size != (frame.width, frame.height)
        if boxes or padded or self._hide:
            out = self._hidden(frame, boxes)
        else:
            same = frame.format.name == PIXEL_FORMAT
            out = frame if same else frame.reformat(format=PIXEL_FORMAT)
            out.pict_type = PictureType.NONE  # the encoder places its own key frames
        out.pts, out.time_base = self._pts(frame, decoded.index), frame.time_base
        # The duration the container gave the frame's packet (a decoder may not carry it).
        given = self._given.pop(frame.pts, 0) if frame.pts is not None else 0
        self._durations[out.pts] = given or frame.duration or 0
        self._mux(out)

    def expect(self, pts: int | None, duration: int | None) -> None:
        """A video packet's timestamp and duration, before it is decoded."""
        if pts is not None and duration:
            self._given[pts] = duration

    def flush(self) -> None:
        self._mux(None)

    def _mux(self, frame: VideoFrame | None) -> None:
        """Encode and mux, each packet with its own frame's duration (the encoder may
        lose it; the last frame's is the result's end). Inside the input's error
        translation, so its failures are told apart there: `encode_failed`."""
        with writing_video():
            for packet in self._encoder.encode(frame):
                if packet.pts is not None and packet.pts in self._durations:
                    packet.duration = self._durations.pop(packet.pts)
                self._output.mux(packet)

    def _pts(self, frame: VideoFrame, index: int) -> int:
        """The frame's own timestamp; one tick after the last if it has none or repeats
        it (an encoder refuses both)."""
        pts = frame.pts
        if pts is None:
            base = frame.time_base or self._encoder.time_base
            assert base is not None
            pts = round(index / self._info.fps / base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return int(pts)

    def _hidden(self, frame: VideoFrame, boxes: Sequence[HiddenBox]) -> VideoFrame:
        rgb = rgb_of(frame)
        height, width = rgb.shape[:2]
        up_w, up_h = self._orientation.upright_size(width, height)
        outlines = mask_outlines([b.face for b in boxes], up_w, up_h, self._look.geometry)
        turn = self._orientation.to_stored
        stored = [(turn(box, width, height), shape) for box, shape in outlines]
        masks = masks_of(stored)
        if self._hide:  # the upload's rectangles, whole (merged: each pixel hidden once)
            asked = [_clipped(r, up_w, up_h) for r in self._hide]
            turned = [turn(b, width, height) for b in asked if b is not None]
            masks += merged_masks([(b, "box") for b in turned])
        hide_masks(rgb, masks, mode=self._look.mode, in_place=True)
        pad_w, pad_h = self._size[0] - width, self._size[1] - height
        if pad_w or pad_h:
            rgb = np.asarray(cv2.copyMakeBorder(rgb, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE))
        out = VideoFrame.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8), format="rgb24")
        return out.reformat(
            format=PIXEL_FORMAT,
            dst_colorspace=frame.colorspace,
            dst_color_range=frame.color_range,
        )


def _clipped(rect: Rect, width: int, height: int) -> Box | None:
    """A rectangle clipped to the upright frame; None when none of it is inside."""
    x0, y0 = max(rect.x, 0), max(rect.y, 0)
    x1, y1 = min(rect.x + rect.width, width), min(rect.y + rect.height, height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
