"""Every text that names the accepted formats names all of them (imaging.FORMATS): the 415
answer, the OpenAPI description, and GET /limits, from which the web page takes them (it
names none itself). The limits in messages are in MB and megapixels."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from imageblur import imaging
from imageblur.config import load_settings
from imageblur.entrypoints.api import create_app
from imageblur.entrypoints.page import WEB_DIR

# "jpeg", "png", "webp", "heic", "avif": each accepted format by its media subtype.
SUBTYPES = [fmt.content_type.removeprefix("image/") for fmt in imaging.FORMATS]


def _missing(text: str) -> list[str]:
    return [name for name in SUBTYPES if name not in text.lower()]


async def _ask(tmp_path: Path) -> tuple[httpx.Response, dict[str, Any]]:
    app = create_app(load_settings(data_dir=tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
        answer = await client.post("/picture", content=gif, headers={"Content-Type": "image/gif"})
        return answer, (await client.get("/openapi.json")).json()


def test_the_415_answer_and_the_openapi_text_name_every_accepted_format(tmp_path: Path) -> None:
    answer, openapi = asyncio.run(_ask(tmp_path))
    assert answer.status_code == 415
    assert answer.json()["error"] == "unsupported_media_type"
    assert _missing(answer.json()["message"]) == []
    upload = openapi["paths"]["/picture"]["post"]
    assert _missing(upload["responses"]["415"]["description"]) == []
    assert _missing(upload["requestBody"]["description"]) == []


def test_the_page_takes_the_formats_from_the_server() -> None:
    # One list: the page's files name no format; js/limits.js shows GET /limits' list.
    files = [WEB_DIR / "index.html", *sorted((WEB_DIR / "js").glob("*.js"))]
    for path in files:
        text = path.read_text()
        for listing in ("JPEG, PNG", "image/heic", ".heic", "image/avif"):
            assert listing not in text, f"{path.name} lists formats: {listing}"


async def _limits_and_refusals(tmp_path: Path) -> list[httpx.Response]:
    settings = load_settings(
        data_dir=tmp_path,
        api_token="limits-test-token-0123456789",
        max_upload_bytes=1_500_000,
        max_pixels=2_000_000,
        video=False,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    auth = {"Authorization": "Bearer limits-test-token-0123456789"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        too_large = b"\xff\xd8\xff" + b"\0" * 1_600_000
        wide = _png(2000, 1200)
        return [
            await client.get("/limits"),  # no token: public
            await client.post("/picture", files={"image": ("a.jpg", too_large)}, headers=auth),
            await client.post("/picture", files={"image": ("b.png", wide)}, headers=auth),
        ]


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, "PNG")
    return out.getvalue()


def test_the_limits_are_public_and_the_refusals_speak_mb_and_megapixels(tmp_path: Path) -> None:
    limits, too_large, too_many_pixels = asyncio.run(_limits_and_refusals(tmp_path))
    assert limits.status_code == 200
    body = limits.json()
    assert body["max_upload_bytes"] == 1_500_000 and body["max_pixels"] == 2_000_000
    assert body["videos"] is None  # IMAGEBLUR_VIDEO off: the page offers no videos
    assert [f["content_types"][0] for f in body["formats"]] == list(imaging.SUPPORTED_CONTENT_TYPES)
    assert _missing(body["accepted"]) == []
    assert _missing(" ".join(e for f in body["formats"] for e in f["extensions"])) == []
    # The picture's own limit, not the multipart allowance around it.
    assert too_large.status_code == 413
    assert too_large.json()["message"] == (
        "the upload is larger than 1.5 MB, the most this server accepts"
    )
    assert too_many_pixels.status_code == 413
    assert too_many_pixels.json()["message"] == (
        "the image is 2000 x 1200 pixels (2.4 megapixels); this server accepts at most 2 megapixels"
    )
