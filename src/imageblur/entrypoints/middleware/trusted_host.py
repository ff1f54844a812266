"""The Host check of an API bound to a loopback address: a small pure-ASGI middleware.

A web page from anywhere can point its own DNS name at 127.0.0.1 (DNS rebinding) and
then call a loopback API as same-origin, token-less when none is set. Its requests carry
the attacker's name in Host, so only the names this machine is known by
(IMAGEBLUR_TRUSTED_HOSTS) are answered. Not installed on other addresses: there a token
is required, and probes and proxies name the pod or service in Host.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from imageblur.entrypoints.errors import error_response
from imageblur.tokens import host_trusted


class TrustedHostMiddleware:
    """Answers 400 `untrusted_host` to an HTTP request whose Host header (port aside) is
    not one of `trusted` (see `tokens.host_trusted`), or that has none."""

    def __init__(self, app: ASGIApp, *, trusted: list[str]) -> None:
        self._app = app
        self._trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or host_trusted(
            Headers(scope=scope).get("host", ""), self._trusted
        ):
            await self._app(scope, receive, send)
            return
        response = error_response(
            400,
            "untrusted_host",
            "this API answers only the host names in IMAGEBLUR_TRUSTED_HOSTS "
            f"({', '.join(self._trusted)})",
        )
        await response(scope, receive, send)
