"""The API's routes. Each receives the use cases through FastAPI dependencies, runs the
blocking ones in the thread pool, and shapes the answer; errors are raised as domain
errors and answered by the handlers in `errors.py`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from imageblur import imaging, upload_options
from imageblur.batches.rules import parse_list
from imageblur.bootstrap import Container
from imageblur.domain import ImageRecord, InvalidImage, UploadOptions
from imageblur.entrypoints.middleware.auth import asked_by
from imageblur.entrypoints.middleware.request_id import request_id_of
from imageblur.entrypoints.schemas import (
    UPLOAD_BODY,
    Limits,
    Picture,
    PictureList,
    VideoLimits,
    errors,
    limits,
    option_limits,
    picture,
)
from imageblur.entrypoints.uploads import read_multipart, read_raw
from imageblur.logs import get_logger
from imageblur.metadata import parse_policy
from imageblur.services import ImageService

log = get_logger("imageblur.entrypoints.api")

router = APIRouter()


# The dependencies are `async def`: FastAPI runs a plain `def` one in the thread pool,
# two thread hops per request for reading an attribute (a fifth of an upload's CPU in
# the event loop, measured with bench/load.py).
async def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


async def _images(container: Annotated[Container, Depends(_container)]) -> ImageService:
    return container.images


async def _root(request: Request) -> str:
    """The proxy prefix (IMAGEBLUR_ROOT_PATH), for the URLs we hand out."""
    return str(request.scope.get("root_path", "")).rstrip("/")


Services = Annotated[Container, Depends(_container)]
Images = Annotated[ImageService, Depends(_images)]
Root = Annotated[str, Depends(_root)]


async def _read_upload(
    request: Request, filename: str | None, max_bytes: int
) -> tuple[bytes, str | None, dict[str, str]]:
    """The image, its name, and the fields its options are among: the multipart body's
    other fields, or a raw upload's query parameters."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await read_multipart(request, max_bytes=max_bytes)
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        data = await read_raw(request, max_bytes=max_bytes)
        return data, filename, dict(request.query_params)
    raise InvalidImage(
        "send multipart/form-data with a file part named 'image', "
        "or the raw image with an image/* Content-Type",
        http_status=415,
        code="unsupported_media_type",
    )


def checked_options(
    fields: Mapping[str, str], services: Container, scope: Scope, *, video: bool = False
) -> UploadOptions | None:
    """The upload's options among `fields`, checked against this server (what it allows,
    whether it can review, where it may deliver; for a video, what a video can take):
    raises `InvalidOption` or `OptionNotAllowed`."""
    settings = services.settings
    options = upload_options.parse(
        fields, allowed=settings.allowed_upload_options(), asked_by=asked_by(scope)
    )
    if video:
        upload_options.check_video(options)
    upload_options.check_review(options, available=settings.review_possible())
    upload_options.check_callback(
        options, policy=settings.webhook_policy(), signing=settings.webhook_secret is not None
    )
    return options


@router.post(
    "/picture",
    status_code=202,
    response_model=Picture,
    responses=errors(400, 401, 403, 409, 413, 415, 422, 503),
    openapi_extra=UPLOAD_BODY,
    summary="Upload a picture to anonymize",
    description="Options (multipart fields before the file part, or query parameters of a "
    "raw upload): `mode`, `preset` (`privacy`, `tidy` or `thorough`, on any server: the "
    "picture detected as a server started with it would), `keep_metadata`, `hide` and "
    '`ignore` (JSON lists of `{"x", "y", "width", "height"}`), `review=required`; the '
    "server's settings are the defaults, IMAGEBLUR_ALLOWED_OPTIONS the ones a client may "
    "choose.",
)
async def post_picture(
    request: Request,
    services: Services,
    root: Root,
    filename: Annotated[str | None, Query(max_length=255)] = None,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> JSONResponse:
    # Admitted from before the body is read: each upload in hand holds up to
    # IMAGEBLUR_MAX_UPLOAD_BYTES of memory, so the gate bounds that memory too.
    with services.gate.admit():
        data, name, fields = await _read_upload(
            request, filename, services.settings.max_upload_bytes
        )
        options = checked_options(fields, services, request.scope)
        record: ImageRecord = await run_in_threadpool(
            services.images.submit,
            data,
            name=name,
            idempotency_key=idempotency_key,
            request_id=request_id_of(request.scope),
            options=options,
        )
    return JSONResponse(
        picture(record, root).model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"{root}/picture/{record.id}"},
    )


