"""The security headers of the web page: one small ASGI middleware, and the policy it sends.

The page runs with the user's API token in its memory, so its policy is strict: scripts,
styles and fetches from this origin only, nothing inline; images also from `blob:` (the
results are fetched with the token and shown as object URLs, and the "before" picture is
the user's own file); media (a video's result, played from its signed playback URL) from
this origin only. With presigned delivery the result's fetch is redirected to the object
store, and a video's playback URL is the store's, so its origin is allowed for fetches,
images and media too.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageblur.config import Settings


def store_origins(settings: Settings) -> list[str]:
    """Where a presigned result URL can point: the S3 endpoint, path or virtual-host style."""
    if settings.store != "s3" or settings.result_delivery != "presigned":
        return []
    bucket = settings.s3_output_bucket
    if settings.s3_endpoint_url:
        parts = urlsplit(settings.s3_endpoint_url)
        scheme, host = parts.scheme or "https", parts.netloc
    else:
        scheme, host = "https", f"s3.{settings.s3_region}.amazonaws.com"
    path_style = f"{scheme}://{host}"
    virtual = f"{scheme}://{bucket}.{host}"
    # boto3 picks the style ("auto") by bucket name and endpoint: allow both unless fixed.
    by_style = {"path": [path_style], "virtual": [virtual]}
    origins = by_style.get(settings.s3_addressing_style, [path_style, virtual])
    if not settings.s3_endpoint_url and settings.s3_addressing_style != "path":
        origins.append(f"https://{bucket}.s3.amazonaws.com")  # the global endpoint
    return origins


def content_security_policy(settings: Settings) -> str:
    store = "".join(f" {origin}" for origin in store_origins(settings))
    return "; ".join(
        [
            "default-src 'self'",
            f"img-src 'self' blob:{store}",
            f"connect-src 'self'{store}",
            f"media-src 'self'{store}",
            "script-src 'self'",
            "style-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class PageHeaders:
    """Adds the page's security headers to every response of the wrapped app."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.headers = {
            "Content-Security-Policy": content_security_policy(settings),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            # The page and its modules change with each release: revalidate, cheaply (ETag).
            "Cache-Control": "no-cache",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
