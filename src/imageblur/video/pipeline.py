"""One video in, its anonymized copy out: probe, pass 1 (detect), a plan, pass 2
(render and encode), then the result moved into place.

Two passes rather than a look-ahead buffer: a plan that hides a face before its first
sighting needs the sightings after the frame being rendered, and a buffer long enough
for that holds seconds of decoded frames (at 2160p, 12 MB each); decoding twice costs
time instead and keeps memory a function of the frame size. What is kept between the
passes is the sightings: a few numbers per frame looked at.

The result is written to a temporary file beside the target and renamed over it only
when whole: a failure (a corrupt stream mid-file, say) leaves no partial output.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from imageblur.domain import Rect
from imageblur.ports import FaceDetector
from imageblur.video.detect_pass import DetectPass
from imageblur.video.encode import CONTENT_TYPES, AudioOutcome
from imageblur.video.probe import VideoInfo, VideoLimits, probe
from imageblur.video.progress import ProgressCallback, Throttled
from imageblur.video.render_pass import Look, render
from imageblur.video.second_look import SecondLookPolicy, SecondLooks
from imageblur.video.sightings import FrameSightings, MaskPlan, PerFramePlan
from imageblur.video.track_plan import TrackPlan
from imageblur.video.tracking import TrackSettings, build_plan

PlanMaker = Callable[[Sequence[FrameSightings]], MaskPlan]


@dataclass(frozen=True, slots=True)
class VideoOptions:
    """What the settings decide for a video (bootstrap builds it from them)."""

    limits: VideoLimits
    look: Look
    detect_stride: int = 1
    keep_metadata: frozenset[str] = frozenset()
    # Off: each looked-at frame hides its own detections only (the open tools' way,
    # the benchmark's baseline).
    tracking: bool = True
    # With tracking: a second, finer look at faint sightings in pass 1; a faint track
    # no look confirms is hidden at and between its sightings only (video.second_look).
    # Off by default: it hides less background but leaves a few more face-frames exposed
    # (docs/video.md, "A second look at a faint track"), and privacy comes first.
    second_look: bool = False
    # An upload's `hide` rectangles, in pixels of the upright frame: hidden whole in
    # every frame, whatever was detected.
    hide: tuple[Rect, ...] = ()


@dataclass(frozen=True, slots=True)
class VideoResult:
    """What a video's record shows of its result. `faces`: face tracks (the plan's)."""

    info: VideoInfo
    frames: int
    faces: int
    audio: AudioOutcome
    width: int
    height: int
    extension: str
    content_type: str
    # The tracks as one compact JSON object (`TrackPlan.to_json`); None: the plan has
    # no tracks to keep (tracking off).
    track_plan: str | None = None


def _plan_maker(options: VideoOptions) -> PlanMaker:
    return build_plan if options.tracking else PerFramePlan


def _second_looks(options: VideoOptions) -> SecondLooks | None:
    """The second looks of pass 1, at the thresholds the tracking plan applies."""
    if not (options.tracking and options.second_look):
        return None
    tracking = TrackSettings()
    return SecondLooks(SecondLookPolicy(below=tracking.faint_score, confirm=tracking.closer_score))


def output_extension(info: VideoInfo) -> str:
    return f".{info.output}"


def blur_video(
    source: Path,
    target: Path,
    detector: FaceDetector,
    options: VideoOptions,
    *,
    make_plan: PlanMaker | None = None,
    on_progress: ProgressCallback | None = None,
    info: VideoInfo | None = None,
) -> VideoResult:
    """Anonymize the video at `source` into `target` (its extension is the caller's:
    `output_extension` says which fits). Raises `InvalidVideo` (refused before work)
    or `BrokenVideo` (found while decoding); `target` is then untouched."""
    info = info or probe(source, options.limits)
    detecting = Throttled(on_progress, "detect", info.frames)
    detect = DetectPass(detector, stride=options.detect_stride, looks=_second_looks(options))
    seen = list(detect.run(source, info, on_frame=detecting))
    detecting.finish()
    plan = (make_plan or _plan_maker(options))(seen)
    rendering = Throttled(on_progress, "render", detecting.frames_total)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
    try:
        rendered = render(
            source,
            partial,
            info,
            plan,
            look=options.look,
            orientation=detect.orientation,
            keep_metadata=options.keep_metadata,
            hide=options.hide,
            progress=rendering,
        )
        partial.replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    rendering.finish()
    return VideoResult(
        info=info,
        frames=rendered.frames,
        faces=plan.tracks,
        audio=rendered.audio,
        width=rendered.width,
        height=rendered.height,
        extension=output_extension(info),
        content_type=CONTENT_TYPES[info.output],
        track_plan=plan.to_json() if isinstance(plan, TrackPlan) else None,
    )
