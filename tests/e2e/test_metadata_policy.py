"""The metadata policy through a real server process: what a result keeps over HTTP."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import ExifTags, Image

from photo_metadata import DATETIME_ORIGINAL, LATITUDE, NEVER_KEPT, icc_profile, photo
from support import run_server


@pytest.mark.parametrize("policy", ["", "gps,datetime"])
def test_a_result_keeps_exactly_what_the_policy_says(tmp_path: Path, policy: str) -> None:
    data = photo("JPEG", orientation=6, width=120, height=80)
    with (
        run_server(tmp_path / "data", env={"IMAGEBLUR_KEEP_METADATA": policy}) as server,
        server.client() as client,
    ):
        response = client.post("/picture", files={"image": ("phone.jpg", data, "image/jpeg")})
        assert response.status_code == 202, response.text
        image_id = response.json()["id"]
        assert server.wait_done(client, image_id)["status"] == "done"
        out = client.get(f"/picture/{image_id}/image").content

    img = Image.open(io.BytesIO(out))
    assert img.size == (80, 120)  # upright
    assert img.info["icc_profile"] == icc_profile()
    assert not [name for name, value in NEVER_KEPT.items() if value.encode() in out]
    assert "xmp" not in img.info and "photoshop" not in img.info
    exif = img.getexif()
    if policy:
        gps, sub = exif.get_ifd(ExifTags.IFD.GPSInfo), exif.get_ifd(ExifTags.IFD.Exif)
        assert gps[2] == LATITUDE and sub[0x9003] == DATETIME_ORIGINAL
        assert exif.get(0x0112) == 1
        assert set(sub) <= {0x9003, 0x9004, 0x9010, 0x9011, 0x9012, 0x9290, 0x9291, 0x9292}
        assert set(exif) <= {0x0112, 0x0132, ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo}
    else:
        assert not exif and b"Exif" not in out
