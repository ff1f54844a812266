"""The page from the keyboard alone, in a real browser against a real embedded server: a
reviewer who adds a missed face's box by its numbers, ticks and unticks a region, saves
and approves (after a confirmation) without a pointer; and where focus goes after each
action (Delete, paging, Close, Dismiss) and while the history refreshes around it. Keys
go to whatever has focus (`document.activeElement`), as they would for a person."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

import support
from browser.conftest import Page, fresh_page
from browser.test_review import API_TOKEN, REVIEWER_TOKEN, UNCERTAIN
from support import BILL, LINUS, Server, jpeg_bytes, run_server

# A name that would be markup if the page ever used it as HTML.
MARKUP_NAME = "<img src=x onerror=alert(1)>bill.jpg"
BOX = {"x": 400, "y": 300, "width": 200, "height": 200}  # away from the face
TAB_LIMIT = 120  # more than the page has controls: a Tab loop that ends means not found


@pytest.fixture(scope="module")
def review_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Review on; the face scores below the threshold (an uncertain candidate)."""
    with run_server(tmp_path_factory.mktemp("keyboard-review") / "data", env=UNCERTAIN) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("keyboard") / "data") as srv:
        yield srv


def press(page: Page, *keys: str) -> None:
    """Keys to the focused element, as typed."""
    ActionChains(page.driver).send_keys(*keys).perform()


def focused(page: Page, css: str) -> bool:
    script = "return document.activeElement.matches(arguments[0])"
    return bool(page.driver.execute_script(script, css))


def active(page: Page) -> Any:
    return page.driver.execute_script(
        "const e = document.activeElement; return [e.id, e.closest('[data-id]')?.dataset.id"
        " || null, e.dataset.action || null, e.textContent.trim()]"
    )


def tab_to(page: Page, css: str, *, backwards: bool = False) -> None:
    """Tab (or Shift+Tab) until focus is on `css`, as a person would."""
    for _ in range(TAB_LIMIT):
        if focused(page, css):
            return
        press(page, *((Keys.SHIFT, Keys.TAB) if backwards else (Keys.TAB,)))
        if backwards:
            ActionChains(page.driver).key_up(Keys.SHIFT).perform()
    key = "Shift+Tab" if backwards else "Tab"
    raise AssertionError(f"{css} not reached with {key}: focus on {active(page)}")


def type_number(page: Page, value: int) -> None:
    press(page, Keys.CONTROL, "a")
    ActionChains(page.driver).key_up(Keys.CONTROL).perform()
    press(page, str(value))


def message(page: Page) -> str:
    return str(page.find("#review-message").text)


def region_state(page: Page, region_id: str) -> str:
    label = page.find(f"label[for='region-{region_id}']")
    return str(label.find_element("css selector", ".region-state").text)


def drawn_classes(page: Page) -> list[str]:
    return [r.get_attribute("class") or "" for r in page.find_all("#regions rect")]


# --- the reviewer -------------------------------------------------------------------


@pytest.fixture
def review_page(driver: webdriver.Chrome, review_server: Server) -> Iterator[Page]:
    for fresh in fresh_page(driver, review_server.url):
        driver.execute_script(
            "sessionStorage.setItem('imageblur.token', arguments[0])", REVIEWER_TOKEN
        )
        yield fresh


def picture_in_review(server: Server, name: str) -> tuple[str, dict[str, Any]]:
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Authorization": f"Bearer {API_TOKEN}"}) as api:  # fmt: skip
        created = api.post("/picture", files={"image": (name, BILL.read_bytes(), "image/jpeg")})
        assert created.status_code == 202, created.text
        image_id = created.json()["id"]
        support.wait_status(api, image_id, {"review"})
        [face] = api.get(f"/picture/{image_id}/regions").json()["regions"]
    return image_id, face


def add_box_by_keyboard(page: Page) -> None:
    tab_to(page, "#box-x")
    # First past the right edge: the page says so and puts focus where to fix it.
    for i, name in enumerate(("x", "y", "width", "height")):
        if i:
            press(page, Keys.TAB)
        assert focused(page, f"#box-{name}")
        type_number(page, 2300 if name == "x" else BOX[name])
    press(page, Keys.TAB, Keys.ENTER)
    page.wait(lambda: "past the right edge" in message(page), what="box refused, said")
    assert focused(page, "#box-width[aria-invalid=true]")
    assert not page.find_all("#regions rect.hidden-region")
    tab_to(page, "#box-x", backwards=True)
    type_number(page, BOX["x"])
    # The arrow keys size the box; it is previewed on the picture while the form has focus.
    tab_to(page, "#box-height")
    press(page, Keys.ARROW_UP)
    preview = page.wait(lambda: page.find_all("#regions rect.preview-box"), what="preview")[0]
    assert preview.get_attribute("height") == str(BOX["height"] + 1)
    press(page, Keys.ARROW_DOWN)
    preview = page.find("#regions rect.preview-box")
    assert [int(preview.get_attribute(k) or -1) for k in BOX] == list(BOX.values())
    press(page, Keys.TAB)
    assert focused(page, "#add-box-button")
    press(page, Keys.ENTER)
    page.wait(lambda: "New box 1 added" in message(page), what="box added, said")
    assert focused(page, "#add-box-button")  # where the next box is added


