"""Bucket batches (issue 27) between S3 buckets (the moto server), through a real server
process on S3 stores: anonymized copies under the target prefix, every source object
with its ETag and bytes as they were, a repost that creates nothing, and the service's
own buckets refused as a batch's source or target."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import servers
from support import BILL, Server, jpeg_bytes, run_server, wait_until


@pytest.fixture(scope="module")
def moto() -> Iterator[servers.MotoServer]:
    server = servers.MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def buckets(moto: servers.MotoServer) -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {name: f"{name}-{tag}" for name in ("photos", "blurred", "input", "output", "missing")}


@pytest.fixture(scope="module")
def s3(moto: servers.MotoServer, buckets: dict[str, str]) -> Any:
    client = moto.client()
    for name in ("photos", "blurred"):
        client.create_bucket(Bucket=buckets[name])
    return client


@pytest.fixture(scope="module")
def server(
    moto: servers.MotoServer, buckets: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = moto.env() | {
        "IMAGEBLUR_STORE": "s3",
        "IMAGEBLUR_S3_INPUT_BUCKET": buckets["input"],
        "IMAGEBLUR_S3_OUTPUT_BUCKET": buckets["output"],
        "IMAGEBLUR_S3_CREATE_BUCKETS": "true",
        # The service's output bucket is allowed here, so that only the overlap rule
        # keeps batches out of it.
        "IMAGEBLUR_BATCH_BUCKETS": ",".join(
            buckets[n] for n in ("photos", "blurred", "output", "missing")
        ),
        "IMAGEBLUR_BATCH_PUMP_INTERVAL_S": "0.2",
    }
    data: Path = tmp_path_factory.mktemp("batches-s3") / "data"
    with run_server(data, env=env) as running:
        yield running


def _objects(s3: Any, bucket: str) -> dict[str, str]:
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: o["ETag"] for o in listed}


def test_a_batch_between_buckets(server: Server, s3: Any, buckets: dict[str, str]) -> None:
    sources = {
        "street/2026/bill-gates.jpg": BILL.read_bytes(),
        "street/2026/a.jpg": jpeg_bytes(seed=7),
        "street/readme.md": b"# not a picture",
        "other/b.jpg": jpeg_bytes(seed=8),
    }
    for key, data in sources.items():
        s3.put_object(Bucket=buckets["photos"], Key=key, Body=data)
    before = _objects(s3, buckets["photos"])
    body = {
        "source": {"bucket": buckets["photos"], "prefix": "street/"},
        "target": {"bucket": buckets["blurred"], "prefix": "anonymized/"},
    }
    with server.client() as client:
        posted = client.post("/batches", json=body)
        assert posted.status_code == 202, posted.text
        batch_id = posted.json()["id"]
        seen: dict[str, Any] = {}

        def ended() -> bool:
            seen.update(client.get(f"/batches/{batch_id}").json())
            return seen["status"] != "listing" and seen["status"] != "running"

        wait_until(ended, timeout_s=120, interval_s=0.2, what="the batch", details=server.logs)
        assert (seen["status"], seen["total"], seen["done"]) == ("done", 3, 2), seen
        assert seen["skipped"] == {"not_an_image": 1} and seen["faces"] >= 1
        again = client.post("/batches", json=body)
        assert (again.status_code, again.json()["id"]) == (200, batch_id)
    assert _objects(s3, buckets["photos"]) == before
    for key, data in sources.items():
        assert s3.get_object(Bucket=buckets["photos"], Key=key)["Body"].read() == data
    assert set(_objects(s3, buckets["blurred"])) == {
        "anonymized/2026/bill-gates.jpg",
        "anonymized/2026/a.jpg",
    }


@pytest.mark.parametrize("role", ["source", "target"])
def test_the_services_own_buckets_are_refused(
    server: Server, buckets: dict[str, str], role: str
) -> None:
    own = {"bucket": buckets["output"], "prefix": ""}
    other = {"bucket": buckets["photos"] if role == "target" else buckets["blurred"], "prefix": ""}
    body = (
        {"source": own, "target": other} if role == "source" else {"source": other, "target": own}
    )
    with server.client() as client:
        answer = client.post("/batches", json=body)
    assert (answer.status_code, answer.json()["error"]) == (422, "overlapping_locations")


@pytest.mark.parametrize("role", ["source", "target"])
def test_a_bucket_that_is_not_there_is_refused(
    server: Server, buckets: dict[str, str], role: str
) -> None:
    """Allowed by name, but not there: refused when posted (a source would list as
    empty, a target fail every write). One that goes later fails its batch
    (tests/contract/test_batch_missing.py)."""
    missing = {"bucket": buckets["missing"], "prefix": ""}
    there = {"bucket": buckets["blurred" if role == "source" else "photos"], "prefix": "m/"}
    body = (
        {"source": missing, "target": there}
        if role == "source"
        else {
            "source": there,
            "target": missing,
        }
    )
    with server.client() as client:
        answer = client.post("/batches", json=body)
        assert (answer.status_code, answer.json()["error"]) == (422, f"{role}_not_found")
        assert buckets["missing"] in answer.json()["message"]


def test_an_s3_outage_mid_batch_ends_with_every_item_written_once(
    moto: servers.MotoServer, s3: Any, buckets: dict[str, str], tmp_path: Path
) -> None:
    """S3 stops answering while the batch runs (reads of sources and writes of targets
    time out): the items wait for it instead of failing, and once it is back every
    source has exactly one anonymized copy and is left as it was."""
    photos, blurred = buckets["photos"], buckets["blurred"]
    env = moto.env() | {
        "IMAGEBLUR_STORE": "s3",
        "IMAGEBLUR_S3_INPUT_BUCKET": buckets["input"],
        "IMAGEBLUR_S3_OUTPUT_BUCKET": buckets["output"],
        "IMAGEBLUR_S3_CREATE_BUCKETS": "true",
        "IMAGEBLUR_BATCH_BUCKETS": f"{photos},{blurred}",
        "IMAGEBLUR_BATCH_PUMP_INTERVAL_S": "0.2",
        "IMAGEBLUR_S3_TIMEOUT_S": "1",
        "IMAGEBLUR_RETRY_BASE_DELAY_S": "0.2",
        "IMAGEBLUR_RETRY_MAX_DELAY_S": "0.5",
    }
    sources = {f"outage/{n:02}.jpg": jpeg_bytes(320, 240, seed=100 + n) for n in range(60)}
    for key, data in sources.items():
        s3.put_object(Bucket=photos, Key=key, Body=data)
    before = {k: e for k, e in _objects(s3, photos).items() if k.startswith("outage/")}
    body = {
        "source": {"bucket": photos, "prefix": "outage/"},
        "target": {"bucket": blurred, "prefix": "after-outage/"},
    }
    with run_server(tmp_path / "data", env=env) as srv, srv.client() as client:
        posted = client.post("/batches", json=body)
        assert posted.status_code == 202, posted.text
        url = f"/batches/{posted.json()['id']}"
        wait_until(lambda: client.get(url).json()["done"] >= 1, what="a first item done")
        moto.pause()
        try:
            wait_until(
                lambda: "batch.item_unavailable" in srv.logs(),
                what="an item to meet the outage",
                details=srv.logs,
            )
        finally:
            moto.resume()
        seen: dict[str, Any] = {}

        def ended() -> bool:
            seen.update(client.get(url).json())
            return seen["status"] not in ("listing", "running")

        wait_until(ended, timeout_s=180, interval_s=0.2, what="the batch", details=srv.logs)
    assert (seen["status"], seen["done"], seen["failed"]) == ("done", 60, 0), seen
    after = {k: e for k, e in _objects(s3, photos).items() if k.startswith("outage/")}
    assert after == before
    written = {k for k in _objects(s3, blurred) if k.startswith("after-outage/")}
    assert written == {k.replace("outage/", "after-outage/", 1) for k in sources}
