"""Slowloris: a request body that trickles in below the rate floor
(`middleware/body_deadline.py`) is answered `408 upload_too_slow` by a real server
process, to a raw socket client, and leaves no record, no stored object and no temp
file; the upload gate's places it held are free again. The floor is set high and the
grace short here so each case ends in seconds."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from support import LINUS, Server, run_server, wait_until

GRACE_S = 1.0
MIN_BYTES_PER_S = 200_000
BOUNDARY = "slowlorisboundary1f2e"
# Past Starlette's 1 MiB spool threshold: the part is then in a temp file under TMPDIR.
SPOOLED_BYTES = 1_200_000
# Each answer must come within this (the deadline plus a loaded machine's delays).
ANSWER_S = 30.0


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slow-tmp")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tmp_dir: Path) -> Iterator[Server]:
    env = {
        "IMAGEBLUR_UPLOAD_GRACE_S": str(GRACE_S),
        "IMAGEBLUR_UPLOAD_MIN_BYTES_PER_S": str(MIN_BYTES_PER_S),
        "IMAGEBLUR_MAX_CONCURRENT_CHECKS": "1",  # so 4 uploads in hand fill the gate
        "TMPDIR": str(tmp_dir),
    }
    with run_server(tmp_path_factory.mktemp("slow") / "data", env=env) as srv:
        yield srv


class Trickle:
    """A raw HTTP upload whose body is sent a byte at a time, reading between bytes for
    an answer (each read waits at most a fraction of a second)."""

    def __init__(
        self, server: Server, *, content_type: str, length: int, path: str = "/picture"
    ) -> None:
        address = urlsplit(server.url)
        self.sock = socket.create_connection((address.hostname, address.port), timeout=10)
        self.sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        self.started = time.monotonic()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def trickle_until_answered(self) -> tuple[int, dict[str, str], dict[str, str]]:
        """Status, headers and JSON body of the answer that cuts the trickle."""
        answer = bytearray()
        self.sock.settimeout(0.2)

        def answered() -> bool:
            # Refused once the server stopped reading: its answer is waiting.
            with contextlib.suppress(OSError):
                self.sock.sendall(b"x")
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            answer.extend(chunk)
            return not chunk or _complete(bytes(answer))

        wait_until(answered, timeout_s=ANSWER_S, interval_s=0, what="an answer", retry_on=())
        self.sock.close()
        assert answer, "the server closed the connection without an answer"
        return _parse(bytes(answer))


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def _parse(answer: bytes) -> tuple[int, dict[str, str], dict[str, str]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def part_head() -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=image; filename=a.jpg\r\n"
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()


def open_files_under(server: Server, folder: Path) -> list[str]:
    """The server process's open files under `folder`, removed ones included."""
    fds = Path(f"/proc/{server.process.pid}/fd")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(os.readlink(fd))
        except FileNotFoundError:
            continue  # closed while listed
    return [t for t in targets if t.startswith(str(folder))]


def assert_nothing_kept(server: Server, tmp_dir: Path) -> None:
    with server.client() as client:
        assert client.get("/pictures").json()["items"] == []
    assert server.stored_files() == []
    wait_until(
        lambda: open_files_under(server, tmp_dir) == [] and list(tmp_dir.iterdir()) == [],
        timeout_s=10,
        what="the spooled part to be closed",
        details=lambda: open_files_under(server, tmp_dir),
    )


def test_a_trickled_raw_upload_is_refused_408(server: Server, tmp_dir: Path) -> None:
    upload = Trickle(server, content_type="image/jpeg", length=100_000)
    status, headers, body = upload.trickle_until_answered()
    print(f"raw trickle answered after {time.monotonic() - upload.started:.1f} s")
    assert (status, body["error"]) == (408, "upload_too_slow"), body
    assert headers["connection"] == "close"
    assert "below the floor" in body["message"]
    assert_nothing_kept(server, tmp_dir)


