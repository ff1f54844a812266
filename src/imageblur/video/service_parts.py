"""The video pipeline behind the service's two ports: `VideoProbe` (the API's check of
an upload before anything is stored) and `VideoAnonymizer` (the worker's job). They
translate: the probe's `VideoInfo` into the record's `VideoFacts`, a refusal
(`InvalidVideo`) into `VideoRefused` with its status and code, the pipeline's progress
(two passes, each over every frame) into frames done of frames in all, and its result
into `AnonymizedVideo`. `BrokenVideo`, a `ProcessingError`, fails the job as it is."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from imageblur.domain import AnonymizedVideo, VideoFacts, VideoRefused
from imageblur.ports import FaceDetector, VideoProgress
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


class PipelineAnonymizer:
    """`VideoAnonymizer`: probe again (the worker trusts no record), detect, plan and
    render. Progress counts both passes: `frames_total` is twice the frames."""

    def __init__(
        self, detector: FaceDetector, options: VideoOptions, make_plan: PlanMaker | None = None
    ) -> None:
        # None: the options' plan (tracking, or per frame: IMAGEBLUR_VIDEO_TRACKING).
        self._detector, self._options, self._make_plan = detector, options, make_plan

    def anonymize(self, source: Path, target: Path, progress: VideoProgress) -> AnonymizedVideo:
        def report(step: Progress) -> None:
            done = step.frames_done + (step.frames_total if step.stage == "render" else 0)
            progress(done, 2 * step.frames_total)

        try:
            result = blur_video(
                source,
                target,
                self._detector,
                self._options,
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
