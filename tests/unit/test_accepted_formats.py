"""Every text that names the accepted formats names all of them (imaging.FORMATS): the 415
answer, the OpenAPI description and the web page's message."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx

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


def test_the_pages_415_message_names_every_accepted_format() -> None:
    source = (WEB_DIR / "js" / "messages.js").read_text()
    line = re.search(r"case 415:\s*return '([^']*)'", source)
    assert line is not None
    assert _missing(line.group(1)) == []
