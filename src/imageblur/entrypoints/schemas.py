"""The API's JSON bodies, and how an image record is shown."""

from __future__ import annotations

from datetime import datetime
from typing import Any, get_args

from pydantic import BaseModel

from imageblur import imaging
from imageblur.domain import BlurMode, ErrorCode, ImageRecord
from imageblur.metadata import KEEP_GROUPS
from imageblur.upload_options import MAX_RECTANGLES, OPTION_NAMES


class Picture(BaseModel):
    id: str
    name: str
    status: str
    url: str | None
    image_url: str
    faces: int | None
    plates: int | None
    width: int
    height: int
    content_type: str
    bytes: int
    created_at: datetime
    updated_at: datetime
    error: str | None  # a short public text; the details are in the logs
    error_code: ErrorCode | None = None  # why it failed (or waits for a retry): a closed set
    request_id: str | None = None  # the upload's X-Request-ID, to find its log lines
    review: str | None = None  # null (never held), pending, approved, expired
    revision: int = 0  # of the regions (GET /picture/{id}/regions)
    # The upload's options (mode, preset, keep_metadata, hide, ignore, review); null: none.
    options: dict[str, Any] | None = None


class AcceptedFormat(BaseModel):
    name: str  # as people name it: "HEIC/HEIF"
    content_types: list[str]
    extensions: list[str]


class VideoLimits(BaseModel):
    """What a video upload may be (POST /video), when the server takes videos."""

    max_bytes: int
    max_seconds: int
    max_pixels: int
    accepted: str  # the containers in one phrase, as the video probe's refusal names them


class OptionLimits(BaseModel):
    """Which options a picture's upload may carry (IMAGEBLUR_ALLOWED_OPTIONS), and the
    server's own choices where an upload names none."""

    allowed: list[str]  # option names; any other is refused (403 option_not_allowed)
    modes: list[str]  # values of `mode`
    metadata_groups: list[str]  # values of `keep_metadata` (comma-separated)
    mode: str  # the server's own (IMAGEBLUR_BLUR_MODE)
    keep_metadata: list[str]  # the server's own groups (IMAGEBLUR_KEEP_METADATA)
    max_rectangles: int  # of `hide`, and of `ignore`


def option_limits(
    *, allowed: frozenset[str], mode: str, keep_metadata: frozenset[str]
) -> OptionLimits:
    return OptionLimits(
        allowed=[name for name in OPTION_NAMES if name in allowed],
        modes=list(get_args(BlurMode)),
        metadata_groups=list(KEEP_GROUPS),
        mode=mode,
        keep_metadata=[group for group in KEEP_GROUPS if group in keep_metadata],
        max_rectangles=MAX_RECTANGLES,
    )


class Limits(BaseModel):
    """What an upload may be, for a client to say before sending (the web page does)."""

    max_upload_bytes: int
    max_pixels: int
    formats: list[AcceptedFormat]
    accepted: str  # the formats in one phrase: "JPEG, PNG, WebP, HEIC/HEIF or AVIF"
    videos: VideoLimits | None = None  # None: this server takes no videos (IMAGEBLUR_VIDEO)
    options: OptionLimits | None = None  # a picture's options per upload
    # Whether batches may name any location here (IMAGEBLUR_BATCH_BUCKETS or
    # IMAGEBLUR_BATCH_ROOTS set): the page lists batches only then.
    batches: bool = False


def limits(
    max_upload_bytes: int,
    max_pixels: int,
    videos: VideoLimits | None = None,
    options: OptionLimits | None = None,
    *,
    batches: bool = False,
) -> Limits:
    return Limits(
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        videos=videos,
        options=options,
        batches=batches,
        formats=[
            AcceptedFormat(
                name=f.label,
                content_types=[f.content_type, *f.other_types],
                extensions=[f.extension, *f.other_extensions],
            )
            for f in imaging.FORMATS
        ],
        accepted=imaging.ACCEPTED_FORMATS,
    )


class PictureList(BaseModel):
    items: list[Picture]
    total: int
    limit: int
    offset: int
    next: str | None


class RegionOut(BaseModel):
    id: str
    x: int
    y: int
    width: int
    height: int
    score: float | None
    source: str  # detector, manual, request (a `hide` option)
    kind: str  # face, plate
    uncertain: bool  # scored below the detection threshold (a candidate for a reviewer)
    hidden: bool
    ignored: bool = False  # a detection left unhidden at the upload's request (`ignore`)


class RegionList(BaseModel):
    revision: int
    regions: list[RegionOut]


class EventOut(BaseModel):
    at: datetime
    role: str  # api, reviewer, worker, system
    action: str  # uploaded, processed, corrected, rendered, approved, expired, failed
    status: str
    revision: int
    detail: str | None
    reviewer: str | None = None  # the reviewer's name, on corrections and approvals
    reasons: dict[str, str] | None = None  # {region id: why a reviewer showed it}


class History(BaseModel):
    events: list[EventOut]


class Error(BaseModel):
    error: str
    message: str
    field: str | None = None  # the option refused (invalid_option, option_not_allowed)


def picture(record: ImageRecord, root: str = "") -> Picture:
    return Picture(
        id=record.id,
        name=record.name,
        status=record.status.public,
        url=record.url,
        image_url=f"{root}/picture/{record.id}/image",
        faces=record.faces,
        plates=record.plates,
        width=record.width,
        height=record.height,
        content_type=record.content_type,
        bytes=record.bytes,
        created_at=record.created_at,
        updated_at=record.updated_at,
        error=record.error,
        error_code=record.error_code,
        request_id=record.request_id,
        review=record.review.value if record.review is not None else None,
        revision=record.revision,
        options=record.options.to_dict() if record.options is not None else None,
    )


_ERROR_MEANINGS = {
    400: "Bad request: a malformed body, or an image that is corrupt or empty.",
    401: "The API token is missing or wrong (only when IMAGEBLUR_API_TOKEN is set).",
    403: "forbidden: this token's role may not do this (the reviewer token may); "
    "option_not_allowed: an upload option the server does not allow (`field`).",
    404: "No image with that id.",
    409: "The anonymized image is not available (yet, or any more); for review actions: "
    "original_gone, not_in_review or rendering; for an upload: idempotency_key_reused.",
    412: "stale_revision: If-Match is not the current revision of the regions.",
    413: "The upload is too large: too_large (bytes) or too_many_pixels; GET /limits "
    "gives both limits.",
    415: f"Not {imaging.ACCEPTED_FORMATS} (judged by the magic bytes), an animated image, "
    "or an unsupported Content-Type.",
    422: "A parameter or header has an invalid value; invalid_regions for a correction; "
    "invalid_option (`field`) or review_unavailable for an upload.",
    428: "if_match_required: send If-Match with the revision of the regions you edited.",
    503: "A back end is unavailable, or the API is overloaded; retry after Retry-After.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of the error responses a route can give."""
    return {s: {"model": Error, "description": _ERROR_MEANINGS[s]} for s in statuses}


UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": f"The image ({imaging.ACCEPTED_FORMATS}): a multipart part named `image`, "
        "or the raw bytes with an image/* Content-Type.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        **{name: {"type": "string"} for name in OPTION_NAMES},
                        "image": {"type": "string", "format": "binary"},
                    },
                }
            },
            **{
                ct: {"schema": {"type": "string", "format": "binary"}}
                for ct in imaging.SUPPORTED_CONTENT_TYPES
            },
        },
    }
}