def test_a_trickled_video_upload_is_refused_408(server: Server, tmp_dir: Path) -> None:
    # Streamed to the store as it comes (a streamed-upload slot): cut there too.
    upload = Trickle(server, content_type="video/mp4", length=10_000_000, path="/video")
    # An MP4's first box (its container is told by it), a burst stored as it comes,
    # then a trickle.
    upload.send(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + os.urandom(300_000))
    wait_until(server.stored_files, timeout_s=10, what="the store's write to start")
    status, _, body = upload.trickle_until_answered()
    assert (status, body["error"]) == (408, "upload_too_slow"), body
    with server.client() as client:
        assert client.get("/videos").json()["items"] == []
    assert_nothing_kept(server, tmp_dir)


def test_a_trickled_multipart_upload_leaves_no_temp_file(server: Server, tmp_dir: Path) -> None:
    upload = Trickle(
        server, content_type=f"multipart/form-data; boundary={BOUNDARY}", length=5_000_000
    )
    upload.send(part_head() + os.urandom(SPOOLED_BYTES))
    wait_until(
        lambda: open_files_under(server, tmp_dir), timeout_s=10, what="the part to be spooled"
    )
    status, _, body = upload.trickle_until_answered()
    # The burst bought SPOOLED_BYTES / MIN_BYTES_PER_S seconds beyond the grace.
    print(f"multipart trickle answered after {time.monotonic() - upload.started:.1f} s")
    assert (status, body["error"]) == (408, "upload_too_slow"), body
    assert_nothing_kept(server, tmp_dir)


def test_trickling_uploads_fill_the_gate_then_free_it(server: Server, tmp_dir: Path) -> None:
    # Four uploads in hand (4 x IMAGEBLUR_MAX_CONCURRENT_CHECKS); each sends enough to
    # hold its place for about 10 s, then trickles.
    holders = [Trickle(server, content_type="image/jpeg", length=5_000_000) for _ in range(4)]
    for holder in holders:
        holder.send(os.urandom(2_000_000))
    with server.client() as client:
        refused = wait_until(
            lambda: (
                (r := client.post("/picture", files={"image": LINUS.read_bytes()})).status_code
                == 503
                and r
            ),
            timeout_s=10,
            what="a fifth upload to be refused",
        )
        assert refused.json()["error"] == "overloaded"
        assert refused.headers["Retry-After"]
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(Trickle.trickle_until_answered, holders))
        assert [(status, body["error"]) for status, _, body in answers] == [
            (408, "upload_too_slow")
        ] * 4
        assert_nothing_kept(server, tmp_dir)
        accepted = client.post("/picture", files={"image": LINUS.read_bytes()})
        assert accepted.status_code == 202, accepted.text


DRIBBLERS = 200


def _process(server: Server) -> tuple[int, int]:
    """The server's resident memory (KiB) and open file descriptors."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return rss, len(list(Path(f"/proc/{server.process.pid}/fd").iterdir()))


def test_connections_dribbling_headers_hold_a_socket_each_and_block_no_one(
    server: Server,
) -> None:
    """Headers are not bounded by us (docs/operations.md, "Slow request headers"): what
    a connection that never finishes its headers costs is one socket (a file descriptor)
    and a few KiB; the server keeps answering everyone else meanwhile. Run with -s for
    the figures."""
    address = urlsplit(server.url)
    rss_before, fds_before = _process(server)
    dribblers = []
    try:
        for _ in range(DRIBBLERS):
            sock = socket.create_connection((address.hostname, address.port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            dribblers.append(sock)
        wait_until(
            lambda: _process(server)[1] >= fds_before + DRIBBLERS,
            timeout_s=ANSWER_S,
            what="every dribbling connection to be accepted",
        )
        with server.client() as client:
            for _ in range(3):
                for sock in dribblers:
                    sock.sendall(b"a")
                assert client.get("/healthz").status_code == 200
        rss, fds = _process(server)
        print(
            f"{DRIBBLERS} connections dribbling headers: +{fds - fds_before} file descriptors, "
            f"+{(rss - rss_before) / DRIBBLERS:.1f} KiB of RSS each"
        )
    finally:
        for sock in dribblers:
            sock.close()
    wait_until(
        lambda: _process(server)[1] <= fds_before + 10,
        timeout_s=ANSWER_S,
        what="the closed connections' sockets to be released",
    )
