"""What an upload may cost: a JPEG scan bomb is refused before any decode, and uploads
decoded at once share a pixel budget; through real HTTP on `imageblur serve`."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from jpeg_bombs import progressive, scan_bomb
from support import Server, jpeg_bytes, png_bytes, run_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("decode-limits") / "data") as srv:
        yield srv


def nothing_stored(server: Server, client: httpx.Client) -> None:
    assert client.get("/pictures").json()["total"] == 0
    assert server.stored_files() == []


def test_a_scan_bomb_is_refused_before_decoding(server: Server) -> None:
    """4096 x 4096, 1,000 scans, 230 KB: decoding it takes Pillow about 40 s of CPU on
    the reference machine; the scan count refuses it from the markers."""
    bomb = scan_bomb(4096, 4096, scans=1000)
    with server.client() as client:
        response = client.post("/picture", files={"image": ("bomb.jpg", bomb, "image/jpeg")})
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"] == "too_many_scans"
        assert "more than 100 scans" in body["message"]
        nothing_stored(server, client)
        # Refused as a raw body too (the other upload path).
        raw = client.post("/picture", content=bomb, headers={"content-type": "image/jpeg"})
        assert raw.status_code == 400 and raw.json()["error"] == "too_many_scans"
        nothing_stored(server, client)


def test_a_broken_segment_length_is_a_corrupt_image(server: Server) -> None:
    data = jpeg_bytes()
    broken = data[:2] + b"\xff\xe1\xff\xf0" + data[2:]  # runs past the end
    with server.client() as client:
        response = client.post("/picture", files={"image": ("x.jpg", broken, "image/jpeg")})
        assert response.status_code == 400
        assert response.json()["error"] == "corrupt_image"
        nothing_stored(server, client)


def test_a_png_chunk_flood_is_refused_before_decoding(server: Server) -> None:
    """100,001 empty chunks (1.2 MB): Pillow would walk them one Python loop each."""
    data = png_bytes(8, 8)
    empty = struct.pack(">I", 0) + b"abCd" + struct.pack(">I", zlib.crc32(b"abCd"))
    flood = data[:33] + empty * 100_001 + data[33:]
    with server.client() as client:
        response = client.post("/picture", files={"image": ("x.png", flood, "image/png")})
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "corrupt_image"
        assert "chunks" in response.json()["message"]
        nothing_stored(server, client)


def test_the_scan_limit_is_a_setting_and_progressive_photos_pass(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = {"IMAGEBLUR_MAX_JPEG_SCANS": "20"}
    with (
        run_server(tmp_path_factory.mktemp("scans-20") / "data", env=env) as srv,
        srv.client() as client,
    ):
        refused = client.post("/picture", files={"image": ("a.jpg", scan_bomb(64, 64, scans=21))})
        assert refused.status_code == 400 and refused.json()["error"] == "too_many_scans"
        assert "more than 20 scans" in refused.json()["message"]
        accepted = client.post("/picture", files={"image": ("p.jpg", progressive(640, 480))})
        assert accepted.status_code == 202, accepted.text
        assert srv.wait_done(client, accepted.json()["id"])["status"] == "done"


def test_uploads_larger_than_the_pixel_budget_decode_one_at_a_time(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Every upload is over a 1-pixel budget: each decodes alone, none is refused, none
    waits forever."""
    env = {"IMAGEBLUR_API_PIXEL_BUDGET": "1", "IMAGEBLUR_MAX_CONCURRENT_CHECKS": "4"}
    uploads = [jpeg_bytes(800, 600, seed=i) for i in range(3)] + [png_bytes(500, 400)]
    with run_server(tmp_path_factory.mktemp("budget") / "data", env=env) as srv:

        def upload(data: bytes) -> httpx.Response:
            with srv.client() as c:
                return c.post("/picture", files={"image": ("x", data)})

        with ThreadPoolExecutor(len(uploads)) as pool:
            answers = list(pool.map(upload, uploads))
        assert [a.status_code for a in answers] == [202] * len(uploads), [a.text for a in answers]
