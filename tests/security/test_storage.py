"""Storage that forgets, and the smaller guarantees: buckets that would keep what we
delete (versioning, object lock) are refused against a real S3 server (moto), and with
`IMAGEBLUR_S3_DELETE_ALL_VERSIONS` a processed picture leaves no version behind; SQLite
overwrites deleted rows; an `Idempotency-Key` sent again with another body answers 409;
the API docs are off by default."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

import servers
from imageblur.adapters.s3_store import S3ObjectStore
from imageblur.adapters.sqlite_repo import SqliteImageRepository
from imageblur.domain import StoreRefused
from records import pending_picture
from support import jpeg_bytes, run_server, wait_until

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

JPEG = "image/jpeg"


@pytest.fixture(scope="module")
def moto_server() -> Iterator[servers.MotoServer]:
    server = servers.MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3(moto_server: servers.MotoServer) -> Iterator[S3Client]:
    client = moto_server.client()
    yield client
    client.close()


def new_bucket(s3: S3Client, *, versioning: str | None = None, lock: bool = False) -> str:
    """A bucket of its own: versioning `Enabled` or `Suspended`, or with object lock."""
    name = servers.unique("b").replace("_", "-")
    if lock:
        s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    else:
        s3.create_bucket(Bucket=name)
    if versioning is not None:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning})
    return name


def store(server: servers.MotoServer, bucket: str, *, delete_all_versions: bool) -> S3ObjectStore:
    return S3ObjectStore(
        bucket=bucket,
        prefix="p/",
        endpoint_url=server.endpoint_url,
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        addressing_style="path",
        create_bucket=False,
        timeout_s=5,
        delete_all_versions=delete_all_versions,
    )


def left_behind(s3: S3Client, bucket: str) -> list[tuple[str, str]]:
    """Every version and delete marker in the bucket, as (kind, key)."""
    answer: dict[str, Any] = dict(s3.list_object_versions(Bucket=bucket))
    versions = [("version", v["Key"]) for v in answer.get("Versions", [])]
    return versions + [("marker", m["Key"]) for m in answer.get("DeleteMarkers", [])]


# --- the store: refused buckets, deletes that remove every version -------------------------


@pytest.mark.parametrize("versioning", ["Enabled", "Suspended"])
def test_a_versioned_bucket_is_refused_without_the_switch(
    moto_server: servers.MotoServer, s3: S3Client, versioning: str
) -> None:
    bucket = new_bucket(s3, versioning=versioning)
    refused = store(moto_server, bucket, delete_all_versions=False)
    with pytest.raises(StoreRefused, match="IMAGEBLUR_S3_DELETE_ALL_VERSIONS"):
        refused.put("a.jpg", b"original", content_type=JPEG)  # at first use
    with pytest.raises(StoreRefused, match="versioning"):
        refused.check()  # and in the readiness probe
    assert left_behind(s3, bucket) == []  # nothing was written


def test_an_object_locked_bucket_is_refused_even_with_the_switch(
    moto_server: servers.MotoServer, s3: S3Client
) -> None:
    bucket = new_bucket(s3, lock=True)
    for switch in (False, True):
        refused = store(moto_server, bucket, delete_all_versions=switch)
        with pytest.raises(StoreRefused, match="object lock"):
            refused.check()
        with pytest.raises(StoreRefused, match="object lock"):
            refused.put("a.jpg", b"original", content_type=JPEG)
    assert left_behind(s3, bucket) == []


def test_with_the_switch_a_delete_removes_every_version_and_marker(
    moto_server: servers.MotoServer, s3: S3Client
) -> None:
    bucket = new_bucket(s3, versioning="Enabled")
    versioned = store(moto_server, bucket, delete_all_versions=True)
    versioned.check()
    versioned.put("a.jpg", b"one", content_type=JPEG)
    versioned.put("a.jpg", b"two", content_type=JPEG)
    s3.delete_object(Bucket=bucket, Key="p/a.jpg")  # a marker, as an older release left
    versioned.put("a.jpg", b"three", content_type=JPEG)
    versioned.put("a.jpg.b", b"a longer key", content_type=JPEG)  # shares the prefix
    assert ("marker", "p/a.jpg") in left_behind(s3, bucket)

    versioned.delete("a.jpg")
    assert left_behind(s3, bucket) == [("version", "p/a.jpg.b")]
    assert not versioned.exists("a.jpg")
    versioned.delete("a.jpg")  # absent: still not an error


def test_versioning_switched_on_while_running_is_refused_from_the_next_probe(
    moto_server: servers.MotoServer, s3: S3Client
) -> None:
    bucket = new_bucket(s3)
    plain = store(moto_server, bucket, delete_all_versions=False)
    plain.put("a.jpg", b"one", content_type=JPEG)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    with pytest.raises(StoreRefused):
        plain.check()
    with pytest.raises(StoreRefused):
        plain.put("b.jpg", b"two", content_type=JPEG)

    allowed = store(moto_server, bucket, delete_all_versions=True)
    allowed.put("c.jpg", b"three", content_type=JPEG)
    allowed.delete("c.jpg")
    assert ("version", "p/c.jpg") not in left_behind(s3, bucket)


# --- through the service: refused at start, nothing left after processing ---------------


def s3_env(server: servers.MotoServer, originals: str, results: str) -> dict[str, str]:
    return {
        **server.env(),
        "IMAGEBLUR_STORE": "s3",
        "IMAGEBLUR_S3_INPUT_BUCKET": originals,
        "IMAGEBLUR_S3_OUTPUT_BUCKET": results,
    }


def test_the_api_is_not_ready_and_stores_nothing_on_a_versioned_bucket(
    moto_server: servers.MotoServer, s3: S3Client, tmp_path: Path
) -> None:
    originals, results = new_bucket(s3, versioning="Enabled"), new_bucket(s3, lock=True)
    env = s3_env(moto_server, originals, results)
    with run_server(tmp_path / "data", command="api", env=env) as srv, srv.client() as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["originals"] == "unavailable"
        assert ready.json()["checks"]["results"] == "unavailable"
        upload = client.post("/picture", files={"image": ("a.jpg", jpeg_bytes())})
        assert upload.status_code == 503 and upload.json()["error"] == "unavailable"
        assert "IMAGEBLUR_S3_DELETE_ALL_VERSIONS" in srv.logs()  # the reason, for operators
    assert left_behind(s3, originals) == []


def test_with_the_switch_a_processed_picture_leaves_no_version_behind(
    moto_server: servers.MotoServer, s3: S3Client, tmp_path: Path
) -> None:
    originals, results = new_bucket(s3, versioning="Enabled"), new_bucket(s3, versioning="Enabled")
    env = {**s3_env(moto_server, originals, results), "IMAGEBLUR_S3_DELETE_ALL_VERSIONS": "true"}
    with run_server(tmp_path / "data", env=env) as srv, srv.client() as client:
        assert client.get("/readyz").status_code == 200
        created = client.post("/picture", files={"image": ("a.jpg", jpeg_bytes())})
        assert created.status_code == 202, created.text
        image_id = created.json()["id"]
        assert srv.wait_done(client, image_id)["status"] == "done"
        # The original is deleted once processed (just after the record reads done): no
        # version, no delete marker.
        wait_until(lambda: left_behind(s3, originals) == [], what="the original deleted")
        assert [kind for kind, _ in left_behind(s3, results)] == ["version"]
        assert client.delete(f"/picture/{image_id}").status_code == 204
        assert left_behind(s3, results) == []


# --- SQLite overwrites what it deletes ---------------------------------------------------


def test_a_deleted_record_leaves_no_trace_in_the_sqlite_file(tmp_path: Path) -> None:
    repo = SqliteImageRepository(tmp_path / "meta.sqlite3")
    repo.migrate()
    now = datetime.now(UTC)
    names = [f"holiday-of-person-{i}-{uuid.uuid4().hex}.jpg" for i in range(3)]
    for name in names:
        repo.add(pending_picture(at=now, name=name))
    gone = repo.list(limit=10)[1]
    assert repo.delete(gone.id) is not None  # the record and its history
    repo.close()  # the last connection checkpoints the WAL into the file
    at_rest = b"".join(path.read_bytes() for path in tmp_path.iterdir())
    assert gone.name.encode() not in at_rest and gone.id.encode() not in at_rest
    assert all(name.encode() in at_rest for name in names if name != gone.name)


# --- the smaller guarantees --------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    data = tmp_path_factory.mktemp("api") / "data"
    with run_server(data, command="api") as srv, srv.client() as client:
        yield client


def test_an_idempotency_key_reused_with_another_body_answers_409(api: httpx.Client) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = api.post("/picture", files={"image": ("a.jpg", jpeg_bytes())}, headers=key)
    assert first.status_code == 202
    retry = api.post("/picture", files={"image": ("a.jpg", jpeg_bytes())}, headers=key)
    assert retry.status_code == 202 and retry.json()["id"] == first.json()["id"]
    for name, data in (("a.jpg", jpeg_bytes(seed=7)), ("b.jpg", jpeg_bytes())):
        reused = api.post("/picture", files={"image": (name, data)}, headers=key)
        assert reused.status_code == 409, reused.text
        assert reused.json()["error"] == "idempotency_key_reused"
    assert api.get("/pictures").json()["total"] == 1


def test_the_api_docs_are_off_by_default(api: httpx.Client) -> None:
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert api.get(path).status_code == 404, path
    assert api.get("/openapi.json").status_code == 200


def test_the_api_docs_are_served_when_switched_on(tmp_path: Path) -> None:
    env = {"IMAGEBLUR_API_DOCS": "true"}
    with run_server(tmp_path / "data", command="api", env=env) as srv, srv.client() as client:
        for path in ("/docs", "/redoc"):
            assert client.get(path).status_code == 200, path


def test_a_failed_picture_shows_a_short_error_and_its_code(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with run_server(data, command="api") as srv, srv.client() as client:
        created = client.post("/picture", files={"image": ("a.jpg", jpeg_bytes())})
        assert created.status_code == 202
        image_id = created.json()["id"]
    for original in (data / "originals").glob(f"{image_id}*"):
        original.unlink()  # lost before any worker took the job
    with run_server(data) as srv, srv.client() as client:
        failed = srv.wait_done(client, image_id)
        assert failed["status"] == "failed"
        assert failed["error_code"] == "original_missing"
        assert failed["error"] == "the original is missing from the store"
        # The details are in the worker's log line, under the upload's request id.
        lines = [json.loads(line) for line in srv.logs().splitlines() if line.startswith("{")]
        [logged] = [e for e in lines if e["event"] == "job.failed" and e["image_id"] == image_id]
        assert logged["code"] == "original_missing" and image_id in logged["reason"]
        assert logged["request_id"] == created.json()["request_id"]
