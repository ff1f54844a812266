"""The web page for people: `/` and its static files under `/web/`, served from the package.

No build step and no other host: plain HTML, CSS and JavaScript modules in `web/`, with
relative URLs so that the page works under IMAGEBLUR_ROOT_PATH. The page and its files are
public like /healthz (they hold no data); the API calls the page makes carry the token.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from imageblur.config import Settings
from imageblur.entrypoints.middleware.page_headers import PageHeaders

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC_PREFIX = "/web/"
# The page's own paths (relative to the root path), which need no token: they hold no data.
PUBLIC_PATHS = frozenset({"", "/"})
PUBLIC_PREFIXES = (STATIC_PREFIX,)


async def _index(scope: Scope, receive: Receive, send: Send) -> None:
    await FileResponse(WEB_DIR / "index.html", media_type="text/html")(scope, receive, send)


def mount(app: FastAPI, settings: Settings) -> None:
    """Serve the page at `/` and its files at `/web/`, with the page's security headers."""
    index = PageHeaders(_index, settings)
    app.router.routes.append(Route("/", index, methods=["GET", "HEAD"], include_in_schema=False))
    app.mount(
        STATIC_PREFIX.rstrip("/"),
        PageHeaders(StaticFiles(directory=WEB_DIR), settings),
        name="web",
    )
