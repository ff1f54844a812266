"""HTTP metrics: a small pure-ASGI middleware.

`imageblur_http_requests_total{route,method,status}` and
`imageblur_http_request_duration_seconds{route,method}` by route template (never the
raw path, whose ids would make a series per picture; `unmatched` when no route fits),
and `imageblur_uploads_rejected_total{reason}` with the error code of a refused upload.
"""

from __future__ import annotations

import json
import time

from starlette.datastructures import URL
from starlette.routing import Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageblur.metrics import Metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
_MAX_ERROR_BODY = 4096  # an error answer is a small JSON object; no more is kept


class HttpMetricsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        root_path: str = "",
        upload: tuple[str, str] = ("POST", "/picture"),
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._prefix = root_path.rstrip("/")
        self._upload = upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        before_routing = dict(scope)  # routing rewrites root_path and path_params
        method = scope["method"] if scope["method"] in METHODS else "other"
        # By path, not route: a refused token is answered before the routes are matched.
        path = URL(scope=scope).path
        if self._prefix and path.startswith(self._prefix):
            path = path[len(self._prefix) :]
        is_upload = (method, path) == self._upload
        status = 500  # unless a response starts: an exception answered outside us
        error_body = bytearray()

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif is_upload and status >= 400 and len(error_body) < _MAX_ERROR_BODY:
                error_body.extend(message.get("body", b"")[:_MAX_ERROR_BODY])
            await send(message)

        try:
            await self._app(scope, receive, send_counted)
        finally:
            route = route_template(scope, before_routing)
            m = self._metrics
            m.http_requests.labels(route=route, method=method, status=str(status)).inc()
            m.http_duration.labels(route=route, method=method).observe(
                time.perf_counter() - started
            )
            if is_upload and status >= 400:
                m.uploads_rejected.labels(reason=error_code(bytes(error_body), status)).inc()


def route_template(scope: Scope, before_routing: Scope) -> str:
    """The path template of the route that took the request, such as
    `/picture/{image_id}` (also for a 405: the path matched, the method did not), as the
    API's router left it in the scope; for the plain routes and mounts of the app (the
    web page, its files under `/web/{path}`), the one whose pattern matches; else
    `unmatched` (no route, or a request refused before routing: a missing API token)."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    for route in scope["app"].router.routes:
        if isinstance(route, Route | Mount):
            match, _ = route.matches(before_routing)
            if match is Match.FULL:
                return f"{route.path}/{{path}}" if isinstance(route, Mount) else route.path
    return UNMATCHED


def error_code(body: bytes, status: int) -> str:
    """The `error` of our JSON error answer, or the status for anything else."""
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        code = None
    return code if isinstance(code, str) and code.isidentifier() else f"http_{status}"
