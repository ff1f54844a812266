"""Every bad upload gets its 4xx JSON error and leaves no record and no stored object."""

from __future__ import annotations

import io
import socket
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from PIL import Image

from support import BILL, Server, jpeg_bytes, run_server

MAX_BYTES = 300_000
MAX_PIXELS = 4_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"IMAGEBLUR_MAX_UPLOAD_BYTES": str(MAX_BYTES), "IMAGEBLUR_MAX_PIXELS": str(MAX_PIXELS)}
    with run_server(tmp_path_factory.mktemp("hostile") / "data", env=env) as srv:
        yield srv


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height pixels, with almost no data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (20, 20), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100)
    return buf.getvalue()


def gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buf, "GIF")
    return buf.getvalue()


def multipart(data: bytes, name: str = "x.jpg") -> dict[str, Any]:
    return {"files": {"image": (name, data, "image/jpeg")}}


CASES: dict[str, tuple[dict[str, Any], set[int], str | None]] = {
    "no image part": ({"files": {"other": ("a.jpg", jpeg_bytes(), "image/jpeg")}}, {400}, None),
    "image as a text field": ({"data": {"image": "hello"}, "files": {"x": ("", b"")}}, {400}, None),
    "empty image part": (multipart(b""), {400}, "empty_image"),
    "empty raw body": ({"content": b"", "headers": {"content-type": "image/jpeg"}}, {400}, None),
    "text file": (multipart(b"hello, I am not a picture" * 10), {415}, None),
    "gif": (multipart(gif(), "a.gif"), {415}, None),
    "svg with an image name": (
        multipart(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "a.jpg"),
        {415},
        None,
    ),
    "text content type": (
        {"content": jpeg_bytes(), "headers": {"content-type": "text/plain"}},
        {415},
        None,
    ),
    "truncated jpeg": (multipart(BILL.read_bytes()[:20_000]), {400, 422}, "corrupt_image"),
    "corrupt png": (multipart(png_header_only(30, 30)[:40] + b"\x00" * 50), {400, 422}, None),
    "jpeg header then garbage": (multipart(b"\xff\xd8\xff\xe0" + b"\x13" * 5000), {400, 422}, None),
    "over the pixel limit (header)": (
        multipart(png_header_only(30_000, 30_000)),
        {413, 422},
        "too_many_pixels",
    ),
    "animated png": (multipart(animated("PNG"), "a.png"), {415}, None),
    "animated webp": (multipart(animated("WEBP"), "a.webp"), {415}, None),
    "over the byte limit": (multipart(b"\xff\xd8\xff" + b"\x00" * (MAX_BYTES + 10)), {413}, None),
    "two files": (
        {
            "files": [
                ("image", ("a.jpg", jpeg_bytes(), "image/jpeg")),
                ("image", ("b.jpg", jpeg_bytes(), "image/jpeg")),
            ]
        },
        {400},
        None,
    ),
    "malformed multipart": (
        {"content": b"--zzz\r\nnonsense", "headers": {"content-type": "multipart/form-data"}},
        {400},
        None,
    ),
}


def nothing_stored(server: Server, client: httpx.Client) -> None:
    assert client.get("/pictures").json()["total"] == 0
    assert server.stored_files() == []


@pytest.mark.parametrize("case", list(CASES))
def test_bad_upload_is_rejected_and_leaves_nothing(
    server: Server, client: httpx.Client, case: str
) -> None:
    kwargs, statuses, code = CASES[case]
    response = client.post("/picture", **kwargs)
    assert response.status_code in statuses, response.text
    body = response.json()
    assert body["message"] and body["error"]
    if code:
        assert body["error"] == code
    nothing_stored(server, client)


def _raw_request(server: Server, head: bytes, body_chunks: Iterator[bytes]) -> bytes:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server stopped reading: what we want
        sock.settimeout(20)
        return sock.recv(65536)


