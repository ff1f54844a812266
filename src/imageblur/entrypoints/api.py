"""The HTTP API. `create_app` is the factory; its lifespan builds and closes the services
(and, in embedded mode, runs the worker in the same process)."""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from imageblur import __version__, imaging
from imageblur.bootstrap import Container, build
from imageblur.config import Settings
from imageblur.domain import (
    BackendUnavailable,
    ImageRecord,
    InvalidImage,
    NotFound,
    NotReady,
    Overloaded,
)
from imageblur.entrypoints.uploads import read_multipart, read_raw
from imageblur.entrypoints.worker import WorkerRuntime
from imageblur.logs import get_logger

log = get_logger(__name__)


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
    error: str | None


class PictureList(BaseModel):
    items: list[Picture]
    total: int
    limit: int
    offset: int
    next: str | None


class Error(BaseModel):
    error: str
    message: str


def picture(record: ImageRecord, root: str = "") -> Picture:
    return Picture(
        id=record.id,
        name=record.name,
        status=record.status.value,
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
    )


def error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": code, "message": message}, status_code=status, headers=headers or None
    )


_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image (JPEG, PNG or WebP): a multipart part named `image`, "
        "or the raw bytes with an image/* Content-Type.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
            **{
                ct: {"schema": {"type": "string", "format": "binary"}}
                for ct in imaging.SUPPORTED_CONTENT_TYPES
            },
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Error} for code in (400, 401, 404, 409, 413, 415, 422, 503)
}


