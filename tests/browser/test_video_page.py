"""The web page with videos on (IMAGEBLUR_VIDEO): a clip chosen in the file picker goes
to POST /video, its card shows the frames' progress, then the result plays in the
page's <video> element from its signed playback URL, and seeks. The server runs the
copy-through test pipeline (tests/video_copy.py), which holds the clip at frame 5 until
the test lets it go, so the progress state is seen without a race."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver

from browser.conftest import Page, fresh_page
from browser.test_accessibility import AXE, violations
from support import Server, free_port
from video_copy import HELD_FRAMES, HOLD_AT, gate_name, make_clip
from video_servers import AUTH, TOKEN, video_server

# A file name that would be markup if the page ever used it as HTML.
MARKUP_NAME = "<img src=x onerror=alert(1)>clip.mp4"

SEEK = """
const [to, done] = [arguments[0], arguments[arguments.length - 1]];
const video = document.getElementById("result-video");
video.onseeked = () => done({time: video.currentTime, error: video.error && video.error.code});
video.currentTime = to;
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("video-page")
    (root / "gate").mkdir()  # a held clip goes on once its file is made here
    with video_server(root / "data", port=free_port(), VIDEO_TEST_GATE=str(root / "gate")) as srv:
        yield srv


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.is_file():
        raise AssertionError(f"{AXE} is missing: `make axe` installs it")
    return AXE.read_text()


@pytest.fixture
def page(driver: webdriver.Chrome, server: Server) -> Iterator[Page]:
    for page in fresh_page(driver, server.url):
        # The server has an API token: the tab holds it, as after the token prompt.
        driver.execute_script("sessionStorage.setItem('imageblur.token', arguments[0])", TOKEN)
        yield page


def test_the_limits_say_what_a_video_may_be(server: Server) -> None:
    videos = httpx.get(f"{server.url}/limits").json()["videos"]  # public: no token
    assert videos["max_bytes"] == 1_000_000  # IMAGEBLUR_MAX_VIDEO_BYTES (video_servers)
    assert videos["accepted"] == "MP4, MOV or WebM"


def test_a_video_uploads_shows_its_progress_and_plays(
    page: Page, server: Server, tmp_path: Path, axe_source: str
) -> None:
    clip = make_clip(tmp_path / MARKUP_NAME, frames=HELD_FRAMES)
    page.open()
    page.wait(lambda: page.find("#upload").get_attribute("data-videos") == "on")
    assert page.find("#upload-title").text == "Upload pictures and videos"
    note = page.find("#video-note").text
    assert note == "Videos: MP4, MOV or WebM; up to 1 MB and 30 minutes each."
    assert "video/mp4" in (page.find("#file-input").get_attribute("accept") or "")

    page.find("#file-input").send_keys(str(clip))
    card = page.visible("#uploads .card[data-kind=video]")
    assert card.find_element("css selector", ".file-name").text == MARKUP_NAME  # as text
    assert not card.find_elements("css selector", ".file-name img")
    status = card.find_element("css selector", ".status")
    page.wait(
        lambda: f"Hiding faces: {HOLD_AT} of {HELD_FRAMES} frames" in status.text,
        what="the held clip's progress",
    )
    assert status.get_attribute("role") == "status"  # read out politely
    bar = card.find_element("css selector", "progress")
    assert (bar.get_attribute("value"), bar.get_attribute("max")) == (
        str(HOLD_AT),
        str(HELD_FRAMES),
    )
    assert violations(page, axe_source) == []

    (server.data_dir.parent / "gate" / gate_name(clip.read_bytes())).touch()
    page.visible("#uploads .card[data-status=done] button").click()  # Play
    video = page.visible("#result-video")
    page.wait(
        lambda: page.driver.execute_script(
            "const v = arguments[0]; return v.readyState >= 1 && v.duration > 0", video
        ),
        what="the result's metadata",
    )
    src = video.get_attribute("src") or ""
    assert f"/video/{card.get_attribute('data-id')}/file?" in src
    assert "sig=" in src  # the signed playback URL: no bearer header needed
    assert page.find("#download-link").get_attribute("href") == src
    duration = page.driver.execute_script("return arguments[0].duration", video)
    assert duration == pytest.approx(HELD_FRAMES / 10, abs=0.2)
    page.driver.set_script_timeout(20)
    seeked = page.driver.execute_async_script(SEEK, duration * 0.8)
    assert seeked["error"] is None
    assert seeked["time"] == pytest.approx(duration * 0.8, abs=0.2)
    ranged = f'"path": "/video/{card.get_attribute("data-id")}/file", "status": 206'
    page.wait(lambda: ranged in server.logs(), what="the result served by ranges")
    assert violations(page, axe_source) == []

    # The history lists it under "Videos"; its delete, in two steps, removes it.
    video_id = card.get_attribute("data-id")
    row = page.visible(f"#video-list [data-id='{video_id}'][data-status=done]")
    assert row.find_element("css selector", "[data-action=view]").text == "Play"
    row.find_element("css selector", "[data-action=delete]").click()
    row.find_element("css selector", "[data-action=delete]").click()  # "Really delete?"
    page.wait(lambda: not page.find_all(f"#video-list [data-id='{video_id}']"))
    assert page.find("#result").get_attribute("hidden") is not None  # its view closed
    status = httpx.get(f"{server.url}/video/{video_id}", headers=AUTH).status_code
    assert status == 404
