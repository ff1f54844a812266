"""A minimal app around `stream_upload`, for the tests (no public route streams an
upload yet: `POST /video` will). It takes the API's container (`bootstrap.build`: the
originals' store, encrypted when IMAGEBLUR_ORIGINALS_KEY is set, local or S3; the slots
of IMAGEBLUR_MAX_STREAMED_UPLOADS) and answers errors with the API's handlers.

    PYTHONPATH=tests python -m uvicorn streamed_app:create --factory --port 21100
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from imageblur.bootstrap import build
from imageblur.config import Settings
from imageblur.entrypoints.errors import install_error_handlers
from imageblur.entrypoints.streamed_upload import stream_upload

FIELD = "file"
# The tests' own knob: a stalled upload is refused after this (the component's default
# is a minute).
IDLE_TIMEOUT_S = float(os.environ.get("STREAMED_IDLE_TIMEOUT_S", "60"))


def create() -> FastAPI:
    settings = Settings()
    container = build(settings, with_detector=False)
    originals, slots = container.backends.originals, container.streams

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        container.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/upload")
    async def upload(request: Request, filename: str | None = None) -> JSONResponse:
        got = await stream_upload(
            request,
            store=originals,
            key=f"streamed/{uuid.uuid4().hex}",
            max_bytes=settings.max_upload_bytes,
            slots=slots,
            field=FIELD,
            filename=filename,
            idle_timeout_s=IDLE_TIMEOUT_S,
        )
        body = {
            "key": got.key,
            "size": got.size,
            "head": got.head.hex(),
            "body_sha256": got.body_sha256,
            "filename": got.filename,
            "content_type": got.content_type,
            "fields": got.fields,
        }
        return JSONResponse(body, status_code=201)

    @app.get("/in-flight")
    async def in_flight() -> dict[str, int]:
        return {"in_flight": slots.in_flight}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    install_error_handlers(app)
    return app
