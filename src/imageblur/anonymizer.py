"""Bytes in, anonymized bytes out: decode, detect, blur, re-encode.

Shared by the worker and the `blur` command so that both apply exactly the same
detector, mask and encoder settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from imageblur import imaging
from imageblur.blurring import anonymize
from imageblur.ports import FaceDetector


@dataclass(frozen=True, slots=True)
class AnonymizeOptions:
    mode: Literal["blur", "pixelate", "solid"]
    shape: Literal["ellipse", "box"]
    mask_scale: float
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
        decoded = imaging.decode(data, max_pixels=opts.max_pixels, keep_metadata=opts.keep_metadata)
        faces = self._detector.detect(decoded.rgb)
        decoded.rgb = anonymize(
            decoded.rgb,
            faces,
            mode=opts.mode,
            shape=opts.shape,
            mask_scale=opts.mask_scale,
            in_place=True,  # the decoded original is not needed afterwards
        )
        height, width = decoded.rgb.shape[:2]
        target = (
            imaging.format_for_content_type(content_type)
            if content_type
            else imaging.result_format(decoded.format, opts.output_format)
        )
        return AnonymizedImage(
            data=imaging.encode(decoded, jpeg_quality=opts.jpeg_quality, target=target),
            content_type=target.content_type,
            extension=target.extension,
            faces=sum(1 for f in faces if f.kind == "face"),
            plates=sum(1 for f in faces if f.kind == "plate"),
            width=width,
            height=height,
        )
