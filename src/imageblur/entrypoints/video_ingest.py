"""A video upload read off the wire into a spool file of the API's: the multipart
body's `video` part, or the raw body, parsed as it arrives by `streamed_upload` (the
byte cap while streaming, a stalled or interrupted body refused, one of the process's
large-upload slots held), written by a local store over the spool folder (a temp file,
then renamed). The file is the probe's input: it reads the container's header, which
an MP4 may keep at its end, so the whole file is needed before anything is stored."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from starlette.requests import Request

from imageblur.adapters.local_store import LocalObjectStore
from imageblur.admission import StreamSlots
from imageblur.domain import VideoRefused
from imageblur.entrypoints.streamed_upload import stream_upload
from imageblur.videos import Ingested

SPOOL = "imageblur-spool"  # under the temp dir (TMPDIR): uploads being read and probed


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def ingest(
    request: Request,
    *,
    part: str = "video",
    max_bytes: int,
    slots: StreamSlots,
    filename: str | None = None,
    spool_dir: Path | None = None,
) -> Ingested:
    """The upload in a new file under `spool_dir` (`<temp dir>/imageblur-spool` by
    default): the multipart body's file part `part`, or a raw body with a `video/*` (or
    application/octet-stream) Content-Type, named by `filename`. Raises `VideoRefused`
    (415) for another Content-Type, and what `stream_upload` raises (413 too_large, 400
    bad_multipart or missing_file, 408 upload_stalled, 503 overloaded), leaving no file
    behind."""
    media_type = _media_type(request)
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
    root = spool_dir or Path(tempfile.gettempdir()) / SPOOL
    key = f"upload-{uuid.uuid4().hex}.video"
    streamed = await stream_upload(
        request,
        store=LocalObjectStore(root),
        key=key,
        max_bytes=max_bytes,
        slots=slots,
        field=part,
        filename=filename,
    )
    return Ingested(
        path=root / key,
        size=streamed.size,
        digest=streamed.body_sha256,
        head=streamed.head,
        filename=streamed.filename,
        content_type=streamed.content_type,
    )
