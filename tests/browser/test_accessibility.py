"""The page for everyone: axe-core finds no violation in its main states (light and dark),
the focus ring and the fields' borders stand out 3:1 from what they sit on, buttons
carry their file's name, the compare slider tells its value in words and lines up with
the picture, and a touch screen is asked to choose, not drop. axe-core comes from npm
(`make axe`, at the version of tests/browser/axe/package-lock.json) and is injected by the
test: the page never serves it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from browser.conftest import ARTIFACTS, Page, fresh_page
from browser.test_review import REVIEWER_TOKEN as DESK
from browser.test_review import UNCERTAIN
from support import BILL, LINUS, REPO, Server, run_server

AXE = Path(REPO / "build" / "axe" / "node_modules" / "axe-core" / "axe.min.js")
TOKEN = "a11y-test-token-0123456789"


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.is_file():
        raise AssertionError(f"{AXE} is missing: `make axe` installs it")
    return AXE.read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("a11y") / "data") as srv:
        yield srv


@pytest.fixture
def page(driver: webdriver.Chrome, server: Server) -> Iterator[Page]:
    yield from fresh_page(driver, server.url)
    theme(driver, None)
    driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": False})


def theme(driver: webdriver.Chrome, scheme: str | None) -> None:
    features = [{"name": "prefers-color-scheme", "value": scheme}] if scheme else []
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": features})


def violations(page: Page, axe_source: str) -> list[str]:
    """axe-core's default rules on the page as it is now: each violation, with the nodes."""
    page.driver.execute_script(axe_source)
    result = page.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then((r) => done(r), (e) => done({violations: [{id: String(e)}]}));"
    )
    assert result["violations"] or len(result["passes"]) > 10, "axe checked nothing"
    return [
        f"{v['id']}: {[n.get('target') for n in v.get('nodes', [])]}" for v in result["violations"]
    ]


def upload_and_open(page: Page) -> None:
    page.find("#file-input").send_keys(str(LINUS))
    page.wait(lambda: page.find_all("#uploads .card[data-status=done]"), timeout_s=120)
    page.find("#uploads .card[data-status=done] button").click()  # Compare
    before = page.visible("#before-image")
    page.wait(lambda: page.image_loaded(before))
    page.visible("#compare-range")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_nothing_in_the_main_states(page: Page, axe_source: str, scheme: str) -> None:
    theme(page.driver, scheme)
    page.allow_console("status of 415")
    page.open()
    page.wait(lambda: page.find("#limits").text, what="the limits stated")
    found = {"initial": violations(page, axe_source)}
    page.visible("#areas-open").click()  # areas of one picture, one typed in
    page.find("#areas-file").send_keys(str(LINUS))
    page.visible("#area-add").click()
    page.visible("#remove-area-1")
    page.find("#area-x").click()  # the form has focus: its area is previewed
    found["areas of one picture"] = violations(page, axe_source)
    page.find("#areas-cancel").click()
    upload_and_open(page)
    page.visible("#regions-button").click()
    page.visible("#regions-legend")
    found["compare, regions shown"] = violations(page, axe_source)
    page.find("#file-input").send_keys(str(REPO / "README.md"))  # refused: an error card
    page.visible("#uploads .card .error")
    found["error card"] = violations(page, axe_source)
    page.find("#token-button").click()
    page.visible("#token-input")
    found["token dialog"] = violations(page, axe_source)
    page.find("#token-cancel").click()
    page.driver.set_window_size(375, 900)
    found["phone width"] = violations(page, axe_source)
    assert {state: v for state, v in found.items() if v} == {}


@pytest.fixture(scope="module")
def review_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Review on; the face scores below the threshold (an uncertain candidate)."""
    with run_server(tmp_path_factory.mktemp("a11y-review") / "data", env=UNCERTAIN) as srv:
        yield srv


@pytest.fixture
def review_page(driver: webdriver.Chrome, review_server: Server) -> Iterator[Page]:
    """On the review server, the tab holding a reviewer's token."""
    for fresh in fresh_page(driver, review_server.url):
        driver.execute_script("sessionStorage.setItem('imageblur.token', arguments[0])", DESK)
        yield fresh
    theme(driver, None)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_nothing_on_the_review_screen(
    review_page: Page, axe_source: str, scheme: str
) -> None:
    """The reviewer's states: the review screen with its lists and the box form, a box
    being typed in (previewed), and the approval's confirmation."""
    page = review_page
    theme(page.driver, scheme)
    page.open()
    page.find("#file-input").send_keys(str(BILL))
    page.wait(
        lambda: page.find_all("#uploads .card[data-status=review]"),
        timeout_s=180,
        what="the picture in review",
    )
    page.visible("#uploads .card[data-status=review] button").click()  # Compare
    page.visible("#result .review")
    found = {"review screen": violations(page, axe_source)}
    page.find("#result .review fieldset input").send_keys(Keys.ARROW_UP)  # box previewed
    found["a box being typed in"] = violations(page, axe_source)
    page.visible("#approve-button").click()
    page.visible("#approve-dialog")
    found["approval confirmation"] = violations(page, axe_source)
    page.find("#approve-cancel").click()
    assert {state: v for state, v in found.items() if v} == {}


