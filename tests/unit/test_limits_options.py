"""GET /limits says which options a picture's upload may carry (IMAGEBLUR_ALLOWED_OPTIONS)
and the server's own choices: the web page offers only those (js/upload_choices.js); and
whether batches run here (the page lists them only then, js/batches.js)."""

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


def test_the_limits_say_whether_batches_run_here(tmp_path: Path) -> None:
    """The page lists batches only on a server where a batch may name a location."""
    assert asyncio.run(_limits(tmp_path / "none"))[0]["batches"] is False
    roots = asyncio.run(_limits(tmp_path / "roots", batch_roots=str(tmp_path)))[0]
    assert roots["batches"] is True
    buckets = asyncio.run(_limits(tmp_path / "buckets", batch_buckets="some-bucket"))[0]
    assert buckets["batches"] is True
