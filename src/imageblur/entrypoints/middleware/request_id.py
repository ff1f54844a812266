"""Request ids: a small pure-ASGI middleware, the outermost one.

A client's `X-Request-ID` is kept if it is short and plain (at most 128 of
`A-Z a-z 0-9 . _ -`); otherwise, or without one, a new id is made. The id is returned
on every response, bound into every log line of the request, and handed to the routes
(`request.state.request_id`), which store it with an upload and send it with its job.
"""

from __future__ import annotations

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageblur.domain import is_request_id, new_request_id
from imageblur.logs import get_logger

log = get_logger("imageblur.entrypoints.api")

HEADER = "X-Request-ID"


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        given = Headers(scope=scope).get(HEADER)
        request_id = given if given is not None and is_request_id(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            if given is not None and given != request_id:
                # Never the value itself: it may be long, or made to forge log lines.
                log.info("http.request_id_replaced", given_chars=len(given))
            await self._app(scope, receive, send_with_id)


def request_id_of(scope: Scope) -> str | None:
    """The id the middleware gave this request (None outside it, as in unit tests)."""
    value = (scope.get("state") or {}).get("request_id")
    return value if isinstance(value, str) else None
