"""GET /metrics: the process's Prometheus metrics, on the API's own port.

Open like /healthz (the API token does not cover it: Prometheus has its own
credentials), unless `IMAGEBLUR_METRICS_TOKEN` is set, which then guards it alone.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from imageblur.bootstrap import Container
from imageblur.entrypoints.errors import error_response
from imageblur.entrypoints.metrics_server import bearer_ok

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    container: Container = request.app.state.container
    token = container.settings.metrics_token
    if token is not None and not bearer_ok(
        request.headers.get("authorization", ""), token.get_secret_value()
    ):
        return error_response(
            401,
            "unauthorized",
            "send the metrics token as 'Authorization: Bearer <token>'",
            **{"WWW-Authenticate": "Bearer"},
        )
    # In the thread pool: the picture gauges may read the database.
    body = await run_in_threadpool(generate_latest, container.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
