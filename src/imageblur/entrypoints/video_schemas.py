"""The API's JSON bodies for videos, and how a video's record is shown."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from imageblur.domain import ErrorCode, ImageRecord, Status
from imageblur.entrypoints.schemas import Error
from imageblur.videos import Playback


class Progress(BaseModel):
    """A running video job's progress, as its worker last wrote it (about every second)."""

    frames_done: int
    frames_total: int
    eta_s: float | None  # None until a rate is measured


class Video(BaseModel):
    id: str
    kind: str  # always "video"
    name: str
    status: str  # pending, processing, done, failed, review
    url: str | None
    file_url: str  # GET it with the bearer header; `playback_url` plays it without
    faces: int | None  # face tracks hidden
    width: int
    height: int
    duration_s: float | None
    fps: float | None
    frames: int | None
    video_codec: str | None
    audio: str | None  # kept, reencoded, none (once done)
    content_type: str  # of the result
    bytes: int  # of the upload
    created_at: datetime
    updated_at: datetime
    error: str | None
    error_code: ErrorCode | None = None
    request_id: str | None = None
    review: str | None = None
    progress: Progress | None = None  # while processing
    playback_url: str | None = None  # once done: plays in a <video> element, no bearer
    playback_expires_at: datetime | None = None
    # Once done with tracking on: GET it (with the bearer header) for the face tracks,
    # their key boxes and the rule that hides a face between and around them.
    tracks_url: str | None = None
    # The upload's options (mode, preset, keep_metadata, hide, ignore, review,
    # callback_url); null: none.
    options: dict[str, Any] | None = None


class VideoList(BaseModel):
    items: list[Video]
    total: int
    limit: int
    offset: int
    next: str | None


def video(record: ImageRecord, root: str = "", playback: Playback | None = None) -> Video:
    progress = None
    if record.frames_done is not None and record.frames_total is not None:
        progress = Progress(
            frames_done=record.frames_done, frames_total=record.frames_total, eta_s=record.eta_s
        )
    return Video(
        id=record.id,
        kind=record.kind,
        name=record.name,
        status=record.status.public,
        url=record.url,
        file_url=f"{root}/video/{record.id}/file",
        faces=record.faces,
        width=record.width,
        height=record.height,
        duration_s=record.duration_s,
        fps=record.fps,
        frames=record.frames,
        video_codec=record.video_codec,
        audio=record.audio,
        content_type=record.content_type,
        bytes=record.bytes,
        created_at=record.created_at,
        updated_at=record.updated_at,
        error=record.error,
        error_code=record.error_code,
        request_id=record.request_id,
        review=record.review.value if record.review is not None else None,
        progress=progress,
        playback_url=playback.url if playback else None,
        playback_expires_at=playback.expires_at if playback else None,
        tracks_url=f"{root}/video/{record.id}/tracks" if _has_tracks(record) else None,
        options=record.options.to_dict() if record.options is not None else None,
    )


def _has_tracks(record: ImageRecord) -> bool:
    return record.tracks_key is not None and record.status in (Status.DONE, Status.REVIEW)


_ERROR_MEANINGS = {
    400: "Bad request: a malformed body (bad_multipart, missing_file), or a video whose "
    "header is inconsistent (too_many_frames: more frames than its duration and frame "
    "rate allow; bad_frame_rate: an absurd frame rate).",
    401: "The API token is missing or wrong (only when IMAGEBLUR_API_TOKEN is set); for "
    "the file, a playback URL that expired or was altered.",
    403: "option_not_allowed: an upload option the server does not allow (`field`).",
    404: "No video with that id (not_found), or videos are not enabled on this server "
    "(video_disabled: IMAGEBLUR_VIDEO).",
    409: "not_ready: the video has no result (yet, or any more); for an upload: "
    "idempotency_key_reused.",
    413: "The video is too large: too_large (bytes, IMAGEBLUR_MAX_VIDEO_BYTES, enforced "
    "while streaming), too_long (IMAGEBLUR_MAX_VIDEO_SECONDS) or too_many_pixels "
    "(IMAGEBLUR_MAX_VIDEO_PIXELS).",
    415: "Not a video (unsupported_media_type: judged by the bytes, or a Content-Type that "
    "is neither multipart/form-data nor video/*), no video stream, or a codec we cannot "
    "decode (unsupported_codec, naming it).",
    416: "range_not_satisfiable: the Range is malformed, names several ranges, or starts "
    "past the end (Content-Range gives the size).",
    422: "A parameter or header has an invalid value; invalid_option (`field`: an option "
    "this server, or a video, cannot take) or review_unavailable for an upload.",
    503: "A back end is unavailable, or the API is overloaded; retry after Retry-After.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of the error responses a video route can give."""
    return {s: {"model": Error, "description": _ERROR_MEANINGS[s]} for s in statuses}


UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The video (MP4 or MOV with H.264, H.265, AV1 or VP9; WebM with VP8, "
        "VP9 or AV1): a multipart part named `video`, or the raw bytes with a video/* "
        "Content-Type and `?filename=`.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["video"],
                    "properties": {"video": {"type": "string", "format": "binary"}},
                }
            },
            **{
                ct: {"schema": {"type": "string", "format": "binary"}}
                for ct in ("video/mp4", "video/quicktime", "video/webm")
            },
        },
    }
}