def create_app(settings: Settings, *, run_worker: bool = False) -> FastAPI:
    """The API alone (`api`), or with the worker in the same process (`serve`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        container = await run_in_threadpool(build, settings, with_detector=run_worker)
        runtime = WorkerRuntime(container) if run_worker else None
        if runtime is not None:
            runtime.start()
        app.state.container = container
        log.info("api.started", host=settings.host, port=settings.port, worker=run_worker)
        try:
            yield
        finally:
            if runtime is not None:
                await run_in_threadpool(runtime.stop)
            await run_in_threadpool(container.close)
            log.info("api.stopped")

    app = FastAPI(
        title="imageblur",
        version=__version__,
        description="Upload a picture; get it back with every face blurred.",
        lifespan=lifespan,
        root_path=settings.root_path,
    )

    def root(request: Request) -> str:
        """The proxy prefix (IMAGEBLUR_ROOT_PATH), for the URLs we hand out."""
        return str(request.scope.get("root_path", "")).rstrip("/")

    def services(request: Request) -> Container:
        container: Container = request.app.state.container
        return container

    @app.exception_handler(InvalidImage)
    async def _invalid(_: Request, exc: InvalidImage) -> JSONResponse:
        return error(exc.http_status, exc.code, exc.message)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return error(404, "not_found", str(exc))

    @app.exception_handler(NotReady)
    async def _not_ready(_: Request, exc: NotReady) -> JSONResponse:
        return error(409, "not_ready", str(exc))

    @app.exception_handler(BackendUnavailable)
    async def _unavailable(_: Request, exc: BackendUnavailable) -> JSONResponse:
        log.warning("backend.unavailable", backend=exc.backend, error=str(exc))
        return error(
            503,
            "unavailable",
            f"the {exc.backend} is unavailable; retry later",
            **{"Retry-After": "5"},
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return error(422, "invalid_request", details or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("http.internal_error", path=request.url.path)
        return error(500, "internal_error", "internal error; it has been logged")

    token = settings.api_token.get_secret_value().encode() if settings.api_token else None
    public = {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}

    # Added before the logging middleware, so it runs inside it: a refused request is
    # logged, and answered before its body is read.
    @app.middleware("http")
    async def _require_token(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if token is None:
            return await call_next(request)
        path = request.url.path
        prefix = settings.root_path.rstrip("/")
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        if path in public:
            return await call_next(request)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            return error(
                401,
                "unauthorized",
                "send the API token as 'Authorization: Bearer <token>'",
                **{"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)

    @app.middleware("http")
    async def _log_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        if request.url.path not in ("/healthz", "/readyz"):
            log.info(
                "http.request",
                method=request.method,
                path=request.url.path,
                status=response.status_code,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
        return response

    # An upload waits for a check slot (IMAGEBLUR_MAX_CONCURRENT_CHECKS) inside a thread
    # of the shared pool (40 threads), and holds its body in memory. A burst of uploads
    # would otherwise hold every thread, starving reads, deletes and /readyz (every pod
    # unready at once), and memory without bound; past this many uploads in hand the
    # API answers 503 at once instead.
    max_in_hand = 4 * settings.max_concurrent_checks
    in_hand = 0

    async def _accept_upload(
        request: Request, filename: str | None, idempotency_key: str | None
    ) -> ImageRecord:
        max_bytes = settings.max_upload_bytes
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            data, name = await read_multipart(request, max_bytes=max_bytes)
        elif content_type.startswith("image/") or content_type == "application/octet-stream":
            data, name = await read_raw(request, max_bytes=max_bytes), filename
        else:
            raise InvalidImage(
                "send multipart/form-data with a file part named 'image', "
                "or the raw image with an image/* Content-Type",
                http_status=415,
                code="unsupported_media_type",
            )
        record: ImageRecord = await run_in_threadpool(
            services(request).images.submit, data, name=name, idempotency_key=idempotency_key
        )
        return record

    @app.post(
        "/picture",
        status_code=202,
        response_model=Picture,
        responses=_ERRORS,
        openapi_extra=_UPLOAD_BODY,
        summary="Upload a picture to anonymize",
    )
    async def post_picture(
        request: Request,
        filename: Annotated[str | None, Query(max_length=255)] = None,
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
        ] = None,
    ) -> JSONResponse:
        nonlocal in_hand
        if in_hand >= max_in_hand:
            raise Overloaded("too many uploads are in hand; retry shortly")
        # Counted from before the body is read: each upload in hand holds up to
        # IMAGEBLUR_MAX_UPLOAD_BYTES of memory, so the gate bounds that memory too.
        in_hand += 1  # the event loop's thread only: no lock needed
        try:
            record = await _accept_upload(request, filename, idempotency_key)
        finally:
            in_hand -= 1
        return JSONResponse(
            picture(record, root(request)).model_dump(mode="json"),
            status_code=202,
            headers={"Location": f"{root(request)}/picture/{record.id}"},
        )

    @app.get("/picture/{image_id}", response_model=Picture, responses=_ERRORS)
    async def get_picture(request: Request, image_id: str) -> Picture:
        record = await run_in_threadpool(services(request).images.get, image_id)
        return picture(record, root(request))

    @app.get(
        "/picture/{image_id}/image",
        responses={200: {"content": {ct: {} for ct in imaging.SUPPORTED_CONTENT_TYPES}}, **_ERRORS},
        response_class=Response,
        summary="The anonymized picture (never the original)",
    )
    async def get_picture_image(request: Request, image_id: str) -> Response:
        result = await run_in_threadpool(services(request).images.result, image_id)
        if result.redirect_url is not None:
            return RedirectResponse(result.redirect_url, status_code=307)
        assert result.data is not None
        ascii_name = result.name.encode("ascii", "ignore").decode().replace('"', "") or "image"
        return Response(
            result.data,
            media_type=result.content_type,
            headers={
                "Content-Disposition": f'inline; filename="{ascii_name}"',
                "Cache-Control": "private, max-age=3600",
            },
        )

    @app.get("/pictures", response_model=PictureList, responses=_ERRORS)
    async def list_pictures(
        request: Request,
        limit: Annotated[int, Query(ge=1)] = 20,
        offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    ) -> PictureList:
        limit = min(limit, settings.page_size_max)
        records, total = await run_in_threadpool(
            services(request).images.list, limit=limit, offset=offset
        )
        nxt = offset + len(records)
        return PictureList(
            items=[picture(r, root(request)) for r in records],
            total=total,
            limit=limit,
            offset=offset,
            next=f"{root(request)}/pictures?limit={limit}&offset={nxt}" if nxt < total else None,
        )

    @app.delete("/picture/{image_id}", status_code=204, responses=_ERRORS)
    async def delete_picture(request: Request, image_id: str) -> Response:
        await run_in_threadpool(services(request).images.delete, image_id)
        return Response(status_code=204)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Every back end is reachable", responses={503: {}})
    async def readyz(request: Request) -> JSONResponse:
        checks = await run_in_threadpool(services(request).images.check)
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

    return app