def save_by_keyboard(page: Page, revision: int) -> None:
    tab_to(page, "#save-button")
    press(page, Keys.ENTER)
    page.wait(lambda: f"Revision {revision}" in page.find("#result .review").text, timeout_s=180)
    page.wait(lambda: "The new result is shown" in message(page))
    assert focused(page, "#save-button"), active(page)  # the reviewer goes on from there


def test_a_reviewer_adds_a_box_and_approves_with_the_keyboard_only(
    review_page: Page, review_server: Server
) -> None:
    page = review_page
    image_id, face = picture_in_review(review_server, MARKUP_NAME)
    assert face["uncertain"] and not face["hidden"]
    page.open()
    tab_to(page, f"#history-list [data-id='{image_id}'] [data-action=view]")
    press(page, Keys.ENTER)
    page.wait(lambda: page.find_all(f"#region-{face['id']}"), what="review screen")
    assert focused(page, "#result-title")
    # Regions drawn, and the toggle says so (not "Show hidden regions", unpressed).
    button = page.find("#regions-button")
    assert button.get_attribute("aria-pressed") == "true" and button.text == "Hide the regions"
    assert drawn_classes(page) == ["shown-region uncertain"]
    assert "shown" in region_state(page, face["id"])

    add_box_by_keyboard(page)
    if shots := os.environ.get("BROWSER_SHOTS"):  # to look at: the hatching, the form
        page.driver.execute_script("document.getElementById('result').scrollIntoView()")
        page.driver.save_screenshot(f"{shots}/review-keyboard.png")
        page.driver.execute_script("document.querySelector('#result .review').scrollIntoView()")
        page.driver.save_screenshot(f"{shots}/review-keyboard-form.png")
    assert sorted(drawn_classes(page)) == ["hidden-region", "shown-region uncertain"]
    legend = page.find("#regions-legend").text
    assert "1 hidden region" in legend and "1 shown region" in legend, legend

    # Tick the face (hide it), then untick it: the label and the status line say which.
    tab_to(page, f"#region-{face['id']}", backwards=True)
    press(page, Keys.SPACE)
    page.wait(lambda: "hidden" in message(page))
    assert region_state(page, face["id"]) == "— hidden (not saved yet)"
    assert "hidden-region uncertain" in drawn_classes(page)
    press(page, Keys.SPACE)
    page.wait(lambda: "shown" in message(page))
    assert region_state(page, face["id"]) == "— shown"
    assert focused(page, f"#region-{face['id']}")
    save_by_keyboard(page, 1)

    # Approve: a dialog names the file and what is hidden; Escape backs out of it.
    tab_to(page, "#approve-button")
    press(page, Keys.ENTER)
    text = page.visible("#approve-text").text
    assert f"Release {MARKUP_NAME} with 1 region hidden" in text, text
    assert not page.find_all("#approve-text *")  # the name shown as text, never markup
    assert focused(page, "#approve-cancel")  # Enter at once releases nothing
    press(page, Keys.ESCAPE)
    page.wait(lambda: not page.find("#approve-dialog").is_displayed(), what="dialog closed")
    assert focused(page, "#approve-button")
    press(page, Keys.ENTER)
    page.visible("#approve-dialog")
    press(page, Keys.TAB)
    assert focused(page, "#approve-confirm")
    press(page, Keys.ENTER)
    page.wait(lambda: "Approved" in message(page), timeout_s=60, what="approval said")
    assert focused(page, "#review-message")  # the screen went: its news has the focus

    with httpx.Client(base_url=review_server.url, timeout=30,
                      headers={"Authorization": f"Bearer {REVIEWER_TOKEN}"}) as api:  # fmt: skip
        body = api.get(f"/picture/{image_id}").json()
        stored = api.get(f"/picture/{image_id}/regions").json()["regions"]
    assert body["status"] == "done" and body["review"] == "approved"
    [manual] = [r for r in stored if r["source"] == "manual"]
    assert {k: manual[k] for k in BOX} == BOX and manual["hidden"]
    assert not next(r for r in stored if r["id"] == face["id"])["hidden"]


# --- focus around the history, the result view and the cards --------------------------


