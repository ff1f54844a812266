"""The page's choices per upload (issue 26) in a real browser, against a real server: a
batch sent with a mode and metadata groups, an area to hide typed in by its numbers (and
one drawn on a preview shown smaller than the picture), an EXIF-rotated picture marked
upright, and no choice offered that the operator forbids. What the server recorded is
checked through the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.select import Select

from browser.conftest import Page, fresh_page
from browser.test_review import draw_box
from photo_metadata import photo
from support import BILL, LINUS, Server, decode, run_server
from video_copy import make_clip

# A file name that would be markup if the page ever used it as HTML.
MARKUP_NAME = "<img src=x onerror=alert(1)>bill.jpg"
TIMES = "\u00d7"  # the multiplication sign of the page's sizes
HIDE = {"x": 400, "y": 300, "width": 200, "height": 200}  # away from Bill's face


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"IMAGEBLUR_ALLOWED_OPTIONS": "mode,keep_metadata,hide,ignore"}
    with run_server(tmp_path_factory.mktemp("browser-choices") / "data", env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"IMAGEBLUR_ALLOWED_OPTIONS": "hide,review"}
    with run_server(tmp_path_factory.mktemp("browser-strict") / "data", env=env) as srv:
        yield srv


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("choices")
    (folder / MARKUP_NAME).write_bytes(BILL.read_bytes())
    (folder / "rotated.jpg").write_bytes(photo("JPEG", orientation=6, width=120, height=80))
    return {"markup": folder / MARKUP_NAME, "rotated": folder / "rotated.jpg"}


def done_cards(page: Page) -> list[str]:
    cards = page.find_all("#uploads .card[data-status=done]")
    return [c.get_attribute("data-id") or "" for c in cards]


def record(server: Server, image_id: str) -> dict[str, Any]:
    with httpx.Client(base_url=server.url) as api:
        body: dict[str, Any] = api.get(f"/picture/{image_id}").json()
        return body


def test_a_batch_goes_with_the_mode_and_the_metadata_chosen(page: Page, server: Server) -> None:
    page.open()
    Select(page.visible("#mode-select")).select_by_value("solid")
    for group in ("gps", "datetime"):
        page.find(f"#keep-{group}").send_keys(Keys.SPACE)  # ticked from the keyboard
    page.find("#file-input").send_keys(f"{BILL}\n{LINUS}")
    page.wait(lambda: len(done_cards(page)) == 2, timeout_s=180, what="both pictures done")
    for image_id in done_cards(page):
        assert record(server, image_id)["options"] == {
            "mode": "solid",
            "keep_metadata": ["datetime", "gps"],
        }
    for card in page.find_all("#uploads .card"):
        assert card.find_element("css selector", ".options").text == (
            "Options: faces filled with a solid colour; metadata kept: Date and time, GPS position."
        )
    page.find("#uploads .card[data-status=done] button").click()  # Compare: the same words
    assert page.visible("#result-options").text.startswith("Options: faces filled with a solid")
    # The next batch without choices goes with none.
    Select(page.find("#mode-select")).select_by_value("")
    for group in ("gps", "datetime"):
        page.find(f"#keep-{group}").click()
    page.find("#file-input").send_keys(str(LINUS))
    page.wait(lambda: len(done_cards(page)) == 3, timeout_s=120, what="third picture done")
    newest = page.find("#uploads .card").get_attribute("data-id") or ""
    assert record(server, newest)["options"] is None


def type_number(page: Page, css: str, value: int) -> None:
    field = page.find(css)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(value))


def test_an_area_typed_in_by_its_numbers_is_hidden(
    page: Page, server: Server, pictures: dict[str, Path]
) -> None:
    page.open()
    Select(page.visible("#mode-select")).select_by_value("solid")
    page.visible("#areas-open").send_keys(Keys.ENTER)
    assert page.driver.switch_to.active_element == page.find("#areas-file")
    page.find("#areas-file").send_keys(str(pictures["markup"]))
    legend = page.visible("#area-fieldset legend")
    assert f"(2400 {TIMES} 1350)" in legend.text  # the picture's own pixels, not the preview's
    assert MARKUP_NAME in page.find("#areas-message").text  # the name as text ...
    assert not page.find_all("#areas-message *")  # ... never as markup
    # An area past the picture's edge is refused, its field marked and focused.
    type_number(page, "#area-x", 2300)
    type_number(page, "#area-width", 200)
    page.find("#area-add").send_keys(Keys.ENTER)
    assert page.find("#areas-message").text == (
        "The area goes past the right edge: left + width must be at most 2400."
    )
    assert page.find("#area-width").get_attribute("aria-invalid") == "true"
    assert page.driver.switch_to.active_element == page.find("#area-width")
    assert not page.find_all("#areas-list li")
    for name in ("x", "y", "width", "height"):
        type_number(page, f"#area-{name}", HIDE[name])
    # The preview draws the area dotted while the form has focus.
    assert page.find_all("#areas-layer .preview-box")
    page.find("#area-add").send_keys(Keys.ENTER)
    assert page.find("#areas-list li").text.startswith(
        f"Area 1, hidden: 200 {TIMES} 200 px at (400, 300)"
    )
    page.find("#areas-send").send_keys(Keys.ENTER)
    assert page.driver.switch_to.active_element == page.find("#areas-open")
    page.wait(lambda: len(done_cards(page)) == 1, timeout_s=120, what="picture done")
    image_id = done_cards(page)[0]
    assert record(server, image_id)["options"] == {"mode": "solid", "hide": [HIDE]}
    with httpx.Client(base_url=server.url) as api:
        regions = api.get(f"/picture/{image_id}/regions").json()["regions"]
        result = decode(api.get(f"/picture/{image_id}/image").content)
    requested = [r for r in regions if r["source"] == "request"]
    assert [{k: r[k] for k in HIDE} for r in requested] == [HIDE]
    assert requested[0]["hidden"]
    x, y, w, h = HIDE["x"], HIDE["y"], HIDE["width"], HIDE["height"]
    inside = result[y + 8 : y + h - 8, x + 8 : x + w - 8].astype(float)
    before = decode(BILL.read_bytes())[y + 8 : y + h - 8, x + 8 : x + w - 8].astype(float)
    assert inside.std(axis=(0, 1)).max() < 3  # one flat colour ...
    assert np.abs(inside - before).mean() > 5  # ... not the picture's own


def test_an_area_drawn_on_a_smaller_preview_is_in_full_pixels(
    page: Page, server: Server, pictures: dict[str, Path]
) -> None:
    page.open()
    page.visible("#areas-open").click()
    page.find("#areas-file").send_keys(str(BILL))
    page.visible("#area-fieldset")
    shown_width = page.find("#areas-layer").size["width"]
    assert shown_width < 2400  # shown smaller than the picture
    page.find("#areas-draw").click()
    draw_box(page, 1600, 200, 400, 300, (2400, 1350), layer="#areas-layer")
    page.wait(lambda: page.find_all("#areas-list li"), what="the drawn area listed")
    page.find("#areas-send").click()
    page.wait(lambda: len(done_cards(page)) == 1, timeout_s=120, what="picture done")
    (hidden,) = record(server, done_cards(page)[0])["options"]["hide"]
    # Within a preview pixel or two of the drag, scaled back to the picture.
    scale = 2400 / shown_width
    for key, wanted in {"x": 1600, "y": 200, "width": 400, "height": 300}.items():
        assert abs(hidden[key] - wanted) <= 2 * scale + 1, (key, hidden)


def test_a_rotated_picture_is_marked_upright(page: Page, pictures: dict[str, Path]) -> None:
    stored = Image.open(pictures["rotated"]).size  # as stored: its EXIF turns it
    page.open()
    page.visible("#areas-open").click()
    page.find("#areas-file").send_keys(str(pictures["rotated"]))
    legend = page.visible("#area-fieldset legend")
    assert f"({stored[1]} {TIMES} {stored[0]})" in legend.text
    page.find("#areas-cancel").click()
    assert page.find("#areas").get_attribute("hidden") is not None


def test_only_the_choices_the_operator_allows_are_offered(
    driver: webdriver.Chrome, strict_server: Server, pictures: dict[str, Path]
) -> None:
    for page in fresh_page(driver, strict_server.url):
        page.open()
        page.visible("#areas-open")  # hide is allowed ...
        assert not page.find("#mode-choice").is_displayed()  # ... mode and metadata not
        assert not page.find("#metadata-choice").is_displayed()
        page.find("#areas-open").click()
        page.find("#areas-file").send_keys(str(BILL))
        page.visible("#area-fieldset")
        assert not page.find_all("#area-kind")  # no `ignore`: every area is hidden


def test_a_video_of_the_batch_goes_with_the_mode_and_the_groups_it_keeps(
    page: Page, server: Server, tmp_path: Path
) -> None:
    """A video takes the batch's mode and, of its metadata groups, those a video's
    container keeps (location, date): the server would refuse the others."""
    clip = make_clip(tmp_path / "clip.mp4", frames=4)
    page.open()
    Select(page.visible("#mode-select")).select_by_value("pixelate")
    for group in ("gps", "camera_settings"):
        page.find(f"#keep-{group}").send_keys(Keys.SPACE)
    page.find("#file-input").send_keys(str(clip))
    card = "#uploads .card[data-kind=video][data-status=done]"
    page.wait(lambda: page.find_all(card), timeout_s=180, what="the video done")
    video_id = page.find(card).get_attribute("data-id")
    with httpx.Client(base_url=server.url) as api:
        options = api.get(f"/video/{video_id}").json()["options"]
    assert options == {"mode": "pixelate", "keep_metadata": ["gps"]}
