"""The HTTP API's factory: a short assembly of the lifespan, the routes, the
middlewares and the error handlers. The lifespan builds and closes the services (and,
in embedded mode, runs the worker in the same process)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from imageblur import __version__, playback
from imageblur.bootstrap import VideoParts, build
from imageblur.config import Settings
from imageblur.entrypoints import page
from imageblur.entrypoints.batch_routes import router as batch_router
from imageblur.entrypoints.errors import install_error_handlers
from imageblur.entrypoints.metrics_route import router as metrics_router
from imageblur.entrypoints.middleware.access_log import AccessLogMiddleware
from imageblur.entrypoints.middleware.auth import PUBLIC_PATHS, BearerTokenMiddleware
from imageblur.entrypoints.middleware.body_deadline import BodyDeadlineMiddleware
from imageblur.entrypoints.middleware.head import HeadAsGetMiddleware
from imageblur.entrypoints.middleware.http_metrics import HttpMetricsMiddleware
from imageblur.entrypoints.middleware.request_id import RequestIdMiddleware
from imageblur.entrypoints.middleware.trusted_host import TrustedHostMiddleware
from imageblur.entrypoints.review_routes import router as review_router
from imageblur.entrypoints.routes import router
from imageblur.entrypoints.startup import check_api, check_embedded
from imageblur.entrypoints.video_routes import router as video_router
from imageblur.entrypoints.worker import WorkerRuntime
from imageblur.logs import get_logger
from imageblur.metrics import Metrics
from imageblur.tokens import is_loopback, split_hosts

log = get_logger(__name__)


def _lifespan(
    settings: Settings,
    metrics: Metrics,
    *,
    run_worker: bool,
    on_worker_failure: Callable[[], None] | None,
    video: VideoParts | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        container = await run_in_threadpool(
            build, settings, with_detector=run_worker, metrics=metrics, video=video
        )
        container.export_picture_gauges()
        runtime = WorkerRuntime(container, on_failure=on_worker_failure) if run_worker else None
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

    return lifespan


def _playback_check(settings: Settings) -> Callable[[str, str], bool]:
    """Whether a request without a token carries a valid playback URL (`playback`)."""
    secret = settings.playback_secret()

    def signed(path: str, query: str) -> bool:
        return settings.video and playback.verify(secret, path, query, now=time.time())

    return signed


def create_app(
    settings: Settings,
    *,
    run_worker: bool = False,
    on_worker_failure: Callable[[], None] | None = None,
    video: VideoParts | None = None,
) -> FastAPI:
    """The API alone (`api`), or with the worker in the same process (`serve`), whose
    metrics then show on the API's /metrics too. `on_worker_failure`: called if one of
    the worker's threads ends on its own (`serve` then stops, exit non-zero). `video`:
    another video pipeline than `imageblur.video`'s, for IMAGEBLUR_VIDEO (a test's)."""
    check_api(settings)  # raises SettingsError: refuses to run open
    if run_worker:
        check_embedded(settings)
    metrics = Metrics()
    app = FastAPI(
        title="imageblur",
        version=__version__,
        description="Upload a picture; get it back with every face blurred.",
        lifespan=_lifespan(
            settings,
            metrics,
            run_worker=run_worker,
            on_worker_failure=on_worker_failure,
            video=video,
        ),
        root_path=settings.root_path,
        # Off by default: their pages load scripts from a CDN into the origin where the
        # web page keeps its token. The description itself (/openapi.json) stays.
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
    )
    app.include_router(router)
    app.include_router(review_router)
    app.include_router(video_router)
    app.include_router(batch_router)
    app.include_router(metrics_router)
    page.mount(app, settings)
    install_error_handlers(app)
    _add_middlewares(app, settings, metrics)
    return app


def _add_middlewares(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    # The last added runs first: request id, access log, metrics, Host check, token
    # check, HEAD, the body's rate floor, routes. So a refused request is logged and
    # counted, and every line carries its id.
    app.add_middleware(
        BodyDeadlineMiddleware,
        grace_s=settings.upload_grace_s,
        min_bytes_per_s=settings.upload_min_bytes_per_s,
    )
    app.add_middleware(HeadAsGetMiddleware)
    if settings.api_token is not None:
        app.add_middleware(
            BearerTokenMiddleware,
            tokens=settings.api_tokens(),
            reviewers=settings.reviewers(),
            root_path=settings.root_path,
            public_paths=PUBLIC_PATHS | page.PUBLIC_PATHS,
            public_prefixes=page.PUBLIC_PREFIXES,
            signed=_playback_check(settings),
        )
    if is_loopback(settings.host):
        app.add_middleware(TrustedHostMiddleware, trusted=split_hosts(settings.trusted_hosts))
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics, root_path=settings.root_path)
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(RequestIdMiddleware)