def make_pictures(server: Server, count: int) -> list[str]:
    with server.client() as client:
        ids = [
            client.post(
                "/picture", files={"image": (f"key-{i}.jpg", jpeg_bytes(seed=i), "image/jpeg")}
            ).json()["id"]
            for i in range(count)
        ]
        for image_id in ids:
            server.wait_done(client, image_id)
    return ids


def row_ids(page: Page) -> list[str]:
    return [r.get_attribute("data-id") or "" for r in page.find_all("#history-list .history-row")]


def test_focus_stays_on_its_history_row_while_an_upload_finishes(
    page: Page, server: Server, tmp_path: Path
) -> None:
    make_pictures(server, 2)
    page.open()
    page.wait(lambda: len(row_ids(page)) >= 2)
    old = row_ids(page)[1]
    # Rows that do not change are not rebuilt: a mark on each stays through refreshes.
    page.driver.execute_script(
        "document.querySelectorAll('#history-list .history-row').forEach(r => { r.kept = true })"
    )
    picture = tmp_path / "new.jpg"
    shutil.copy(LINUS, picture)
    page.find("#file-input").send_keys(str(picture))
    tab_to(page, f"#history-list [data-id='{old}'] [data-action=delete]")
    page.wait(lambda: page.find_all("#uploads .card[data-status=done]"), timeout_s=120)
    new = page.find("#uploads .card").get_attribute("data-id")
    page.wait(lambda: page.find_all(f"#history-list [data-id='{new}'][data-status=done]"))
    assert row_ids(page)[0] == new
    assert active(page)[1:3] == [old, "delete"]
    kept = page.driver.execute_script(
        "return [...document.querySelectorAll('#history-list .history-row')].map(r => !!r.kept)"
    )
    assert kept[1:] == [True] * (len(kept) - 1)


def test_focus_after_paging_deleting_and_closing(page: Page, server: Server) -> None:
    make_pictures(server, 11)
    page.open()
    page.wait(lambda: len(row_ids(page)) == 10)
    with server.client() as client:
        total = client.get("/pictures").json()["total"]
    assert 10 < total <= 20  # two pages: each pager button ends disabled

    # A pager button that becomes disabled hands focus to the other one.
    tab_to(page, "#history-older")
    press(page, Keys.ENTER)
    page.wait(lambda: page.find("#history-position").text.startswith("11\N{EN DASH}"))
    assert focused(page, "#history-newer")
    press(page, Keys.ENTER)
    page.wait(lambda: page.find("#history-position").text.startswith("1\N{EN DASH}"))
    assert focused(page, "#history-older")

    # Delete: the second step is said; then focus is on the row that took its place.
    ids = row_ids(page)
    name = page.find(f"#history-list [data-id='{ids[1]}'] .file-name").text
    tab_to(page, f"#history-list [data-id='{ids[1]}'] [data-action=delete]", backwards=True)
    press(page, Keys.ENTER)
    button = page.driver.switch_to.active_element
    assert button.text == "Really delete?"
    assert "Really delete" in (button.get_attribute("aria-label") or "")
    assert f"again to delete {name}" in page.find("#history-message").text
    press(page, Keys.ENTER)
    page.wait(lambda: ids[1] not in row_ids(page), what="row deleted")
    page.wait(lambda: f"Deleted {name}." in page.find("#history-message").text)
    assert active(page)[1:3] == [ids[2], "delete"]

    # Close gives focus back to the View that opened the result.
    tab_to(page, f"#history-list [data-id='{ids[0]}'] [data-action=view]", backwards=True)
    press(page, Keys.ENTER)
    page.visible("#after-image")
    assert focused(page, "#result-title")
    press(page, Keys.TAB)
    assert focused(page, "#result-close")
    press(page, Keys.ENTER)
    page.wait(lambda: not page.find("#result").is_displayed())
    assert active(page)[1:3] == [ids[0], "view"]


def test_dismiss_moves_focus_to_the_next_card(page: Page, tmp_path: Path) -> None:
    page.allow_console("status of 415")
    page.open()
    files = []
    for name in ("one.txt", "two.txt"):
        (tmp_path / name).write_text("not a picture\n")
        files.append(str(tmp_path / name))
    page.find("#file-input").send_keys("\n".join(files))
    page.wait(lambda: len([b for b in page.find_all("#uploads .card button")
                           if b.text == "Dismiss"]) == 2)  # fmt: skip
    _, second = page.find_all("#uploads .card")
    second_name = second.find_element("css selector", ".file-name").text
    tab_to(page, "#uploads .card:first-child .toolbar button:last-child", backwards=True)
    press(page, Keys.ENTER)
    page.wait(lambda: len(page.find_all("#uploads .card")) == 1)
    card = page.driver.execute_script("return document.activeElement.closest('.card')")
    assert card is not None
    assert card.find_element("css selector", ".file-name").text == second_name
