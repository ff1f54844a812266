"""A floor under the rate of every request body (slowloris): one that arrives slower is
answered `408 upload_too_slow`.

Uvicorn bounds neither how long a body may take nor how slowly it may come, and a body
being read holds what its route admitted it with (a picture's place in the upload gate
and its bytes in memory, a video's streamed-upload slot, a thread and the store's part
buffer). A client trickling a few bytes a second would hold them for ever; one sending
nothing is cut only by the streamed uploads' idle timeout.

The rule is Apache mod_reqtimeout's: a body has `grace_s` from the request's start, and
each `min_bytes_per_s` bytes received give it one second more. So a body must have
arrived at `min_bytes_per_s` on average, once the grace is spent; an honest client at or
above the floor is never cut, however large its body, and holding a slot costs a
client `min_bytes_per_s` of bandwidth for as long as it holds it (worst case: `grace_s
+ largest body / min_bytes_per_s`). Once the body has ended, `receive` is left alone:
a route may then wait on it for the client's disconnect.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CODE = "upload_too_slow"


class BodyTooSlow(HTTPException):
    """Raised from `receive` into the route reading the body, so the route's own cleanup
    runs (nothing stored) and the error handlers answer it. An `HTTPException`, because
    FastAPI turns any other exception out of a body it parses into `400`."""

    def __init__(self, received: int, elapsed_s: float, min_bytes_per_s: int) -> None:
        super().__init__(
            408,
            f"the request body came too slowly: {received} bytes in {elapsed_s:.0f} s, "
            f"below the floor of {min_bytes_per_s} bytes/s",
            headers={"Connection": "close"},
        )


class BodyDeadlineMiddleware:
    def __init__(self, app: ASGIApp, *, grace_s: float, min_bytes_per_s: int) -> None:
        self._app = app
        self._grace_s = grace_s
        self._min_bytes_per_s = min_bytes_per_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        body = _Body(receive, grace_s=self._grace_s, min_bytes_per_s=self._min_bytes_per_s)
        await self._app(scope, body.receive, send)


class _Body:
    def __init__(self, receive: Receive, *, grace_s: float, min_bytes_per_s: int) -> None:
        self._receive = receive
        self._grace_s = grace_s
        self._min_bytes_per_s = min_bytes_per_s
        self._loop = asyncio.get_running_loop()
        self._start = self._loop.time()
        self._received = 0
        self._ended = False

    def _deadline(self) -> float:
        return self._start + self._grace_s + self._received / self._min_bytes_per_s

    async def receive(self) -> Message:
        if self._ended:
            return await self._receive()
        try:
            async with asyncio.timeout_at(self._deadline()):
                message = await self._receive()
        except TimeoutError:
            elapsed_s = self._loop.time() - self._start
            raise BodyTooSlow(self._received, elapsed_s, self._min_bytes_per_s) from None
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            self._ended = not message.get("more_body", False)
        else:  # http.disconnect: nothing more will come
            self._ended = True
        return message
