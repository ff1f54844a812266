"""A video upload streamed into the originals store as it arrives: the multipart body's
`video` part, or the raw body, parsed as it comes by `streamed_upload` (the byte cap
while streaming, a stalled or interrupted body refused, one of the process's large-upload
slots held), under the key `VideoService.upload_key` makes of its first bytes (its
container: anything else is refused before a byte is stored). Nothing is written to the
API's disk; the probe then reads the stored object's header by ranges
(`VideoService.submit`)."""

from __future__ import annotations

from starlette.requests import Request

from imageblur.admission import StreamSlots
from imageblur.domain import VideoRefused
from imageblur.entrypoints.streamed_upload import FieldCheck, stream_upload
from imageblur.videos import Ingested, VideoService


def media_type_of(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def ingest(
    request: Request,
    videos: VideoService,
    *,
    part: str = "video",
    max_bytes: int,
    slots: StreamSlots,
    filename: str | None = None,
    check_fields: FieldCheck | None = None,
) -> Ingested:
    """The upload stored in `videos.originals`, unchecked but for its container: the
    multipart body's file part `part`, or a raw body with a `video/*` (or
    application/octet-stream) Content-Type, named by `filename`; `check_fields` sees
    the multipart body's other fields (the options) before the video is stored. Raises
    `VideoRefused` (415) for another Content-Type or bytes of no video container we
    take, and what `stream_upload` raises (413 too_large, 400 bad_multipart or
    missing_file, 408 upload_stalled, 503 overloaded), leaving nothing stored."""
    media_type = media_type_of(request)
    if not (
        media_type in ("multipart/form-data", "application/octet-stream")
        or media_type.startswith("video/")
    ):
        raise VideoRefused(
            f"send multipart/form-data with a file part named '{part}', "
            "or the raw video with a video/* Content-Type",
            http_status=415,
            code="unsupported_media_type",
        )
    streamed = await stream_upload(
        request,
        store=videos.originals,
        key=videos.upload_key(),
        max_bytes=max_bytes,
        slots=slots,
        field=part,
        filename=filename,
        check_fields=check_fields,
    )
    return Ingested(
        key=streamed.key,
        size=streamed.size,
        digest=streamed.body_sha256,
        filename=streamed.filename,
        content_type=streamed.content_type,
        fields=streamed.fields,
    )
