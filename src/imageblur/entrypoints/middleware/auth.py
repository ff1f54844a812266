"""The API token check: a small pure-ASGI middleware.

It sits inside the access log (so a refused request is logged) and answers 401 before
the request's body is read.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from starlette.datastructures import URL, Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from imageblur.entrypoints.errors import error_response

# Probes, the API description and the metrics stay open: an orchestrator has no token,
# and /metrics has its own (IMAGEBLUR_METRICS_TOKEN). /limits too: the page states what
# an upload may be before the token is asked for.
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/limits",
        "/readyz",
        "/metrics",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
    }
)


ROLE_KEY = "imageblur.role"  # in the request scope: "api", "reviewer" or "playback"
REVIEWER_KEY = "imageblur.reviewer"  # in the request scope: the reviewer's name


def role_of(scope: Scope) -> str | None:
    """The role the token check gave this request; None when no token is configured (a
    local, trusted set-up: everything but the reviewer's actions is open)."""
    role = scope.get(ROLE_KEY)
    return role if isinstance(role, str) else None


def reviewer_of(scope: Scope) -> str | None:
    """The name of the reviewer whose token this request carries; None for any other."""
    name = scope.get(REVIEWER_KEY)
    return name if isinstance(name, str) and role_of(scope) == "reviewer" else None


def asked_by(scope: Scope) -> str:
    """Who sent this request, for an audit trail: a reviewer's name, else the first 8
    hex digits of the SHA-256 of its token (never the token), else `anonymous`."""
    reviewer = reviewer_of(scope)
    if reviewer is not None:
        return f"reviewer {reviewer}"
    scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
    token = given.strip()
    if scheme.lower() != "bearer" or not token or role_of(scope) is None:
        return "anonymous"
    return f"token {hashlib.sha256(token.encode()).hexdigest()[:8]}"


class BearerTokenMiddleware:
    """Every HTTP request except to `public_paths` (or under `public_prefixes`) must carry
    `Authorization: Bearer <token>`, one of `tokens` (several while one is rotated);
    `root_path` is the proxy prefix, stripped before the public paths match. A reviewer's
    token ({name: token}) is accepted everywhere too, and marks the request's role
    `reviewer` and its reviewer's name (routes check them); with `tokens` empty only the
    reviewer's actions need a token and every other request counts as role `api`.
    `signed(path, query)`: whether a request without a token carries a valid signed
    URL (a video's playback URL), which then passes as role `playback`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: list[str],
        reviewers: dict[str, str] | None = None,
        root_path: str = "",
        public_paths: frozenset[str] = PUBLIC_PATHS,
        public_prefixes: tuple[str, ...] = (),
        signed: Callable[[str, str], bool] | None = None,
    ) -> None:
        self._app = app
        self._tokens = [token.encode() for token in tokens]
        self._reviewers = [(name, token.encode()) for name, token in (reviewers or {}).items()]
        self._prefix = root_path.rstrip("/")
        self._public = public_paths
        self._public_prefixes = public_prefixes
        self._signed = signed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._public_path(scope):
            await self._app(scope, receive, send)
            return
        role, reviewer = self._role(scope)
        if role is not None:
            scope[ROLE_KEY] = role
            if reviewer is not None:
                scope[REVIEWER_KEY] = reviewer
            await self._app(scope, receive, send)
            return
        if self._signed_url(scope):
            scope[ROLE_KEY] = "playback"
            await self._app(scope, receive, send)
            return
        response = error_response(
            401,
            "unauthorized",
            "send the API token as 'Authorization: Bearer <token>'",
            **{"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)

    def _public_path(self, scope: Scope) -> bool:
        path = self._path(scope)
        return path in self._public or path.startswith(self._public_prefixes)

    def _signed_url(self, scope: Scope) -> bool:
        if self._signed is None or scope.get("method") not in ("GET", "HEAD"):
            return False
        query = scope.get("query_string", b"").decode("latin-1")
        return self._signed(self._path(scope), query)

    def _path(self, scope: Scope) -> str:
        path = URL(scope=scope).path
        if self._prefix and path.startswith(self._prefix):
            path = path[len(self._prefix) :]
        return path

    def _role(self, scope: Scope) -> tuple[str | None, str | None]:
        """(reviewer, their name), (api, None), or (None, None): refused."""
        scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
        presented = given.strip().encode() if scheme.lower() == "bearer" else b""
        # Every token is compared, whichever matches: the time taken says nothing of which.
        reviewer = None
        for name, token in self._reviewers:
            if hmac.compare_digest(presented, token):
                reviewer = name
        if reviewer is not None:
            return "reviewer", reviewer
        matched = [hmac.compare_digest(presented, token) for token in self._tokens]
        if not self._tokens or any(matched):
            return "api", None
        return None, None
