"""Bytes in, anonymized bytes out: decode, detect, blur, re-encode.

Shared by the worker and the `blur` command so that both apply exactly the same
detector, mask and encoder settings. A JPEG keeps its original blocks outside the masks
(`jpeg_patch`); when it cannot, it is re-encoded whole and the result says why.
`render` draws a picture again from its recorded regions (a reviewer's corrections),
with no detection.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Literal

from imageblur import imaging, jpeg_patch, jpeg_scans
from imageblur.blurring import (
    Box,
    Mask,
    Outline,
    hide_masks,
    mask_outlines,
    masks_of,
    merged_masks,
    opaque_masks,
    spared,
)
from imageblur.cancel import checkpoint, expect
from imageblur.domain import (
    MAX_REGIONS,
    DetectionThresholds,
    Face,
    MaskGeometry,
    PresetChoice,
    Rect,
    Region,
    RegionKind,
    UploadOptions,
    drawn_region,
)
from imageblur.jpeg_coefficients import TurboJPEGError
from imageblur.pixel_budget import PixelBudget
from imageblur.ports import FaceDetector, RegionDetector, RGBImage, TunableDetector


@dataclass(frozen=True, slots=True)
class AnonymizeOptions:
    mode: Literal["blur", "pixelate", "solid"]
    shape: Literal["ellipse", "box"]
    mask_scale: float
    margin_px: float
    jpeg_quality: int
    max_pixels: int
    keep_metadata: frozenset[str]  # groups of imageblur.metadata.KEEP_GROUPS
    output_format: imaging.OutputFormat  # for HEIC and AVIF uploads
    max_jpeg_scans: int = jpeg_scans.MAX_SCANS  # decoding and the lossless patch alike

    @property
    def geometry(self) -> MaskGeometry:
        """The masks these options draw, as recorded with each detector region."""
        return MaskGeometry(scale=self.mask_scale, margin_px=self.margin_px, shape=self.shape)


@dataclass(frozen=True, slots=True)
class AnonymizedImage:
    data: bytes
    content_type: str
    extension: str
    faces: int
    plates: int
    width: int
    height: int
    # Seconds per stage (decode, detect, blur, encode), for the worker's metrics;
    # "encode" is the JPEG patch, or the whole re-encode when there is none.
    timings: dict[str, float] = field(default_factory=dict)
    # Why a JPEG was re-encoded whole instead of patched (None: patched, or not a JPEG).
    jpeg_fallback: str | None = None
    # The hidden detector regions and the uncertain candidates (`regions_of`); for a
    # render, the regions it was given.
    regions: list[Region] = field(default_factory=list)


class Anonymizer:
    def __init__(
        self,
        detector: FaceDetector,
        options: AnonymizeOptions,
        *,
        budget: PixelBudget | None = None,
        presets: Callable[[str], PresetChoice] | None = None,
        detectors: Callable[[str], FaceDetector] | None = None,
        choices: UploadOptions | None = None,
        thresholds: DetectionThresholds | None = None,
    ) -> None:
        """`budget`: the pixels that calls in flight at once may hold (None: no limit);
        shared by the worker's job threads. `presets`: what an upload's `preset` makes
        of the settings, and `detectors` the detector it looks with (None: presets are
        not applied; `detector` for every preset). `choices` and `thresholds`: an
        upload's options, and its preset's detection thresholds (`choosing`)."""
        self._detector = detector
        self._options = options
        self._budget = budget
        self._presets = presets
        self._detectors = detectors
        self._choices = choices
        self._thresholds = thresholds

    def choosing(self, choices: UploadOptions | None) -> Anonymizer:
        """This anonymizer as an upload's options change it (None: as it is): its mode,
        the metadata kept, the preset's thresholds and mask growth; the detector and the
        pixel budget are shared."""
        if choices is None:
            return self
        changes: dict[str, object] = {}
        thresholds = None
        if choices.preset is not None and self._presets is not None:
            preset = self._presets(choices.preset)
            changes |= {"mask_scale": preset.mask_scale, "margin_px": preset.mask_margin_px}
            thresholds = preset.thresholds
        if choices.mode is not None:
            changes["mode"] = choices.mode
        if choices.keep_metadata is not None:
            changes["keep_metadata"] = choices.keep_metadata
        options = replace(self._options, **changes)  # type: ignore[arg-type]
        return Anonymizer(
            self._detector,
            options,
            budget=self._budget,
            presets=self._presets,
            detectors=self._detectors,
            choices=choices,
            thresholds=thresholds,
        )

    @property
    def detector(self) -> FaceDetector:
        """The detector of the server's preset (an upload's may look with another)."""
        return self._detector

    def _looking(self) -> FaceDetector:
        """The detector this upload's preset looks with; taken only when detecting, so
        that a render (no detection) never loads one."""
        preset = self._choices.preset if self._choices is not None else None
        if preset is None or self._detectors is None:
            return self._detector
        return self._detectors(preset)

    @property
    def options(self) -> AnonymizeOptions:
        return self._options

    def __call__(self, data: bytes, *, content_type: str | None = None) -> AnonymizedImage:
        """Raises `InvalidImage` for data that cannot be decoded (a permanent failure).

        `content_type` is the result's format when the caller has decided it already (the
        record's, set at upload); otherwise it follows `options.output_format`.
        """
        detector = self._looking()  # loaded (the first time) before pixels are held
        with self._hold(data):
            return self._anonymize(detector, data, content_type)

    def _anonymize(
        self, detector: FaceDetector, data: bytes, content_type: str | None
    ) -> AnonymizedImage:
        clock = _Stopwatch(("decode", "detect", "blur", "encode"))
        decoded = self._decode(data)
        clock.lap("decode")
        hidden, uncertain = _detect(detector, decoded.rgb, self._thresholds)
        clock.lap("detect")
        height, width = decoded.rgb.shape[:2]
        geometry = self._options.geometry
        hidden, spared = self._spared(hidden)
        masks = masks_of(mask_outlines(hidden, width, height, geometry))
        regions = regions_of(hidden, uncertain, width, height, mask=geometry, ignored=spared)
        kinds = [face.kind for face in hidden]
        if self._choices is not None and self._choices.hide:
            # The upload's `hide` rectangles: hidden whole, whatever was detected.
            asked = requested_regions(self._choices.hide, width, height)
            masks += merged_masks(
                [(box, "box") for r in asked if (box := _clipped(r, width, height))]
            )
            regions += asked
        return self._finish(data, decoded, masks, kinds, regions, clock, content_type)

    def _spared(self, hidden: list[Face]) -> tuple[list[Face], list[Face]]:
        """(hidden, ignored): the upload's `ignore` option spares a detection whose box
        lies at least half inside one of its rectangles, unless it touches a `hide`
        rectangle (`hide` wins)."""
        if self._choices is None or not self._choices.ignore:
            return hidden, []
        return spared(hidden, ignore=self._choices.ignore, hide=self._choices.hide)

    def render(
        self, data: bytes, regions: Sequence[Region], *, content_type: str | None = None
    ) -> AnonymizedImage:
        """The picture with exactly the regions marked `hidden` hidden, no detection: a
        detector region under the mask the first render gave it, a manual one as a
        rectangle over its whole box (clipped to the image). Raises as `__call__`."""
        with self._hold(data):
            return self._render(data, regions, content_type)

    def _render(
        self, data: bytes, regions: Sequence[Region], content_type: str | None
    ) -> AnonymizedImage:
        clock = _Stopwatch(("decode", "blur", "encode"))
        decoded = self._decode(data)
        clock.lap("decode")
        height, width = decoded.rgb.shape[:2]
        chosen = [region for region in regions if region.hidden]
        masks = self._render_masks(chosen, width, height)
        # An upload's `hide` rectangles are not counted as faces (as when first drawn).
        kinds = [region.kind for region in chosen if region.source != "request"]
        return self._finish(data, decoded, masks, kinds, list(regions), clock, content_type)

    def _render_masks(self, chosen: Sequence[Region], width: int, height: int) -> list[Mask]:
        """The masks of the regions to hide, never more values than twice the image's
        pixels however many regions there are."""
        shaped = [
            item
            for region in chosen
            if region.source == "detector"
            for item in self._shaped(region, width, height)
        ]
        # A person drew these boxes (a reviewer, or the client with `hide`): all of each is
        # hidden, whatever the mask shape. Merged, so that their number does not multiply
        # the work.
        drawn: list[Outline] = [
            (box, "box")
            for region in chosen
            if region.source != "detector" and (box := _clipped(region, width, height))
        ]
        if sum((x1 - x0) * (y1 - y0) for (x0, y0, x1, y1), _ in shaped) <= width * height:
            # One mask per detector region, the blur's strength by each: the first render's.
            return masks_of(shaped) + merged_masks(drawn)
        # More mask than picture (thousands of large overlapping candidates hidden):
        # merged too, so that the region count cannot multiply the memory.
        return merged_masks(shaped + drawn)

    def _hold(self, data: bytes) -> AbstractContextManager[None]:
        if self._budget is None:
            return nullcontext()
        return self._budget.hold(
            imaging.header_pixels(data, max_scans=self._options.max_jpeg_scans)
        )

    def _decode(self, data: bytes) -> imaging.DecodedImage:
        opts = self._options
        return imaging.decode(
            data,
            max_pixels=opts.max_pixels,
            keep_metadata=opts.keep_metadata,
            max_scans=opts.max_jpeg_scans,
        )

    def _finish(
        self,
        data: bytes,
        decoded: imaging.DecodedImage,
        masks: list[Mask],
        kinds: list[RegionKind],
        regions: list[Region],
        clock: _Stopwatch,
        content_type: str | None,
    ) -> AnonymizedImage:
        """Hide the masks, encode (these pixels, and only these, changed)."""
        opts = self._options
        height, width = decoded.rgb.shape[:2]
        # In place: the decoded original is not needed afterwards.
        decoded.rgb = hide_masks(decoded.rgb, masks, mode=opts.mode, in_place=True)
        if decoded.alpha is not None:
            if not decoded.alpha.flags.writeable:
                decoded.alpha = decoded.alpha.copy()
            opaque_masks(decoded.alpha, masks)
        clock.lap("blur")
        target = (
            imaging.format_for_content_type(content_type)
            if content_type
            else imaging.result_format(decoded.format, opts.output_format)
        )
        encoded, fallback = self._encode(data, decoded, target, masks)
        clock.lap("encode")
        return AnonymizedImage(
            data=encoded,
            content_type=target.content_type,
            extension=target.extension,
            faces=kinds.count("face"),
            plates=kinds.count("plate"),
            width=width,
            height=height,
            timings=clock.laps,
            jpeg_fallback=fallback,
            regions=regions,
        )

    def _shaped(self, region: Region, width: int, height: int) -> list[Outline]:
        """A detector region's mask: its box grown as the first render grew it (with the
        current settings for a region recorded without them)."""
        box = _clipped(region, width, height)
        if box is None:
            return []
        face = Face(*box, region.score or 0.0, region.kind)
        return mask_outlines([face], width, height, region.mask or self._options.geometry)

    def _encode(
        self,
        data: bytes,
        decoded: imaging.DecodedImage,
        target: imaging.ImageFormat,
        regions: list[Mask],
    ) -> tuple[bytes, str | None]:
        """The JPEG patched where it can be, else the whole image re-encoded (and why)."""
        quality = self._options.jpeg_quality
        if decoded.format is not imaging.JPEG or target is not imaging.JPEG:
            # HEIC/AVIF (and PNG/WebP) have no JPEG blocks to keep: always re-encoded.
            return imaging.encode(decoded, jpeg_quality=quality, target=target), None
        if decoded.metadata.exif is not None:
            # The patch writes ICC only; the EXIF the policy keeps goes in with a re-encode.
            reason = "metadata policy keeps EXIF groups (IMAGEBLUR_KEEP_METADATA)"
            return imaging.encode(decoded, jpeg_quality=quality, target=target), reason
        try:
            patched = jpeg_patch.patch(
                data,
                decoded.rgb,
                regions,
                orientation=decoded.orientation,
                grayscale=decoded.grayscale,
                icc_profile=decoded.icc_profile,
                max_scans=self._options.max_jpeg_scans,
            )
        except (jpeg_patch.UnsupportedJPEGError, TurboJPEGError) as exc:
            return imaging.encode(decoded, jpeg_quality=quality, target=target), str(exc)
        return patched, None


class _Stopwatch:
    """Times the stages; each stage's end is also a unit of the job's progress and a
    place where a job nobody waits for any more stops (`cancel`)."""

    def __init__(self, stages: tuple[str, ...]) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()
        expect(len(stages))

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now
        checkpoint()


def _clipped(region: Region, width: int, height: int) -> Box | None:
    """The region's box clipped to the image, None when nothing of it is inside."""
    x0, y0 = max(0, region.x), max(0, region.y)
    x1, y1 = min(width, region.x + region.width), min(height, region.y + region.height)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def regions_of(
    hidden: Sequence[Face],
    uncertain: Sequence[Face],
    width: int,
    height: int,
    *,
    mask: MaskGeometry | None = None,
    max_regions: int = MAX_REGIONS,
    ignored: Sequence[Face] = (),
) -> list[Region]:
    """The record's regions: the hidden faces, those the upload's `ignore` spared
    (`ignored`: listed, not hidden) and the uncertain candidates, "r1", "r2", ... by
    score, highest first, at most `max_regions`, each with the `mask` geometry it was
    (or would have been) hidden with. Past the cap the hidden ones are kept first, so
    that a re-render never shows a region the first render hid (unless a picture had
    more than `max_regions` of them)."""
    ranked = sorted(((f, _HIDDEN) for f in hidden), key=_score)
    ranked += sorted(((f, _IGNORED) for f in ignored), key=_score)
    ranked += sorted(((f, _UNCERTAIN) for f in uncertain), key=_score)
    kept = sorted(ranked[:max_regions], key=_score)  # stable: ties keep hidden first
    return [
        _region(f"r{index}", face, state, width, height, mask)
        for index, (face, state) in enumerate(kept, 1)
    ]


