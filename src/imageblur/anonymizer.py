"""Bytes in, anonymized bytes out: decode, detect, blur, re-encode.

Shared by the worker and the `blur` command so that both apply exactly the same
detector, mask and encoder settings. A JPEG keeps its original blocks outside the masks
(`jpeg_patch`); when it cannot, it is re-encoded whole and the result says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from imageblur import imaging, jpeg_patch
from imageblur.blurring import anonymize, mask_boxes, region_mask, shape_of
from imageblur.jpeg_coefficients import TurboJPEGError
from imageblur.ports import FaceDetector


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


class Anonymizer:
    def __init__(self, detector: FaceDetector, options: AnonymizeOptions) -> None:
        self._detector = detector
        self._options = options

    @property
    def detector(self) -> FaceDetector:
        return self._detector

    @property
    def options(self) -> AnonymizeOptions:
        return self._options

    def __call__(self, data: bytes, *, content_type: str | None = None) -> AnonymizedImage:
        """Raises `InvalidImage` for data that cannot be decoded (a permanent failure).

        `content_type` is the result's format when the caller has decided it already (the
        record's, set at upload); otherwise it follows `options.output_format`.
        """
        opts = self._options
        clock = _Stopwatch()
        decoded = imaging.decode(data, max_pixels=opts.max_pixels, keep_metadata=opts.keep_metadata)
        clock.lap("decode")
        faces = self._detector.detect(decoded.rgb)
        clock.lap("detect")
        height, width = decoded.rgb.shape[:2]
        decoded.rgb = anonymize(
            decoded.rgb,
            faces,
            mode=opts.mode,
            shape=opts.shape,
            mask_scale=opts.mask_scale,
            margin_px=opts.margin_px,
            in_place=True,  # the decoded original is not needed afterwards
        )
        clock.lap("blur")
        target = (
            imaging.format_for_content_type(content_type)
            if content_type
            else imaging.result_format(decoded.format, opts.output_format)
        )
        # The same geometry `anonymize` hid (plates as whole rectangles): these pixels,
        # and only these, changed.
        regions = [
            (box, region_mask(box, shape_of(face, opts.shape)))
            for face in faces
            for box in mask_boxes([face], width, height, opts.mask_scale, margin_px=opts.margin_px)
        ]
        encoded, fallback = self._encode(data, decoded, target, regions)
        clock.lap("encode")
        return AnonymizedImage(
            data=encoded,
            content_type=target.content_type,
            extension=target.extension,
            faces=sum(1 for f in faces if f.kind == "face"),
            plates=sum(1 for f in faces if f.kind == "plate"),
            width=width,
            height=height,
            timings=clock.laps,
            jpeg_fallback=fallback,
        )

    def _encode(
        self,
        data: bytes,
        decoded: imaging.DecodedImage,
        target: imaging.ImageFormat,
        regions: list[jpeg_patch.Region],
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
            )
        except (jpeg_patch.UnsupportedJPEGError, TurboJPEGError) as exc:
            return imaging.encode(decoded, jpeg_quality=quality, target=target), str(exc)
        return patched, None


class _Stopwatch:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now
