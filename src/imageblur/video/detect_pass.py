"""Pass 1: decode, turn each frame upright, flag cuts, detect faces every n-th frame
and measure the camera's motion between the frames it looks at.

Memory is a function of the frame size only: one decoded frame (and the decoder's few
reference frames) at a time; what is kept per frame is its sightings, a few numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from imageblur.domain import Face
from imageblur.ports import FaceDetector, LooksCloser, RGBImage
from imageblur.video.cuts import CutDetector
from imageblur.video.frames import frames, rgb_of
from imageblur.video.motion import MotionEstimator
from imageblur.video.orientation import Orientation
from imageblur.video.probe import VideoInfo
from imageblur.video.second_look import SecondLooks
from imageblur.video.sightings import CameraMotion, FrameSightings

FrameSeen = Callable[[int], None]  # called with the frames decoded so far


class DetectPass:
    """Looks at every `stride`-th frame, and at the first frame of each shot (a cut
    restarts the count, so a new shot's faces are seen on its first frame).
    `orientation` is the first frame's, once `run` has started: the output keeps its
    display matrix. `looks`: which faint sightings get a second look (None, or a
    detector that cannot look closer: none)."""

    def __init__(
        self, detector: FaceDetector, *, stride: int, looks: SecondLooks | None = None
    ) -> None:
        if stride < 1:
            raise ValueError(f"stride must be at least 1, not {stride}")
        self._detector = detector
        self._stride = stride
        self._looks = looks if isinstance(detector, LooksCloser) else None
        self.orientation = Orientation()

    def run(
        self, path: Path, info: VideoInfo, *, on_frame: FrameSeen | None = None
    ) -> Iterator[FrameSightings]:
        """One `FrameSightings` per frame looked at, in presentation order."""
        cuts = CutDetector()
        motion = MotionEstimator()
        since_look = 0
        for decoded in frames(path, info):
            if decoded.index == 0:
                # The stream's matrix, from its first frame: MP4 and Matroska hold one
                # per track, and pass 2 maps every frame's masks through it.
                self.orientation = Orientation.of(decoded.frame)
            image = self.orientation.upright(rgb_of(decoded.frame))
            cut = cuts.is_cut(image)
            if cut or decoded.index == 0 or since_look + 1 >= self._stride:
                since_look = 0
                if cut:
                    motion.reset()
                moved = motion.estimate(image)
                faces = tuple(self._detector.detect(image))
                closer = self._closer(image, faces, moved, cut=cut)
                yield FrameSightings(
                    decoded.index, decoded.time_s, faces, cut=cut, motion=moved, closer=closer
                )
            else:
                since_look += 1
            if on_frame is not None:
                on_frame(decoded.index + 1)

    def _closer(
        self, image: RGBImage, faces: tuple[Face, ...], moved: CameraMotion | None, *, cut: bool
    ) -> tuple[float | None, ...]:
        """The second looks at this frame's faint sightings (empty: none taken)."""
        looks, detector = self._looks, self._detector
        if looks is None or not isinstance(detector, LooksCloser):
            return ()
        if cut:
            looks.reset()
        how = looks.policy.look
        return looks.scores(faces, moved, lambda face: detector.look_closer(image, face, how))