@router.get("/picture/{image_id}", response_model=Picture, responses=errors(401, 404, 422, 503))
async def get_picture(images: Images, root: Root, image_id: str) -> Picture:
    record = await run_in_threadpool(images.get, image_id)
    return picture(record, root)


@router.get(
    "/picture/{image_id}/image",
    responses={
        200: {"content": {ct: {} for ct in imaging.SUPPORTED_CONTENT_TYPES}},
        307: {"description": "A presigned URL of the result (IMAGEBLUR_RESULT_DELIVERY)."},
        **errors(401, 404, 409, 422, 503),
    },
    response_class=Response,
    summary="The anonymized picture (never the original)",
)
async def get_picture_image(images: Images, image_id: str) -> Response:
    result = await run_in_threadpool(images.result, image_id)
    if result.redirect_url is not None:
        return RedirectResponse(result.redirect_url, status_code=307)
    assert result.data is not None
    ascii_name = result.name.encode("ascii", "ignore").decode().replace('"', "") or "image"
    return Response(
        result.data,
        media_type=result.content_type,
        headers={
            "Content-Disposition": f'inline; filename="{ascii_name}"',
            # A result under review changes with every correction: never cached.
            "Cache-Control": "private, max-age=3600" if result.final else "no-store",
        },
    )


@router.get("/pictures", response_model=PictureList, responses=errors(401, 422, 503))
async def list_pictures(
    services: Services,
    root: Root,
    limit: Annotated[int, Query(ge=1)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> PictureList:
    limit = min(limit, services.settings.page_size_max)
    records, total = await run_in_threadpool(services.images.list, limit=limit, offset=offset)
    nxt = offset + len(records)
    return PictureList(
        items=[picture(r, root) for r in records],
        total=total,
        limit=limit,
        offset=offset,
        next=f"{root}/pictures?limit={limit}&offset={nxt}" if nxt < total else None,
    )


@router.delete("/picture/{image_id}", status_code=204, responses=errors(401, 404, 422, 503))
async def delete_picture(images: Images, image_id: str) -> Response:
    await run_in_threadpool(images.delete, image_id)
    return Response(status_code=204)


@router.get("/limits", response_model=Limits, summary="What an upload may be (public)")
async def get_limits(services: Services) -> Limits:
    # Public like /healthz: the page states the limits, and checks a file against them,
    # before any token is given; they are the server's settings, no data.
    settings = services.settings
    videos = None
    if services.videos is not None:  # the /video routes answer: say what they take
        videos = VideoLimits(
            max_bytes=settings.max_video_bytes,
            max_seconds=settings.max_video_seconds,
            max_pixels=settings.max_video_pixels,
            accepted="MP4, MOV or WebM",
        )
    options = option_limits(
        allowed=settings.allowed_upload_options(),
        mode=settings.blur_mode,
        keep_metadata=parse_policy(settings.keep_metadata),
    )
    batches = bool(parse_list(settings.batch_buckets) or parse_list(settings.batch_roots))
    return limits(settings.max_upload_bytes, settings.max_pixels, videos, options, batches=batches)


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Every back end is reachable", responses={503: {}})
async def readyz(images: Images, services: Services) -> JSONResponse:
    checks = await run_in_threadpool(images.check)
    # Not a back end: whether this process opens the originals (its keys).
    checks["originals_key"] = await run_in_threadpool(services.key_problem)
    ready = all(v is None for v in checks.values())
    for name, reason in checks.items():
        if reason is not None:
            log.warning("readiness.failed", backend=name, error=reason)
    # Which back end, not why: the probe is public, and error texts name hosts,
    # users and paths. The reason is in the log above.
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": {k: "ok" if v is None else "unavailable" for k, v in checks.items()},
    }
    return JSONResponse(body, status_code=200 if ready else 503)
