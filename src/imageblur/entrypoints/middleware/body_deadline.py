"""A floor under the rate of every request body (slowloris): one that arrives slower is
answered `408 upload_too_slow`.

Uvicorn bounds neither how long a body may take nor how slowly it may come, and a body
being read holds what its route admitted it with (a picture's place in the upload gate
and its bytes in memory, a video's streamed-upload slot, a thread and the store's part
buffer). A client trickling a few bytes a second would hold them for ever; one sending
nothing is cut only by the streamed uploads' idle timeout.

The rule is Apache mod_reqtimeout's: a body has `grace_s` from the route's first read of
it (not the request's start: a route that does its own work first, a database read say,
does not spend the client's time), and each `min_bytes_per_s` bytes received give it
one second more. So a body must have
arrived at `min_bytes_per_s` on average, once the grace is spent; an honest client at or
above the floor is never cut, however large its body, and holding a slot costs a
client `min_bytes_per_s` of bandwidth for as long as it holds it (worst case: `grace_s
+ largest body / min_bytes_per_s`). Once the body has ended, `receive` is left alone:
a route may then wait on it for the client's disconnect.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageblur.entrypoints.errors import BodyTooSlow


class BodyDeadlineMiddleware:
    def __init__(self, app: ASGIApp, *, grace_s: float, min_bytes_per_s: int) -> None:
        self._app = app
        self._grace_s = grace_s
        self._min_bytes_per_s = min_bytes_per_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        start: float | None = None  # the route's first read
        received, ended = 0, False

        async def receive_in_time() -> Message:
            nonlocal start, received, ended
            if ended:
                return await receive()
            if start is None:
                start = loop.time()
            deadline = start + self._grace_s + received / self._min_bytes_per_s
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                elapsed_s = loop.time() - start
                raise BodyTooSlow(received, elapsed_s, self._min_bytes_per_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                ended = not message.get("more_body", False)
            else:  # http.disconnect: nothing more will come
                ended = True
            return message

        await self._app(scope, receive_in_time, send)
