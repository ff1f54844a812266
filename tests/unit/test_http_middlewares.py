"""The HTTP middlewares in one app (entrypoints/middleware/): their order, as
docs/architecture.md gives it; a request that ends in a bug (500) still carries its
request id and is counted; every request counts under its route template."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import httpx
import pytest

from imageblur.config import load_settings
from imageblur.entrypoints.api import create_app


def test_the_middlewares_run_in_the_documented_order(tmp_path: Path) -> None:
    # Outermost first: a request refused by the Host or token check is still logged,
    # counted and given its id; HEAD is turned into GET only for the routes; the body's
    # rate floor wraps only what the routes read.
    app = create_app(load_settings(data_dir=tmp_path, api_token="t" * 20))
    assert [getattr(m.cls, "__name__", "") for m in app.user_middleware] == [
        "RequestIdMiddleware",
        "AccessLogMiddleware",
        "HttpMetricsMiddleware",
        "TrustedHostMiddleware",
        "BearerTokenMiddleware",
        "HeadAsGetMiddleware",
        "BodyDeadlineMiddleware",
    ]


async def _request_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[httpx.Response, str]:
    app = create_app(load_settings(data_dir=tmp_path))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):

        def broken(image_id: str) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(app.state.container.images, "get", broken)
        answer = await client.get("/picture/" + "a" * 32, headers={"X-Request-ID": "bug-1"})
        metrics = (await client.get("/metrics")).text
    return answer, metrics


def test_an_internal_error_is_answered_with_its_request_id_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer, metrics = asyncio.run(_request_a_bug(tmp_path, monkeypatch))
    assert answer.status_code == 500
    assert answer.json()["error"] == "internal_error"
    assert answer.headers["x-request-id"] == "bug-1"
    line = 'imageblur_http_requests_total{method="GET",route="/picture/{image_id}",status="500"}'
    assert f"{line} 1.0" in metrics


async def _requests(tmp_path: Path, calls: list[tuple[str, str]]) -> str:
    app = create_app(load_settings(data_dir=tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
    ):
        for method, path in calls:
            await client.request(method, path)
        return (await client.get("/metrics")).text


def test_requests_count_under_their_route_template_never_the_raw_path(tmp_path: Path) -> None:
    calls = [
        ("GET", "/"),
        ("GET", "/web/style.css"),
        ("GET", "/web/no-such-file.js"),
        ("GET", "/picture/" + "b" * 32),
        ("PUT", "/picture/abc"),
        ("GET", "/no/such/route"),
    ]
    metrics = asyncio.run(_requests(tmp_path, calls))
    counted = {
        line.split("{", 1)[1].rsplit("}", 1)[0]
        for line in metrics.splitlines()
        if line.startswith("imageblur_http_requests_total{")
    }
    assert counted == {
        'method="GET",route="/",status="200"',
        'method="GET",route="/web/{path}",status="200"',
        'method="GET",route="/web/{path}",status="404"',
        'method="GET",route="/picture/{image_id}",status="404"',
        'method="PUT",route="/picture/{image_id}",status="405"',
        'method="GET",route="unmatched",status="404"',
    }


MIDDLEWARES = sorted(
    (Path(__file__).resolve().parents[2] / "src" / "imageblur" / "entrypoints" / "middleware").glob(
        "*.py"
    )
)


@pytest.mark.parametrize(
    "path", [p for p in MIDDLEWARES if p.name != "__init__.py"], ids=lambda p: p.stem
)
def test_each_middleware_module_holds_one_asgi_class(path: Path) -> None:
    classes = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)]
    calls = [
        c.name
        for c in classes
        for f in c.body
        if isinstance(f, ast.AsyncFunctionDef) and f.name == "__call__"
    ]
    assert len(calls) == 1 and len(classes) == 1, [c.name for c in classes]
