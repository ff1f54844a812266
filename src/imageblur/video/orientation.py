"""The display matrix (rotation) of a video: frames are detected upright and stored as
they came, the matrix copied to the output, and the masks mapped from upright to stored
pixels.

Phones store a portrait clip as landscape frames with a matrix saying "turn 90 degrees".
Detection runs on the frame turned upright (`upright`), by the matrix's angle rounded to
a quarter turn (a mirror in the matrix is ignored: a mirrored face is still a face); the
result keeps the stored frames and the very same matrix (`matrix`), so a player shows it
as it showed the input. A mask found upright is mapped back to stored pixels with the
same quarter turn (`to_stored`): exactly, since the masks are symmetric rectangles and
ellipses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from av.video.frame import VideoFrame

from imageblur.blurring import Box
from imageblur.ports import RGBImage


@dataclass(frozen=True, slots=True)
class Orientation:
    """`matrix`: the 9 integers of FFmpeg's display matrix, or None (upright as stored).
    `turns`: counter-clockwise quarter turns from stored to upright (0-3)."""

    matrix: tuple[int, ...] | None = None
    turns: int = 0

    @classmethod
    def of(cls, frame: VideoFrame) -> Orientation:
        """The frame's matrix. Read once per video: with PyAV 18, looking at a frame's
        `side_data` keeps the whole frame alive (measured: about 10 MB more per 2160p
        frame read, never given back), so it must not be done per frame."""
        side_data: Any = frame.side_data  # PyAV's stub types it as a TypedDict
        if SideDataType.DISPLAYMATRIX in side_data:
            raw = bytes(memoryview(side_data[SideDataType.DISPLAYMATRIX]))
            if len(raw) == 36:
                matrix = struct.unpack("<9i", raw)
                return cls(matrix, round(frame.rotation / 90) % 4)
        return cls()

    def upright(self, image: RGBImage) -> RGBImage:
        """The stored frame turned upright (a copy when turned; the frame itself when not)."""
        return np.ascontiguousarray(np.rot90(image, self.turns)) if self.turns else image

    def upright_size(self, width: int, height: int) -> tuple[int, int]:
        return (height, width) if self.turns % 2 else (width, height)

    def to_stored(self, box: Box, width: int, height: int) -> Box:
        """A box in upright pixels as the box of the same pixels in the stored frame of
        `width` x `height` (stored size): the inverse of `np.rot90(stored, turns)`."""
        x0, y0, x1, y1 = box
        if self.turns == 1:
            return width - y1, x0, width - y0, x1
        if self.turns == 2:
            return width - x1, height - y1, width - x0, height - y0
        if self.turns == 3:
            return y0, height - x1, y1, height - x0
        return box
