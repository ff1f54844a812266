"""HEIC and AVIF uploads through a real server process: a rotated iPhone-style HEIC of a
real face comes back as an upright JPEG with the face hidden and no metadata; truncated
files are refused with nothing stored."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import ExifTags, Image

from phone_photos import STORED, avif, exif_orientation, heic
from photo_metadata import exif_block
from support import BILL, BILL_FACE, LINUS, LINUS_FACE, Server, decode, detail, run_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("phones") / "data") as srv:
        yield srv


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def inner(box: tuple[int, int, int, int]) -> tuple[slice, slice]:
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) // 5, (y1 - y0) // 5
    return slice(y0 + dy, y1 - dy), slice(x0 + dx, x1 - dx)


def gps_exif(orientation: int) -> bytes:
    """The test photo's EXIF (GPS, serials, a thumbnail) with `orientation`."""
    return b"Exif\0\0" + exif_block(orientation=orientation)


def test_a_rotated_heic_with_gps_comes_back_as_an_upright_jpeg_with_the_face_hidden(
    server: Server, client: httpx.Client
) -> None:
    upright = Image.open(BILL).convert("RGB")
    data = heic(upright.transpose(STORED[6]), exif=gps_exif(6), quality=92)
    response = client.post("/picture", files={"image": ("IMG_0001.HEIC", data, "image/heic")})
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["width"], body["height"]) == upright.size
    assert body["content_type"] == "image/jpeg" and body["name"] == "IMG_0001.jpg"

    done = server.wait_done(client, body["id"])
    assert done["status"] == "done", done
    assert done["faces"] >= 1
    result = client.get(f"/picture/{body['id']}/image")
    assert result.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(result.content))
    assert img.format == "JPEG" and img.size == upright.size
    assert not img.getexif().get_ifd(ExifTags.IFD.GPSInfo) and b"Exif" not in result.content

    before, after = np.asarray(upright), decode(result.content)
    rows, cols = inner(BILL_FACE)
    assert detail(after[rows, cols]) < 0.25 * detail(before[rows, cols])


def test_an_avif_comes_back_as_a_jpeg_with_the_face_hidden(
    server: Server, client: httpx.Client
) -> None:
    upright = Image.open(LINUS).convert("RGB")
    data = avif(upright, exif=exif_orientation(1), quality=95)
    response = client.post("/picture", files={"image": ("linus.avif", data, "image/avif")})
    assert response.status_code == 202, response.text
    done = server.wait_done(client, response.json()["id"])
    assert done["status"] == "done" and done["faces"] >= 1
    assert done["content_type"] == "image/jpeg"
    after = decode(client.get(f"/picture/{done['id']}/image").content)
    before = np.asarray(upright)
    rows, cols = inner(LINUS_FACE)
    assert detail(after[rows, cols]) < 0.5 * detail(before[rows, cols])


@pytest.mark.parametrize("kind", ["heic", "avif"])
def test_a_truncated_file_is_a_400_and_nothing_is_stored(
    server: Server, client: httpx.Client, kind: str
) -> None:
    picture = Image.open(LINUS).convert("RGB")
    data = heic(picture) if kind == "heic" else avif(picture)
    before = {p.name for p in server.stored_files()}
    total = client.get("/pictures").json()["total"]
    response = client.post(
        "/picture", files={"image": (f"cut.{kind}", data[: len(data) * 2 // 3], "image/heic")}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "corrupt_image"
    assert client.get("/pictures").json()["total"] == total
    assert {p.name for p in server.stored_files()} == before


def test_the_blur_command_writes_a_heic_as_jpeg_and_an_avif_as_avif_when_asked(
    tmp_path: Path,
) -> None:
    album = tmp_path / "album"
    album.mkdir()
    picture = Image.open(LINUS).convert("RGB")
    (album / "IMG_0002.HEIC").write_bytes(heic(picture))
    (album / "linus.avif").write_bytes(avif(picture))
    result = subprocess.run(
        [sys.executable, "-m", "imageblur.entrypoints.cli", "blur", str(album), "-o", "out"],
        capture_output=True,
        text=True,
        env={**os.environ, "IMAGEBLUR_LOG_FORMAT": "json", "IMAGEBLUR_OUTPUT_FORMAT": "same"},
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "2 of 2 images anonymized" in result.stdout
    assert Image.open(tmp_path / "out" / "album" / "IMG_0002.jpg").format == "JPEG"
    assert Image.open(tmp_path / "out" / "album" / "linus.avif").format == "AVIF"
