"""Streamed uploads (`entrypoints/streamed_upload.py`) through real HTTP: a uvicorn
process serving the component (`tests/streamed_app.py`: no public route streams yet),
on the local store and on S3 (a moto server), with and without the encryption of
originals. A large upload is stored while the server's memory stays bounded and its own
disk (TMPDIR) stays empty; the byte cap stops a body mid-stream; a client that goes
away, a malformed or short body leave nothing; past the in-flight bound, 503."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import servers
from imageblur.adapters.encrypted_store import KEY_CHECK_PREFIX, EncryptedStore
from imageblur.adapters.segmented_envelope import MAGIC
from imageblur.bootstrap import build_originals
from imageblur.config import Settings
from imageblur.domain import body_digest
from imageblur.imaging import megabytes
from support import REPO, free_port, serving, wait_until

TESTS = REPO / "tests"
APP = [sys.executable, "-m", "uvicorn", "streamed_app:create", "--factory"]

MIB = 1 << 20
GIB = 1 << 30
# The server may grow by less than this while a large upload streams through it.
RSS_BOUND = 64 * MIB
BOUNDARY = "streamedtestboundary7f3a"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
KEY = base64.b64encode(bytes(range(32))).decode()
_PATTERN = os.urandom(MIB)


@dataclass
class App:
    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]  # the app's IMAGEBLUR_ settings
    tmp_dir: Path
    log_path: Path
    moto: servers.MotoServer | None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def store(self) -> EncryptedStore:
        """The originals' store as the app builds it (opening what it seals)."""
        names = {k.removeprefix("IMAGEBLUR_").lower(): v for k, v in self.env.items()}
        return build_originals(Settings(**names))

    def objects(self) -> list[str]:
        """Every object of the originals' store, temp files and (S3) uploads in progress
        included; not the key check object the app writes at start."""
        if self.moto is None:
            folder = Path(self.env["IMAGEBLUR_DATA_DIR"]) / "originals"
            found = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        else:
            found = self._s3_objects()
        return sorted(key for key in found if not key.startswith(KEY_CHECK_PREFIX))

    def _s3_objects(self) -> list[str]:
        assert self.moto is not None
        s3, bucket = self.moto.client(), self.env["IMAGEBLUR_S3_INPUT_BUCKET"]
        listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
        pending = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return [o["Key"] for o in listed] + [f"{u['Key']} (upload in progress)" for u in pending]

    def own_disk(self) -> list[Path]:
        """What the app left in its temp folder (where Starlette spools file parts)."""
        return [p for p in self.tmp_dir.rglob("*") if p.is_file()]

    def in_flight(self) -> int:
        with self.client() as client:
            count: int = client.get("/in-flight").json()["in_flight"]
            return count

    def vm(self, field: str) -> int:
        """A memory figure of the app's process, in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} for the app")


@pytest.fixture(scope="module")
def moto_server() -> Iterator[servers.MotoServer]:
    server = servers.MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """One app on the local store, for the tests that store nothing."""
    with serve(tmp_path_factory.mktemp("plain")) as app:
        yield app


@contextmanager
def serve(
    tmp_path: Path,
    *,
    moto: servers.MotoServer | None = None,
    encrypted: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[App]:
    """The app on the local store, or on S3 with `moto`."""
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    settings = {
        "IMAGEBLUR_DATA_DIR": str(tmp_path / "data"),
        "IMAGEBLUR_STORE": "local" if moto is None else "s3",
        "IMAGEBLUR_MAX_UPLOAD_BYTES": str(64 * MIB),
        **({"IMAGEBLUR_ORIGINALS_KEY": KEY} if encrypted else {}),
        **(env or {}),
    }
    if moto is not None:
        settings |= moto.env() | {
            "IMAGEBLUR_S3_INPUT_BUCKET": f"in-{uuid.uuid4().hex[:12]}",
            "IMAGEBLUR_S3_OUTPUT_BUCKET": f"out-{uuid.uuid4().hex[:12]}",
            "IMAGEBLUR_S3_CREATE_BUCKETS": "true",
        }
    port = free_port()
    log_path = tmp_path / "app.log"
    argv = [*APP, "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, **settings, "TMPDIR": str(tmp_dir), "PYTHONPATH": str(TESTS)}
    url = f"http://127.0.0.1:{port}"
    with serving(argv, env, log_path, health_url=f"{url}/healthz", what="the app") as process:
        yield App(url, process, settings, tmp_dir, log_path, moto)


# --- bodies ------------------------------------------------------------------------------


def blocks(total: int, *, block: int = MIB) -> Iterator[bytes]:
    """`total` bytes made as they are sent: one random block, each copy numbered."""
    for i in range(-(-total // block)):
        chunk = i.to_bytes(8, "big") + _PATTERN[8:block]
        yield chunk[: total - i * block]


def part_head(name: str = "file", filename: str | None = "clip.mp4") -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\nContent-Type: video/mp4\r\n\r\n"
    ).encode()


def field(name: str, value: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def multipart(total: int, *, before: bytes = b"", after: bytes = b"") -> Iterator[bytes]:
    """A body whose file part holds `blocks(total)`, with the fields `before` and
    `after` around it."""
    yield before + part_head()
    yield from blocks(total)
    yield b"\r\n" + after + f"--{BOUNDARY}--\r\n".encode()


def digest_of(total: int, name: str | None) -> str:
    label = (name or "").encode()
    hasher = hashlib.sha256(b"%d:" % len(label) + label)
    for chunk in blocks(total):
        hasher.update(chunk)
    return hasher.hexdigest()


class OpenUpload:
    """A request whose body is sent bit by bit (chunked) and left open: the client's side
    of an upload in flight, to stop mid-body, cut, or finish."""

    def __init__(self, app: App, *, length: int | None = None) -> None:
        """`length`: a declared Content-Length (the body is then never sent)."""
        host, port = app.url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.conn.putrequest("POST", "/upload")
        self.conn.putheader("Content-Type", MULTIPART)
        if length is None:
            self.conn.putheader("Transfer-Encoding", "chunked")
        else:
            self.conn.putheader("Content-Length", str(length))
        self.conn.endheaders()

    def send(self, data: bytes) -> None:
        self.conn.send(b"%x\r\n%s\r\n" % (len(data), data))

    def finish(self) -> tuple[int, dict[str, Any]]:
        self.conn.send(b"0\r\n\r\n")
        return self.answer()

    def answer(self) -> tuple[int, dict[str, Any]]:
        response = self.conn.getresponse()
        return response.status, json.loads(response.read())

    def cut(self) -> None:
        self.conn.close()


# --- the tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_multipart_upload_is_stored_as_sent_local(tmp_path: Path, encrypted: bool) -> None:
    with serve(tmp_path, encrypted=encrypted) as app:
        _round_trip(app, encrypted=encrypted)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_multipart_upload_is_stored_as_sent_s3(
    tmp_path: Path, moto_server: servers.MotoServer, encrypted: bool
) -> None:
    with serve(tmp_path, moto=moto_server, encrypted=encrypted) as app:
        _round_trip(app, encrypted=encrypted)


def _round_trip(app: App, *, encrypted: bool) -> None:
    """Several S3 parts and envelope segments, with fields around the file."""
    total = 20 * MIB + 123
    before, after = field("title", "a clip"), field("note", "x" * 1000)
    with app.client() as client:
        answer = client.post(
            "/upload",
            content=multipart(total, before=before, after=after),
            headers={"Content-Type": MULTIPART},
        )
        assert answer.status_code == 201, answer.text
        got = answer.json()
        assert got["size"] == total
        assert got["filename"] == "clip.mp4"
        assert got["content_type"] == "video/mp4"
        assert bytes.fromhex(got["head"]) == b"".join(blocks(4096))
        assert got["body_sha256"] == digest_of(total, "clip.mp4")
        # The other fields, as text: an upload's options (sent before the file part).
        assert got["fields"] == {"title": "a clip", "note": "x" * 1000}
        stored = _read_back(app, got["key"], encrypted=encrypted)
        assert hashlib.sha256(stored).digest() == hashlib.sha256(b"".join(blocks(total))).digest()
        # A raw body (POST /video will take one too), its name from the query.
        answer = client.post(
            "/upload",
            params={"filename": "raw.mp4"},
            content=blocks(3 * MIB),
            headers={"Content-Type": "video/mp4"},
        )
        assert answer.status_code == 201, answer.text
        got = answer.json()
        assert (got["size"], got["filename"], got["content_type"]) == (
            3 * MIB,
            "raw.mp4",
            "video/mp4",
        )
        assert got["body_sha256"] == body_digest(b"".join(blocks(3 * MIB)), "raw.mp4")
    assert app.own_disk() == []


def _read_back(app: App, key: str, *, encrypted: bool) -> bytes:
    """The object as the app's store reads it, checking that what is at rest is sealed
    when it should be."""
    store = app.store()
    try:
        with store.open(key) as stream:
            data = stream.read()
        at_rest = store._inner.get_range(key, 0, len(MAGIC)).data
        assert (at_rest == MAGIC) == encrypted
        return data
    finally:
        store.close()


class _PeakRss:
    """The app's peak RSS from now on: the kernel's high-water mark, reset here
    (`/proc/PID/clear_refs`), else the largest of the samples taken."""

    def __init__(self, app: App) -> None:
        self._app = app
        try:
            Path(f"/proc/{app.process.pid}/clear_refs").write_text("5")
            self._hwm = True
        except OSError:
            self._hwm = False
        self.start = app.vm("VmRSS")
        self._sampled = self.start

    def sample(self) -> None:
        self._sampled = max(self._sampled, self._app.vm("VmRSS"))

    def growth(self) -> int:
        self.sample()
        return (self._app.vm("VmHWM") if self._hwm else self._sampled) - self.start


def _watched(body: Iterator[bytes], app: App, peak: _PeakRss) -> Iterator[bytes]:
    """The body, sampling the app's memory and checking that it spools nothing to its
    own disk while it streams."""
    for i, chunk in enumerate(body):
        if i % 32 == 0:
            peak.sample()
            assert app.own_disk() == []
        yield chunk


def _large_upload(app: App, total: int) -> None:
    with app.client() as client:
        # Once small first: the drivers' lazy start-up (botocore's models, a first
        # connection) is not the streaming's memory.
        warm = client.post(
            "/upload", content=multipart(20 * MIB), headers={"Content-Type": MULTIPART}
        )
        assert warm.status_code == 201, warm.text
        peak = _PeakRss(app)
        answer = client.post(
            "/upload",
            content=_watched(multipart(total), app, peak),
            headers={"Content-Type": MULTIPART},
            timeout=600,
        )
        assert answer.status_code == 201, answer.text
        growth = peak.growth()
    got = answer.json()
    assert got["size"] == total
    assert got["body_sha256"] == digest_of(total, "clip.mp4")
    print(f"the app's RSS grew by {growth / MIB:.1f} MiB for {total / MIB:.0f} MiB")
    assert growth < RSS_BOUND, f"the app's RSS grew by {growth / MIB:.0f} MiB"
    assert app.own_disk() == []
    store = app.store()
    try:  # read back whole, a MiB at a time
        stored, sent = hashlib.sha256(), hashlib.sha256()
        with store.open(got["key"]) as stream:
            while chunk := stream.read(MIB):
                stored.update(chunk)
        for chunk in blocks(total):
            sent.update(chunk)
        assert stored.digest() == sent.digest()
    finally:
        store.close()


@pytest.mark.slow
def test_a_gigabyte_upload_streams_to_the_local_store_in_bounded_memory(tmp_path: Path) -> None:
    with serve(tmp_path, encrypted=True, env={"IMAGEBLUR_MAX_UPLOAD_BYTES": str(2 * GIB)}) as app:
        _large_upload(app, GIB)


@pytest.mark.slow
def test_a_large_upload_streams_to_s3_in_bounded_memory(
    tmp_path: Path, moto_server: servers.MotoServer
) -> None:
    env = {"IMAGEBLUR_MAX_UPLOAD_BYTES": str(2 * GIB)}
    with serve(tmp_path, moto=moto_server, encrypted=True, env=env) as app:
        _large_upload(app, 512 * MIB)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_cap_stops_a_body_mid_stream_and_nothing_is_stored(
    tmp_path: Path, moto_server: servers.MotoServer, where: str
) -> None:
    moto = moto_server if where == "s3" else None
    with serve(tmp_path, moto=moto, encrypted=True) as app:  # a cap of 64 MiB
        upload = OpenUpload(app)
        upload.send(part_head())
        for chunk in blocks(65 * MIB):
            upload.send(chunk)
        # The body is not finished (no closing boundary, no last chunk): refused as it came.
        status, body = upload.answer()
        assert (status, body["error"]) == (413, "too_large"), body
        assert megabytes(64 * MIB) in body["message"], body
        upload.cut()
        wait_until(lambda: app.in_flight() == 0, timeout_s=30, what="the upload to end")
        assert app.objects() == []
        assert app.own_disk() == []
        # Declared too large: refused before a byte of the body is read.
        declared = OpenUpload(app, length=10 << 30)
        status, body = declared.answer()
        assert (status, body["error"]) == (413, "too_large")
        declared.cut()
        assert app.objects() == []


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_client_gone_mid_upload_leaves_nothing(
    tmp_path: Path, moto_server: servers.MotoServer, where: str
) -> None:
    moto = moto_server if where == "s3" else None
    with serve(tmp_path, moto=moto, encrypted=True) as app:
        upload = OpenUpload(app)
        upload.send(part_head())
        for chunk in blocks(30 * MIB):  # more than two S3 parts: a multipart upload is open
            upload.send(chunk)
        # Something is being written: a temp file, or an S3 upload in progress.
        wait_until(app.objects, timeout_s=30, what="the write to start")
        assert app.in_flight() == 1
        upload.cut()
        wait_until(
            lambda: app.objects() == [] and app.in_flight() == 0,
            timeout_s=30,
            what="the interrupted write to be dropped",
            details=lambda: f"{app.objects()}\n{app.logs()}",
        )
        assert app.own_disk() == []


def test_a_stalled_upload_is_refused_and_frees_its_slot(tmp_path: Path) -> None:
    with serve(tmp_path, env={"STREAMED_IDLE_TIMEOUT_S": "2"}) as app:
        upload = OpenUpload(app)
        upload.send(part_head())
        upload.send(next(blocks(MIB)))
        # Then nothing: the app gives up after 2 s of silence (the answer is awaited).
        status, body = upload.answer()
        assert (status, body["error"]) == (408, "upload_stalled"), body
        upload.cut()
        wait_until(lambda: app.in_flight() == 0, timeout_s=30, what="the slot to be free")
        assert app.objects() == []


def test_past_the_bound_an_upload_is_refused_at_once(tmp_path: Path) -> None:
    with serve(tmp_path, env={"IMAGEBLUR_MAX_STREAMED_UPLOADS": "1"}) as app:
        first = OpenUpload(app)
        first.send(part_head())
        first.send(next(blocks(MIB)))
        wait_until(lambda: app.in_flight() == 1, timeout_s=30, what="the first upload in flight")
        with app.client() as client:
            refused = client.post(
                "/upload", content=b"".join(multipart(MIB)), headers={"Content-Type": MULTIPART}
            )
            assert refused.status_code == 503
            assert refused.json()["error"] == "overloaded"
            assert int(refused.headers["Retry-After"]) > 0
            first.send(TAIL)
            status, body = first.finish()
            assert (status, body["size"]) == (201, MIB)
            wait_until(lambda: app.in_flight() == 0, timeout_s=30, what="the slot to be free")
            again = client.post(
                "/upload", content=b"".join(multipart(MIB)), headers={"Content-Type": MULTIPART}
            )
            assert again.status_code == 201, again.text
        assert len(app.objects()) == 2


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        (field("title", "no file") + f"--{BOUNDARY}--\r\n".encode(), MULTIPART, "missing_file"),
        (part_head() + b"x" * 1000, MULTIPART, "bad_multipart"),  # no closing boundary
        (
            part_head() + b"one" + b"\r\n" + part_head() + b"two" + TAIL,
            MULTIPART,
            "bad_multipart",
        ),  # two parts named "file"
        (part_head() + b"x" + TAIL, "multipart/form-data", "bad_multipart"),  # no boundary
        (b"garbage without any boundary", MULTIPART, "bad_multipart"),
    ],
    ids=["missing-part", "no-closing-boundary", "two-file-parts", "no-boundary", "garbage"],
)
def test_a_malformed_body_is_refused_and_nothing_is_stored(
    plain_app: App, body: bytes, content_type: str, code: str
) -> None:
    with plain_app.client() as client:
        answer = client.post("/upload", content=body, headers={"Content-Type": content_type})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == code
        assert answer.json()["message"]
    assert plain_app.objects() == []


@pytest.mark.slow
def test_uploads_in_flight_hold_memory_in_proportion_to_the_bound(
    tmp_path: Path, moto_server: servers.MotoServer
) -> None:
    """The bound's worst case on S3 (its part buffers are the largest): as many uploads
    as it allows, at once; the figure per upload is in docs/operations.md."""
    slots, total = 4, 128 * MIB
    env = {"IMAGEBLUR_MAX_STREAMED_UPLOADS": str(slots), "IMAGEBLUR_MAX_UPLOAD_BYTES": str(GIB)}
    with serve(tmp_path, moto=moto_server, encrypted=True, env=env) as app:
        with app.client() as client:  # warm, as above
            warm = client.post(
                "/upload", content=multipart(20 * MIB), headers={"Content-Type": MULTIPART}
            )
            assert warm.status_code == 201, warm.text
        peak = _PeakRss(app)

        def one(_: int) -> int:
            with app.client() as client:
                answer = client.post(
                    "/upload",
                    content=_watched(multipart(total), app, peak),
                    headers={"Content-Type": MULTIPART},
                    timeout=600,
                )
                assert answer.status_code == 201, answer.text
                size: int = answer.json()["size"]
                return size

        with ThreadPoolExecutor(slots) as pool:
            assert list(pool.map(one, range(slots))) == [total] * slots
        growth = peak.growth()
    print(f"the app's RSS grew by {growth / MIB:.1f} MiB for {slots} uploads at once")
    assert growth < slots * RSS_BOUND, f"the app's RSS grew by {growth / MIB:.0f} MiB"


def test_fields_are_bounded(plain_app: App) -> None:
    """An upload's options come as fields before the file part: small text, few."""
    with plain_app.client() as client:
        long = client.post(
            "/upload",
            content=multipart(1000, before=field("hide", "[" + " " * 20_000 + "]")),
            headers={"Content-Type": MULTIPART},
        )
        assert long.status_code == 400 and long.json()["error"] == "bad_multipart", long.text
        many = b"".join(field(f"f{i}", "v") for i in range(17))
        answer = client.post(
            "/upload", content=multipart(1000, before=many), headers={"Content-Type": MULTIPART}
        )
        assert answer.status_code == 400 and answer.json()["error"] == "bad_multipart"
        assert plain_app.objects() == []
