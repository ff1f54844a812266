"""With IMAGEBLUR_RESULT_DELIVERY=presigned the page's fetch of a result is redirected to
the object store (a moto S3 server on another port, so another origin): the policy allows
that origin, and the token is not sent there."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from browser.conftest import Page
from servers import MotoServer, unique
from support import LINUS, Server, run_server

TOKEN = "presigned-test-token-0123456789"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


OUTPUT_BUCKET = unique("output").replace("_", "-")  # a name real S3 (and moto's CORS) takes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, moto: MotoServer) -> Iterator[Server]:
    env = {
        **moto.env(),
        "IMAGEBLUR_STORE": "s3",
        "IMAGEBLUR_S3_INPUT_BUCKET": unique("input"),
        "IMAGEBLUR_S3_OUTPUT_BUCKET": OUTPUT_BUCKET,
        "IMAGEBLUR_S3_CREATE_BUCKETS": "true",  # the input bucket
        "IMAGEBLUR_RESULT_DELIVERY": "presigned",
        "IMAGEBLUR_API_TOKEN": TOKEN,
    }
    with run_server(tmp_path_factory.mktemp("browser-presigned") / "data", env=env) as srv:
        allow_page_origin(moto, srv.url)
        yield srv


def allow_page_origin(moto: MotoServer, origin: str) -> None:
    """The CORS rule docs/operations.md asks for on the results bucket."""
    s3 = moto.client()
    s3.create_bucket(Bucket=OUTPUT_BUCKET)  # the server creates it on first use: maybe later
    rule = {"AllowedOrigins": [origin], "AllowedMethods": ["GET"], "MaxAgeSeconds": 3600}
    s3.put_bucket_cors(Bucket=OUTPUT_BUCKET, CORSConfiguration={"CORSRules": [rule]})


def test_a_presigned_result_is_shown(page: Page, server: Server, moto: MotoServer) -> None:
    page.allow_console("status of 401")
    page.open()
    page.visible("#token-input").send_keys(TOKEN)
    page.find("#token-save").click()
    page.find("#file-input").send_keys(str(LINUS))
    image = page.visible("#uploads .card[data-status=done] .thumb img")
    page.wait(lambda: page.image_loaded(image), what="presigned result shown")
    # ... and it came from the store, through the API's redirect.
    image_id = page.find("#uploads .card").get_attribute("data-id")
    answer = httpx.get(
        f"{server.url}/picture/{image_id}/image", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 307
    assert answer.headers["location"].startswith(moto.endpoint_url)
