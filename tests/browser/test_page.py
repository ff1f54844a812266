"""The web page in a real browser, against a real embedded server: upload, watch, compare,
errors, history, and the layout at phone and desktop widths."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from browser.conftest import Page
from support import BILL, LINUS, Server, jpeg_bytes, run_server
from video_copy import make_clip

# A file name that would be markup if the page ever used it as HTML.
MARKUP_NAME = "<img src=x onerror=alert(1)>linus.jpg"
MAX_UPLOAD_BYTES = 1_000_000  # the example pictures are smaller


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Videos off: tests/browser/test_video_page.py covers the page with them.
    env = {"IMAGEBLUR_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES), "IMAGEBLUR_VIDEO": "false"}
    with run_server(tmp_path_factory.mktemp("browser") / "data", env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pictures")
    shutil.copy(BILL, folder / BILL.name)
    shutil.copy(LINUS, folder / LINUS.name)
    shutil.copy(LINUS, folder / MARKUP_NAME)
    (folder / "notes.txt").write_text("not a picture\n")
    (folder / "huge.jpg").write_bytes(jpeg_bytes(1200, 1000))
    return {
        "bill": folder / BILL.name,
        "linus": folder / LINUS.name,
        "markup": folder / MARKUP_NAME,
        "text": folder / "notes.txt",
        "huge": folder / "huge.jpg",
    }


def upload(page: Page, *files: Path) -> None:
    page.find("#file-input").send_keys("\n".join(str(f) for f in files))


def done_cards(page: Page) -> list[str]:
    cards = page.find_all("#uploads .card[data-status=done]")
    return [c.get_attribute("data-id") or "" for c in cards]


def test_both_example_pictures_are_uploaded_anonymized_and_shown(
    page: Page, pictures: dict[str, Path]
) -> None:
    page.open()
    upload(page, pictures["bill"], pictures["linus"])
    page.wait(lambda: len(done_cards(page)) == 2, timeout_s=180, what="both pictures done")

    cards = page.find_all("#uploads .card")
    names = sorted(c.find_element("css selector", ".file-name").text for c in cards)
    assert names == sorted([BILL.name, LINUS.name])
    for card in cards:
        assert "face" in card.find_element("css selector", ".status").text
        image = card.find_element("css selector", ".thumb img")
        page.wait(lambda image=image: page.image_loaded(image), what="result shown")
        assert (image.get_attribute("src") or "").startswith("blob:")
    # The history lists them too, newest first, with status and face count.
    page.wait(lambda: len(page.find_all("#history-list .history-row[data-status=done]")) >= 2)
    save_readme_screenshot(page)


def save_readme_screenshot(page: Page) -> None:
    """BROWSER_README_SCREENSHOT=docs/page.jpg: refresh the README's picture of the page."""
    target = os.environ.get("BROWSER_README_SCREENSHOT")
    if not target:
        return
    page.driver.set_window_size(1100, 900)
    page.driver.execute_script("window.scrollTo(0, 0)")
    shot = Image.open(io.BytesIO(page.driver.get_screenshot_as_png())).convert("RGB")
    shot.thumbnail((880, 880))
    shot.save(target, "JPEG", quality=80, optimize=True)


def test_before_after_view_uses_the_local_file(page: Page, pictures: dict[str, Path]) -> None:
    page.open()
    upload(page, pictures["markup"])
    page.wait(lambda: len(done_cards(page)) == 1, timeout_s=120, what="picture done")
    assert page.find("#uploads .file-name").text == MARKUP_NAME  # the name shown as text ...
    assert not page.find_all("#uploads .file-name *")  # ... never parsed as markup
    page.find("#uploads .card button").click()  # Compare

    after, before = page.visible("#after-image"), page.visible("#before-image")
    page.wait(lambda: page.image_loaded(after) and page.image_loaded(before))
    assert (before.get_attribute("src") or "").startswith("blob:")
    assert (after.get_attribute("src") or "").startswith("blob:")
    assert before.get_attribute("src") != after.get_attribute("src")

    slider = page.visible("#compare-range")
    page.driver.execute_script(
        "arguments[0].value = 20; arguments[0].dispatchEvent(new Event('input'))", slider
    )
    assert "80%" in page.driver.execute_script("return arguments[0].style.clipPath", before)
    slider.send_keys("\ue012")  # ArrowLeft: the slider works from the keyboard too
    assert "81%" in page.driver.execute_script("return arguments[0].style.clipPath", before)

    link = page.visible("#download-link")
    assert (link.get_attribute("href") or "").startswith("blob:")
    assert link.get_attribute("download") == "<img src=x onerror=alert(1)>linus-blurred.jpg"
    assert page.find("#result-name").text == MARKUP_NAME
    # The hidden regions, drawn over the result on demand (review off: no review screen).
    page.visible("#regions-button").click()
    page.wait(lambda: len(page.find_all("#regions rect.hidden-region")) == 1, what="face drawn")
    assert "1 hidden region" in page.visible("#regions-legend").text
    assert not page.find_all("#result .review")
    page.find("#regions-button").click()
    page.wait(lambda: not page.find("#regions-legend").is_displayed())
    if shots := os.environ.get("BROWSER_SHOTS"):
        for width in (375, 1920):
            page.driver.set_window_size(width, 1000)
            page.driver.execute_script("document.getElementById('result').scrollIntoView()")
            page.driver.save_screenshot(f"{shots}/compare-{width}.png")