_HIDDEN, _UNCERTAIN, _IGNORED = "hidden", "uncertain", "ignored"


def requested_regions(hide: Sequence[Rect], width: int, height: int) -> list[Region]:
    """An upload's `hide` rectangles as the record lists them: "q1", "q2", ..., source
    `request`, hidden, clipped to the image (one wholly outside is left out: the API
    refuses it)."""
    drawn = (
        drawn_region(
            f"q{index}", rect, source="request", hidden=True, image_width=width, image_height=height
        )
        for index, rect in enumerate(hide, 1)
    )
    return [region for region in drawn if region is not None]


def _score(item: tuple[Face, str]) -> float:
    return -item[0].score


def _region(
    region_id: str, face: Face, state: str, width: int, height: int, mask: MaskGeometry | None
) -> Region:
    """The detection box rounded outward to whole pixels, clipped to the image (at
    least one pixel across)."""
    x, w = _span(face.x0, face.x1, width)
    y, h = _span(face.y0, face.y1, height)
    return Region(
        id=region_id,
        x=x,
        y=y,
        width=w,
        height=h,
        score=round(face.score, 4),
        source="detector",
        kind=face.kind,
        uncertain=state == _UNCERTAIN,
        hidden=state == _HIDDEN,
        mask=mask,
        ignored=state == _IGNORED,
    )


def _span(lo: float, hi: float, size: int) -> tuple[int, int]:
    start = min(max(0, math.floor(lo)), size - 1)
    end = max(min(size, math.ceil(hi)), start + 1)
    return start, end - start


def _detect(
    detector: FaceDetector, rgb: RGBImage, thresholds: DetectionThresholds | None = None
) -> tuple[list[Face], list[Face]]:
    """(hidden, uncertain); a detector that lists no candidates has none. `thresholds`:
    an upload's preset's, for a detector that takes them per call."""
    if thresholds is not None and isinstance(detector, TunableDetector):
        return detector.detect_regions(rgb, thresholds)
    if isinstance(detector, RegionDetector):
        return detector.detect_regions(rgb)
    return detector.detect(rgb), []
