"""Pass 1: decode, turn each frame upright, flag cuts, detect faces every n-th frame.

Memory is a function of the frame size only: one decoded frame (and the decoder's few
reference frames) at a time; what is kept per frame is its sightings, a few numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from imageblur.detection.factory import detect_in_view
from imageblur.detection.pyramid import PLAIN, View
from imageblur.ports import FaceDetector
from imageblur.video.cuts import CutDetector
from imageblur.video.frames import frames, rgb_of
from imageblur.video.orientation import Orientation
from imageblur.video.probe import VideoInfo
from imageblur.video.sightings import FrameSightings

FrameSeen = Callable[[int], None]  # called with the frames decoded so far

# The views `IMAGEBLUR_VIDEO_VARIED_VIEWS` takes in turn, one per detected frame: a face
# the plain pyramid misses is often found mirrored or at the shifted scales in a nearby
# frame, and tracking carries it across the frames between (docs/video.md, "Varied
# views"). Each costs about one plain pyramid, so detection costs what it did.
VARIED_VIEWS: tuple[View, ...] = (PLAIN, View(mirrored=True), View(scale_offset=2**0.5))


class DetectPass:
    """Looks at every `stride`-th frame, and at the first frame of each shot (a cut
    restarts the count, so a new shot's faces are seen on its first frame).
    The k-th frame looked at is scanned in `views[k % len(views)]`.
    `orientation` is the first frame's, once `run` has started: the output keeps its
    display matrix."""

    def __init__(
        self, detector: FaceDetector, *, stride: int, views: Sequence[View] = (PLAIN,)
    ) -> None:
        if stride < 1:
            raise ValueError(f"stride must be at least 1, not {stride}")
        if not views:
            raise ValueError("at least one view")
        self._detector = detector
        self._stride = stride
        self._views = tuple(views)
        self.orientation = Orientation()

    def run(
        self, path: Path, info: VideoInfo, *, on_frame: FrameSeen | None = None
    ) -> Iterator[FrameSightings]:
        """One `FrameSightings` per frame looked at, in presentation order."""
        cuts = CutDetector()
        since_look, looked = 0, 0
        for decoded in frames(path, info):
            if decoded.index == 0:
                # The stream's matrix, from its first frame: MP4 and Matroska hold one
                # per track, and pass 2 maps every frame's masks through it.
                self.orientation = Orientation.of(decoded.frame)
            image = self.orientation.upright(rgb_of(decoded.frame))
            cut = cuts.is_cut(image)
            if cut or decoded.index == 0 or since_look + 1 >= self._stride:
                since_look = 0
                view = self._views[looked % len(self._views)]
                looked += 1
                faces = tuple(detect_in_view(self._detector, image, view))
                yield FrameSightings(decoded.index, decoded.time_s, faces, cut=cut)
            else:
                since_look += 1
            if on_frame is not None:
                on_frame(decoded.index + 1)
