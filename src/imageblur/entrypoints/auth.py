"""The API token check: a small pure-ASGI middleware.

It sits inside the access log (so a refused request is logged) and answers 401 before
the request's body is read.
"""

from __future__ import annotations

import hmac

from starlette.datastructures import URL, Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from imageblur.entrypoints.errors import error_response

# Probes and the API description stay open: an orchestrator has no token.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)


class BearerTokenMiddleware:
    """Every HTTP request except to `public_paths` (or under `public_prefixes`) must carry
    `Authorization: Bearer <token>`; `root_path` is the proxy prefix, stripped before the
    public paths match."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        root_path: str = "",
        public_paths: frozenset[str] = PUBLIC_PATHS,
        public_prefixes: tuple[str, ...] = (),
    ) -> None:
        self._app = app
        self._token = token.encode()
        self._prefix = root_path.rstrip("/")
        self._public = public_paths
        self._public_prefixes = public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self._app(scope, receive, send)
            return
        response = error_response(
            401,
            "unauthorized",
            "send the API token as 'Authorization: Bearer <token>'",
            **{"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        path = URL(scope=scope).path
        if self._prefix and path.startswith(self._prefix):
            path = path[len(self._prefix) :]
        if path in self._public or path.startswith(self._public_prefixes):
            return True
        scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self._token
        )
