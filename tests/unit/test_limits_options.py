"""GET /limits says which options a picture's upload may carry (IMAGEBLUR_ALLOWED_OPTIONS)
and the server's own choices: the web page offers only those (js/upload_choices.js)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from imageblur.config import load_settings
from imageblur.entrypoints.api import create_app


async def _limits(tmp_path: Path, **settings: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    app = create_app(load_settings(data_dir=tmp_path, **settings))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        limits = await client.get("/limits")
        assert limits.status_code == 200
        return limits.json(), (await client.get("/openapi.json")).json()


def test_the_limits_name_the_allowed_options_and_the_server_defaults(tmp_path: Path) -> None:
    body, openapi = asyncio.run(_limits(tmp_path))
    assert body["options"] == {
        "allowed": ["mode", "preset", "keep_metadata", "hide", "review", "callback_url"],
        "modes": ["blur", "pixelate", "solid"],
        "metadata_groups": ["gps", "datetime", "camera_settings", "copyright"],
        "mode": "blur",
        "keep_metadata": [],
        "max_rectangles": 100,
    }
    schema = openapi["components"]["schemas"]["OptionLimits"]
    assert set(schema["properties"]) == set(body["options"])


def test_the_limits_follow_the_operator(tmp_path: Path) -> None:
    body, _ = asyncio.run(
        _limits(
            tmp_path,
            allowed_options="hide,ignore",
            blur_mode="pixelate",
            keep_metadata="copyright,gps",
        )
    )
    options = body["options"]
    assert options["allowed"] == ["hide", "ignore"]
    assert options["mode"] == "pixelate"
    assert options["keep_metadata"] == ["gps", "copyright"]
