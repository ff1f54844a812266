"""The video pipeline behind the service's two ports: `VideoProbe` (the API's check of
an upload before anything is stored) and `VideoAnonymizer` (the worker's job). They
translate: the probe's `VideoInfo` into the record's `VideoFacts`, a refusal
(`InvalidVideo`) into `VideoRefused` with its status and code, the pipeline's progress
(two passes, each over every frame) into frames done of frames in all, and its result
into `AnonymizedVideo`. `BrokenVideo`, a `ProcessingError`, fails the job as it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from imageblur.blurring import spared
from imageblur.domain import (
    AnonymizedVideo,
    CloserLook,
    DetectionThresholds,
    Face,
    PresetChoice,
    Rect,
    UploadOptions,
    VideoFacts,
    VideoRefused,
)
from imageblur.ports import FaceDetector, LooksCloser, RGBImage, TunableDetector, VideoProgress
from imageblur.video.errors import InvalidVideo
from imageblur.video.pipeline import PlanMaker, VideoOptions, blur_video
from imageblur.video.probe import VideoInfo, probe, sniff_container
from imageblur.video.progress import Progress

# The record's container, by the probe's family (MP4 and MOV are one family).
_CONTAINERS = {"mp4": "mp4", "matroska": "webm"}


def facts_of(info: VideoInfo) -> VideoFacts:
    return VideoFacts(
        container=_CONTAINERS[info.family],
        video_codec=info.video_codec,
        width=info.width,
        height=info.height,
        duration_s=round(info.duration_s or info.frames / info.fps, 3),
        fps=round(info.fps, 3),
        frames=info.frames,
        audio_codec=info.audio[0].codec if info.audio else None,
    )


def _refused(exc: InvalidVideo) -> VideoRefused:
    return VideoRefused(exc.message, http_status=exc.http_status, code=exc.code)


class PipelineProbe:
    """`VideoProbe`: the pipeline's header check, under its limits and time limit."""

    def __init__(self, options: VideoOptions) -> None:
        self._options = options

    def extension(self, head: bytes) -> str:
        try:
            return f".{_CONTAINERS[sniff_container(head)]}"
        except InvalidVideo as exc:
            raise _refused(exc) from exc

    def __call__(self, source: BinaryIO) -> VideoFacts:
        try:
            return facts_of(probe(source, self._options.limits))
        except InvalidVideo as exc:
            raise _refused(exc) from exc


class ChosenDetector:
    """`FaceDetector` as an upload's options change it: its preset's thresholds (for a
    detector that takes them per call), and its `ignore` rectangles, which spare a
    detection lying at least half inside one (`blurring.spared`; `hide` wins)."""

    def __init__(
        self,
        detector: FaceDetector,
        *,
        thresholds: DetectionThresholds | None,
        ignore: tuple[Rect, ...],
        hide: tuple[Rect, ...],
    ) -> None:
        self._detector, self._thresholds = detector, thresholds
        self._ignore, self._hide = ignore, hide

    def detect(self, image: RGBImage) -> list[Face]:
        if self._thresholds is not None and isinstance(self._detector, TunableDetector):
            faces = self._detector.detect_regions(image, self._thresholds)[0]
        else:
            faces = self._detector.detect(image)
        if not self._ignore:
            return faces
        return spared(faces, ignore=self._ignore, hide=self._hide)[0]

    def look_closer(self, image: RGBImage, face: Face, look: CloserLook) -> float:
        """The wrapped detector's second look; one that cannot look closer confirms
        every box (1.0): its faint tracks are hidden as any other."""
        if isinstance(self._detector, LooksCloser):
            return self._detector.look_closer(image, face, look)
        return 1.0


def chosen(
    detector: FaceDetector,
    options: VideoOptions,
    choices: UploadOptions | None,
    presets: Callable[[str], PresetChoice] | None = None,
    detectors: Callable[[str], FaceDetector] | None = None,
) -> tuple[FaceDetector, VideoOptions]:
    """The detector and options of one video, as its upload's `choices` change the
    server's: the mode, the metadata kept, the preset (its detector from `detectors`,
    thresholds and mask growth), `hide` (every frame) and `ignore`."""
    if choices is None:
        return detector, options
    look, thresholds = options.look, None
    if choices.preset is not None and presets is not None:
        if detectors is not None:
            detector = detectors(choices.preset)
        preset = presets(choices.preset)
        geometry = replace(look.geometry, scale=preset.mask_scale, margin_px=preset.mask_margin_px)
        look, thresholds = replace(look, geometry=geometry), preset.thresholds
    if choices.mode is not None:
        look = replace(look, mode=choices.mode)
    keep = options.keep_metadata if choices.keep_metadata is None else choices.keep_metadata
    options = replace(options, look=look, keep_metadata=keep, hide=choices.hide)
    if thresholds is not None or choices.ignore:
        detector = ChosenDetector(
            detector, thresholds=thresholds, ignore=choices.ignore, hide=choices.hide
        )
    return detector, options


class PipelineAnonymizer:
    """`VideoAnonymizer`: probe again (the worker trusts no record), detect, plan and
    render. Progress counts both passes: `frames_total` is twice the frames. `presets`:
    what an upload's `preset` makes of the settings (None: presets are not applied), and
    `detectors` the detector it looks with (None: `detector`, whatever the preset)."""

    def __init__(
        self,
        detector: FaceDetector,
        options: VideoOptions,
        make_plan: PlanMaker | None = None,
        presets: Callable[[str], PresetChoice] | None = None,
        detectors: Callable[[str], FaceDetector] | None = None,
    ) -> None:
        # None: the options' plan (tracking, or per frame: IMAGEBLUR_VIDEO_TRACKING).
        self._detector, self._options, self._make_plan = detector, options, make_plan
        self._presets, self._detectors = presets, detectors

    def anonymize(
        self,
        source: Path,
        target: Path,
        progress: VideoProgress,
        *,
        options: UploadOptions | None = None,
    ) -> AnonymizedVideo:
        detector, video_options = chosen(
            self._detector, self._options, options, self._presets, self._detectors
        )

        def report(step: Progress) -> None:
            done = step.frames_done + (step.frames_total if step.stage == "render" else 0)
            progress(done, 2 * step.frames_total)

        try:
            result = blur_video(
                source,
                target,
                detector,
                video_options,
                make_plan=self._make_plan,
                on_progress=report,
            )
        except InvalidVideo as exc:
            raise _refused(exc) from exc
        return AnonymizedVideo(
            frames=result.frames,
            tracks=result.faces,
            audio=result.audio,
            extension=result.extension,
            content_type=result.content_type,
            track_plan=None if result.track_plan is None else result.track_plan.encode(),
        )
