"""The video routes (IMAGEBLUR_VIDEO): upload, read, list, delete, and the result served
by ranges. Off, each answers 404 `video_disabled`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from imageblur.domain import ImageRecord
from imageblur.entrypoints.errors import Rejected, error_response
from imageblur.entrypoints.middleware.request_id import request_id_of
from imageblur.entrypoints.routes import Root, Services, checked_options
from imageblur.entrypoints.video_ingest import ingest, media_type_of
from imageblur.entrypoints.video_schemas import UPLOAD_BODY, Video, VideoList, errors, video
from imageblur.videos import VideoService

router = APIRouter()

_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")


async def _videos(container: Services) -> VideoService:
    if container.videos is None:
        raise Rejected(
            404, "video_disabled", "videos are not enabled on this server (IMAGEBLUR_VIDEO)"
        )
    return container.videos


Videos = Annotated[VideoService, Depends(_videos)]


def _shown(videos: VideoService, record: ImageRecord, root: str) -> Video:
    return video(record, root, videos.playback(record, root))


@router.post(
    "/video",
    status_code=202,
    response_model=Video,
    responses=errors(400, 401, 403, 404, 409, 413, 415, 422, 503),
    openapi_extra=UPLOAD_BODY,
    summary="Upload a video to anonymize",
    description="Options (multipart fields before the file part, or query parameters of a "
    "raw upload), as for pictures: `mode`, `preset`, `keep_metadata` (`gps`, `datetime`: "
    "what a video's container keeps), `hide` and `ignore` (JSON lists of "
    '`{"x", "y", "width", "height"}` in pixels of the upright frame; `hide` is hidden in '
    "every frame), `review=required`, `callback_url`; IMAGEBLUR_ALLOWED_OPTIONS the ones a "
    "client may choose.",
)
async def post_video(
    request: Request,
    videos: Videos,
    services: Services,
    root: Root,
    filename: Annotated[str | None, Query(max_length=255)] = None,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> JSONResponse:
    raw = media_type_of(request) != "multipart/form-data"
    # A raw upload's options are its query parameters: checked before the body is read;
    # a multipart body's, when its file part starts (and again at its end).
    if raw:
        checked_options(request.query_params, services, request.scope, video=True)

    def check(fields: Mapping[str, str]) -> None:
        checked_options(fields, services, request.scope, video=True)

    # One of the large uploads this process takes at once (IMAGEBLUR_MAX_STREAMED_UPLOADS),
    # held while the body is streamed into the store; checked there (and deleted if
    # refused) by `submit`.
    upload = await ingest(
        request,
        videos,
        part="video",
        max_bytes=services.settings.max_video_bytes,
        slots=services.streams,
        filename=filename,
        check_fields=None if raw else check,
    )
    fields = request.query_params if raw else upload.fields
    options = checked_options(fields, services, request.scope, video=True)
    record = await run_in_threadpool(
        videos.submit,
        upload,
        idempotency_key=idempotency_key,
        request_id=request_id_of(request.scope),
        options=options,
    )
    return JSONResponse(
        _shown(videos, record, root).model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"{root}/video/{record.id}"},
    )


@router.get("/video/{image_id}", response_model=Video, responses=errors(401, 404, 422, 503))
async def get_video(videos: Videos, root: Root, image_id: str) -> Video:
    record = await run_in_threadpool(videos.get, image_id)
    return _shown(videos, record, root)


@router.get(
    "/video/{image_id}/file",
    responses={
        200: {"content": {"video/mp4": {}, "video/webm": {}}},
        206: {"description": "The bytes of the Range asked for (one range)."},
        **errors(401, 404, 409, 416, 422, 503),
    },
    response_class=Response,
    summary="The anonymized video (never the original), by ranges",
)
async def get_video_file(
    videos: Videos,
    image_id: str,
    range_: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    # A playback URL's `expires` and `sig` were checked by the token check, if any.
    found = await run_in_threadpool(videos.file, image_id)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'inline; filename="{_ascii(found.name)}"',
        "Cache-Control": "private, max-age=300" if found.final else "no-store",
    }
    start, end = 0, found.size
    status = 200
    if range_ is not None:
        chosen = _range(range_, found.size)
        if chosen is None:
            return error_response(
                416,
                "range_not_satisfiable",
                f"one range of bytes 0-{max(found.size - 1, 0)} is served",
                **{"Content-Range": f"bytes */{found.size}"},
            )
        start, end = chosen
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{found.size}"
    headers["Content-Length"] = str(end - start)
    chunks = iterate_in_threadpool(videos.read(found.key, start, end))
    return StreamingResponse(
        chunks, status_code=status, media_type=found.content_type, headers=headers
    )


@router.get(
    "/video/{image_id}/tracks",
    responses={
        200: {"content": {"application/json": {}}},
        **errors(401, 404, 409, 422, 503),
    },
    response_class=Response,
    summary="The face tracks of a processed video: key boxes per track and the rule",
)
async def get_video_tracks(videos: Videos, image_id: str) -> Response:
    # One compact JSON object (`video.track_plan`, format imageblur.track-plan/2),
    # streamed from the results store by ranges.
    found = await run_in_threadpool(videos.tracks, image_id)
    headers = {
        "Content-Length": str(found.size),
        "Content-Disposition": f'inline; filename="{_ascii(found.name)}"',
        "Cache-Control": "private, max-age=300" if found.final else "no-store",
    }
    chunks = iterate_in_threadpool(videos.read(found.key, 0, found.size))
    return StreamingResponse(chunks, media_type=found.content_type, headers=headers)


def _ascii(name: str) -> str:
    return name.encode("ascii", "ignore").decode().replace('"', "") or "video"


def _range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range within `size`; None if it is malformed,
    names several ranges, or is not satisfiable."""
    match = _RANGE.fullmatch(header.strip())
    if match is None or size == 0:
        return None
    first, last = match.groups()
    if not first:  # the last `last` bytes
        if not last or int(last) == 0:
            return None
        return max(size - int(last), 0), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        return None
    return start, end


@router.get("/videos", response_model=VideoList, responses=errors(401, 404, 422, 503))
async def list_videos(
    videos: Videos,
    services: Services,
    root: Root,
    limit: Annotated[int, Query(ge=1)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> VideoList:
    limit = min(limit, services.settings.page_size_max)
    records, total = await run_in_threadpool(videos.list, limit=limit, offset=offset)
    nxt = offset + len(records)
    return VideoList(
        items=[_shown(videos, r, root) for r in records],
        total=total,
        limit=limit,
        offset=offset,
        next=f"{root}/videos?limit={limit}&offset={nxt}" if nxt < total else None,
    )


@router.delete("/video/{image_id}", status_code=204, responses=errors(401, 404, 422, 503))
async def delete_video(videos: Videos, image_id: str) -> Response:
    await run_in_threadpool(videos.delete, image_id)
    return Response(status_code=204)