def luminance(rgb: list[float]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: list[float], b: list[float]) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


# The focused element's ring colour and the colour of what the ring sits on: the nearest
# ancestor with a background (the ring is drawn outside the element, 2 px off).
FOCUS_RING = """
const el = document.activeElement;
const rgb = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
const style = getComputedStyle(el);
let back = el.parentElement;
while (back && (rgb(getComputedStyle(back).backgroundColor)[3] === 0
                || getComputedStyle(back).backgroundColor === 'transparent')) {
  back = back.parentElement;
}
const behind = back ? getComputedStyle(back).backgroundColor : 'rgb(255, 255, 255)';
return {
  what: el.id || el.outerHTML.slice(0, 60), outline: style.outlineStyle,
  ring: rgb(style.outlineColor), behind: rgb(behind), width: parseFloat(style.outlineWidth),
};
"""


def focus_rings(page: Page, presses: int) -> list[dict[str, Any]]:
    rings = []
    for _ in range(presses):
        ActionChains(page.driver).send_keys(Keys.TAB).perform()
        rings.append(page.driver.execute_script(FOCUS_RING))
    return rings


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_focus_ring_and_field_borders_stand_out_3_to_1(page: Page, scheme: str) -> None:
    theme(page.driver, scheme)
    page.open()
    page.wait(
        lambda: page.find_all("#history-list .history-row") or page.find("#history-message").text
    )
    weak = []
    # Header button, the choices (mode, metadata, areas), file input, history controls.
    for ring in focus_rings(page, 14):
        if ring["what"].startswith("<body"):
            break  # past the last control
        if ring["what"] == "" or ring["outline"] == "none" or ring["width"] < 2:
            weak.append(f"no ring on {ring['what']}")
        elif (ratio := contrast(ring["ring"], ring["behind"])) < 3:
            weak.append(f"{ring['what']}: {ratio:.2f}")
    assert weak == []
    # The token field's border, against the dialog and against the field's own fill.
    page.find("#token-button").click()
    field = page.visible("#token-input")
    colours = page.driver.execute_script(
        "const rgb = (t) => t.match(/[\\d.]+/g).map(Number);"
        "const s = getComputedStyle(arguments[0]);"
        "return [rgb(s.borderTopColor), rgb(s.backgroundColor),"
        " rgb(getComputedStyle(document.getElementById('token-dialog')).backgroundColor)];",
        field,
    )
    border, fill, dialog = colours
    assert contrast(border, fill) >= 3 and contrast(border, dialog) >= 3, colours
    page.find("#token-cancel").click()


def test_a_dark_theme_follows_the_system(page: Page) -> None:
    theme(page.driver, "dark")
    page.open()
    upload_and_open(page)
    background = page.driver.execute_script(
        "return getComputedStyle(document.body).backgroundColor.match(/\\d+/g).map(Number)"
    )
    assert luminance(background) < 0.05, background
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.driver.execute_script("window.scrollTo(0, 0)")
    page.driver.save_screenshot(str(ARTIFACTS / "dark-theme.png"))


def test_buttons_carry_their_files_name_and_the_slider_speaks(page: Page) -> None:
    page.open()
    upload_and_open(page)
    name = LINUS.name
    assert page.find("#uploads .card button").get_attribute("aria-label") == f"Compare {name}"
    assert name in (page.find("#download-link").get_attribute("aria-label") or "")
    row = page.visible("#history-list .history-row")
    labels = [b.get_attribute("aria-label") for b in row.find_elements("css selector", "button")]
    assert labels == [f"View {name}", f"Delete {name}"]

    slider = page.find("#compare-range")
    page.driver.execute_script(
        "arguments[0].value = 30; arguments[0].dispatchEvent(new Event('input'))", slider
    )
    assert slider.get_attribute("aria-valuetext") == "30% original, 70% anonymized"
    # The knob's track spans the picture: half a knob past each edge.
    geometry = page.driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "const p = document.getElementById('after-image').getBoundingClientRect();"
        "const rem = parseFloat(getComputedStyle(document.documentElement).fontSize);"
        "const knob = parseFloat(getComputedStyle(arguments[0]).getPropertyValue('--thumb')) * rem;"
        "return [r.left + knob / 2, r.right - knob / 2, p.left, p.right];",
        slider,
    )
    start, end, left, right = geometry
    assert abs(start - left) <= 1 and abs(end - right) <= 1, json.dumps(geometry)


def test_a_touch_screen_is_asked_to_choose_pictures_or_videos(page: Page) -> None:
    page.driver.execute_cdp_cmd(
        "Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 1}
    )
    page.open()
    assert page.driver.execute_script("return matchMedia('(pointer: coarse)').matches")
    page.wait(lambda: page.find("#drop-zone p").text == "Choose pictures or videos:")
