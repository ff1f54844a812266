"""HEAD on every GET route (RFC 9110, 9.3.2): the GET's status and headers, no body.

Starlette's own routes answer HEAD, FastAPI's routes only the methods they declare; a
small pure-ASGI middleware gives every GET route its HEAD without doubling each one
(and its OpenAPI operation).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self._app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self._app({**scope, "method": "GET"}, receive, without_body)
