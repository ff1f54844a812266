"""The web page's security policy, and that its files travel in the package."""

from __future__ import annotations

import tomllib

import pytest

from imageblur.config import Settings
from imageblur.entrypoints.middleware.page_headers import content_security_policy, store_origins
from imageblur.entrypoints.page import WEB_DIR
from support import REPO


def directives(policy: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in policy.split("; ")}


def test_the_policy_allows_this_origin_and_blobs_only() -> None:
    policy = directives(content_security_policy(Settings()))
    assert policy["default-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "blob:"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["media-src"] == ["'self'"]  # a video's result, from its playback URL
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]


def test_proxied_results_need_no_store_origin() -> None:
    assert store_origins(Settings(store="s3", result_delivery="proxy")) == []


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("path", ["http://127.0.0.1:9000"]),
        ("virtual", ["http://results.127.0.0.1:9000"]),
        ("auto", ["http://127.0.0.1:9000", "http://results.127.0.0.1:9000"]),
    ],
)
def test_presigned_results_allow_the_store_origin(style: str, expected: list[str]) -> None:
    settings = Settings(
        store="s3",
        result_delivery="presigned",
        s3_endpoint_url="http://127.0.0.1:9000/",
        s3_output_bucket="results",
        s3_addressing_style=style,
    )
    assert store_origins(settings) == expected
    policy = directives(content_security_policy(settings))
    assert policy["img-src"] == ["'self'", "blob:", *expected]
    assert policy["connect-src"] == ["'self'", *expected]
    assert policy["media-src"] == ["'self'", *expected]  # a video's presigned playback URL


def test_presigned_results_on_aws_allow_the_bucket_hosts() -> None:
    settings = Settings(
        store="s3", result_delivery="presigned", s3_region="eu-west-1", s3_output_bucket="out"
    )
    assert store_origins(settings) == [
        "https://s3.eu-west-1.amazonaws.com",
        "https://out.s3.eu-west-1.amazonaws.com",
        "https://out.s3.amazonaws.com",
    ]


def test_every_page_file_is_package_data() -> None:
    """The wheel (and so the container image) carries every file of the page."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["imageblur"]
    package = WEB_DIR.parents[1]
    packaged = {path for pattern in patterns for path in package.glob(pattern)}  # as setuptools
    files = {path for path in WEB_DIR.rglob("*") if path.is_file()}
    assert files
    assert files - packaged == set()


def test_the_scripts_never_write_html() -> None:
    """User text (file names, server messages) goes in as text: no HTML sinks at all."""
    sinks = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(")
    for script in (WEB_DIR / "js").glob("*.js"):
        text = script.read_text()
        assert not [s for s in sinks if s in text], script.name