def test_oversized_body_is_refused_while_streaming(server: Server, client: httpx.Client) -> None:
    """A chunked body with no length is cut off once it passes the cap: the server answers
    413 although the body never ends."""
    head = (
        b"POST /picture HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    block = b"\xff\xd8\xff" + b"\x00" * (64 * 1024 - 3)

    def chunks() -> Iterator[bytes]:
        # Twice the cap, and never the terminating chunk.
        for _ in range(2 * MAX_BYTES // len(block) + 1):
            yield f"{len(block):x}\r\n".encode() + block + b"\r\n"

    answer = _raw_request(server, head, chunks())
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    nothing_stored(server, client)


def test_declared_length_over_the_cap_is_refused_before_reading(
    server: Server, client: httpx.Client
) -> None:
    head = (
        b"POST /picture HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 1000000000\r\n\r\n"
    )
    answer = _raw_request(server, head, iter([b"--b\r\n"]))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    nothing_stored(server, client)


def test_unknown_ids_and_bad_queries_are_json_errors(client: httpx.Client) -> None:
    for path in ("/picture/nope", "/picture/0123456789abcdef0123456789abcdef/image", "/nowhere"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
    response = client.get("/pictures", params={"limit": "-1"})
    assert response.status_code == 422 and response.json()["message"]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/picture", {"POST"}),
        ("/picture/0123456789abcdef0123456789abcdef", {"GET", "HEAD", "DELETE"}),
        ("/picture/0123456789abcdef0123456789abcdef/image", {"GET", "HEAD"}),
        ("/pictures", {"GET", "HEAD"}),
        ("/healthz", {"GET", "HEAD"}),
        ("/readyz", {"GET", "HEAD"}),
        ("/openapi.json", {"GET", "HEAD"}),
    ],
)
def test_a_wrong_method_is_405_with_every_allowed_method(
    client: httpx.Client, path: str, allowed: set[str]
) -> None:
    for method in ("TRACE", "PUT", "PATCH"):
        response = client.request(method, path)
        assert response.status_code == 405, (method, path)
        assert response.json()["error"] == "method_not_allowed"
        assert set(response.headers["Allow"].split(", ")) == allowed, (method, path)


def test_head_answers_like_get_without_a_body(client: httpx.Client) -> None:
    for path, status in (("/healthz", 200), ("/pictures", 200), ("/picture/nope", 404)):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == status
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.content == b""


def test_client_file_name_never_becomes_a_key(server: Server, client: httpx.Client) -> None:
    evil = "../../etc/passwd\x00.jpg"
    response = client.post("/picture", files={"image": (evil, jpeg_bytes(), "image/jpeg")})
    assert response.status_code == 202
    body = response.json()
    assert "/" not in body["name"] and "\x00" not in body["name"]
    server.wait_done(client, body["id"])
    assert all(p.name.startswith(body["id"]) for p in server.stored_files())
    assert client.delete(f"/picture/{body['id']}").status_code == 204


def test_an_upload_burst_gets_quick_503s_and_reads_stay_served(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    big = jpeg_bytes(3000, 2000, seed=7)  # noise: a slow strict decode
    data_dir = tmp_path_factory.mktemp("burst") / "data"
    with run_server(data_dir, env={"IMAGEBLUR_MAX_CONCURRENT_CHECKS": "1"}) as srv:

        def upload(_: int) -> httpx.Response:
            with srv.client() as c:
                return c.post("/picture", files={"image": ("big.jpg", big)})

        with ThreadPoolExecutor(16) as pool:
            uploads = [pool.submit(upload, i) for i in range(16)]
            with srv.client() as reader:
                ready = reader.get("/readyz")  # while the burst is in hand
            answers = [f.result() for f in uploads]
        statuses = sorted(a.status_code for a in answers)
        assert set(statuses) <= {202, 503}, statuses
        assert statuses.count(202) >= 1 and statuses.count(503) >= 1, statuses
        refused = next(a for a in answers if a.status_code == 503)
        assert refused.json()["error"] == "overloaded" and "Retry-After" in refused.headers
        assert ready.status_code == 200
        # Logged as an overload, not as a back end that is down.
        assert '"event": "api.overloaded"' in srv.logs()
        assert "backend.unavailable" not in srv.logs()