DROP_A_PICTURE = """
const done = arguments[arguments.length - 1];
const canvas = document.createElement('canvas');
canvas.width = 64; canvas.height = 48;
canvas.getContext('2d').fillRect(8, 8, 20, 20);
canvas.toBlob((blob) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], 'dropped.jpg', { type: 'image/jpeg' }));
  const zone = document.getElementById('drop-zone');
  const drop = { dataTransfer: transfer, bubbles: true, cancelable: true };
  zone.dispatchEvent(new DragEvent('drop', drop));
  done();
}, 'image/jpeg');
"""


def test_a_dropped_picture_is_uploaded(page: Page) -> None:
    page.open()
    page.driver.execute_async_script(DROP_A_PICTURE)
    page.wait(lambda: len(done_cards(page)) == 1, timeout_s=60, what="dropped picture done")
    assert page.find("#uploads .file-name").text == "dropped.jpg"


def test_a_picture_from_the_history_compares_with_a_file_chosen_again(
    page: Page, server: Server, pictures: dict[str, Path]
) -> None:
    with server.client() as client:
        data = pictures["linus"].read_bytes()
        created = client.post("/picture", files={"image": ("again.jpg", data, "image/jpeg")})
        server.wait_done(client, created.json()["id"])
    page.open()
    row = f"#history-list .history-row[data-id='{created.json()['id']}']"
    page.visible(f"{row} button").click()  # View
    page.visible("#after-image")
    # The note is written after the image shows: waited for, not read at once.
    page.wait(lambda: "stays on your computer" in page.find("#result-note").text)
    # A file the browser cannot show (like HEIC): it says so instead of a slider.
    page.visible("#compare-file").send_keys(str(pictures["text"]))
    page.wait(lambda: "cannot show" in page.find("#result-note").text)
    assert not page.find("#compare-range").is_displayed()
    page.find("#compare-file").send_keys(str(pictures["linus"]))
    before = page.visible("#before-image")
    page.wait(lambda: page.image_loaded(before))
    assert page.find("#compare-range").is_displayed()


def test_a_text_file_gets_a_visible_error(page: Page, pictures: dict[str, Path]) -> None:
    page.allow_console("status of 415")
    page.open()
    upload(page, pictures["text"])
    error = page.visible("#uploads .card .error")
    assert "not a picture the service accepts" in error.text
    assert "JPEG, PNG, WebP, HEIC/HEIF or AVIF" in error.text


def test_a_file_too_large_gets_a_visible_error(page: Page, pictures: dict[str, Path]) -> None:
    assert pictures["huge"].stat().st_size > MAX_UPLOAD_BYTES
    page.allow_console("status of 413")
    page.open()
    upload(page, pictures["huge"])
    error = page.visible("#uploads .card .error")
    assert "too large" in error.text


def test_history_pages_and_deletes(page: Page, server: Server) -> None:
    with server.client() as client:
        ids = [
            client.post(
                "/picture", files={"image": (f"noise-{i}.jpg", jpeg_bytes(seed=i), "image/jpeg")}
            ).json()["id"]
            for i in range(12)
        ]
        for image_id in ids:
            server.wait_done(client, image_id)
        total = client.get("/pictures").json()["total"]
    page.open()
    page.wait(lambda: len(page.find_all("#history-list .history-row")) == 10)
    first = page.find_all("#history-list .history-row")[0]
    assert first.get_attribute("data-id") == ids[-1]  # newest first
    assert f"of {total}" in page.find("#history-position").text

    page.find("#history-older").click()
    page.wait(lambda: page.find("#history-position").text.startswith("11\N{EN DASH}"))
    page.find("#history-newer").click()
    page.wait(lambda: page.find("#history-position").text.startswith("1\N{EN DASH}"))

    row = page.find(f"#history-list .history-row[data-id='{ids[-1]}']")
    delete = row.find_element("css selector", "button.danger")
    delete.click()
    assert delete.text == "Really delete?"  # a stray click deletes nothing
    delete.click()
    page.wait(lambda: not page.find_all(f"#history-list [data-id='{ids[-1]}']"))
    with server.client() as client:
        assert client.get(f"/picture/{ids[-1]}").status_code == 404


@pytest.mark.parametrize("width", [375, 1920])
def test_layout_fits_the_screen(page: Page, width: int) -> None:
    page.driver.set_window_size(width, 900)
    page.open()
    page.wait(lambda: page.find("#history-position").text or page.find("#history-message").text)
    inner = page.driver.execute_script("return window.innerWidth")
    scroll = page.driver.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= inner, f"horizontal scroll at {width} px: {scroll} > {inner}"
    # Every control has a label a screen reader can read.
    unlabeled = page.driver.execute_script(
        """return [...document.querySelectorAll('input, button, a.button')].filter(e =>
             !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
             && !e.textContent.trim()).map(e => e.id || e.outerHTML)"""
    )
    assert unlabeled == []


def test_the_page_and_its_files_are_served_with_a_strict_policy(server: Server) -> None:
    page = httpx.get(server.url + "/")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "img-src 'self' blob:" in policy
    assert "media-src 'self';" in policy  # a video's result: this origin, no blob:, no other
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(server.url + "/web/js/main.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")


def test_without_videos_the_page_offers_none(page: Page, tmp_path: Path) -> None:
    """IMAGEBLUR_VIDEO off: GET /limits says no videos and the page stays as it was."""
    page.open()
    page.wait(lambda: page.find("#upload").get_attribute("data-videos") == "off")
    page.wait(lambda: page.find("#file-input").get_attribute("accept"))
    assert "video" not in page.find("#upload").text.lower()
    assert not page.find("#video-history").is_displayed()
    assert "video" not in (page.find("#file-input").get_attribute("accept") or "")
    clip = make_clip(tmp_path / "clip.mp4", frames=2)
    page.find("#file-input").send_keys(str(clip))
    error = page.visible("#uploads .card .error")
    assert "This is not a picture the service accepts." in error.text
