"""Chromium plays what the video pipeline writes: H.264 with AAC in MP4 (from MP4 or
MOV), VP9 with Opus in WebM (docs/video.md, "The encoder"). Each result is loaded
into a <video> element from a file and played until its frames advance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from browser.conftest import new_driver
from clips import Clip
from imageblur.bootstrap import build_detector, video_options
from imageblur.config import load_settings
from imageblur.video.pipeline import blur_video

PLAY = """
const [src, done] = [arguments[0], arguments[arguments.length - 1]];
const video = document.createElement("video");
video.muted = true;
video.onerror = () => done({error: video.error && video.error.message});
video.ontimeupdate = () => {
  if (video.currentTime > 0.3) done({time: video.currentTime, width: video.videoWidth,
                                     height: video.videoHeight, duration: video.duration});
};
video.src = src;
document.body.append(video);
video.play().catch((e) => done({error: String(e)}));
"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[webdriver.Chrome]:
    driver = new_driver()
    driver.set_script_timeout(20)
    yield driver
    driver.quit()


@pytest.mark.parametrize(
    ("container", "codec", "audio", "name"),
    [
        ("mp4", "libx264", "aac", "clip.mp4"),
        ("mov", "libx264", "pcm_s16le", "clip.mov"),
        ("webm", "libvpx-vp9", "libopus", "clip.webm"),
    ],
)
def test_chromium_plays_the_result(
    tmp_path: Path, chromium: webdriver.Chrome, container: str, codec: str, audio: str, name: str
) -> None:
    settings = load_settings()
    src = Clip(container=container, codec=codec, audio=[audio], frames=20, fps=20, width=96)
    target = tmp_path / "result"
    result = blur_video(
        src.write(tmp_path / name), target, build_detector(settings), video_options(settings)
    )
    played = target.with_suffix(result.extension)
    target.rename(played)
    page = tmp_path / "page.html"  # a file page may load files beside it
    page.write_text("<!doctype html><title>play</title>")
    chromium.get(page.as_uri())
    outcome = chromium.execute_async_script(PLAY, played.name)
    assert "error" not in outcome, outcome
    assert (outcome["width"], outcome["height"]) == (96, 48)
    assert outcome["duration"] == pytest.approx(1.0, abs=0.06)
