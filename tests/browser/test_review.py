"""The review screen in a real browser, against a real embedded server with review on
(which needs an API token and named reviewers): the regions listed (uncertain candidates
apart), a box drawn with the mouse, saved and re-rendered, a region toggled from the
keyboard, a stale revision reloaded, approval; the API token refused where a reviewer's
token succeeds; a reason asked for before showing a face the detector hid; a save that
stops waiting for its re-render, with a message."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

import support
from browser.conftest import Page, fresh_page
from imageblur.adapters.encrypted_store import EncryptedStore, Keyring
from imageblur.adapters.local_store import LocalObjectStore
from support import BILL, Server, run_server

KEY = base64.b64encode(bytes(range(32))).decode()
API_TOKEN = "browser-api-token-0123456789"
REVIEWER_TOKEN = "browser-reviewer-token-0123456789"  # photo-desk's
# An area of bill-gates.jpg (2400 x 1350) away from the face, with detail to lose.
BOX = (400, 300, 200, 200)
# The example pictures' faces score 0.8-0.95 and nothing else scores above the floor:
# a threshold above them makes the face an uncertain candidate, for the reviewer to hide.
REVIEW = {
    "IMAGEBLUR_REVIEW": "required",
    "IMAGEBLUR_ORIGINALS_KEY": KEY,
    "IMAGEBLUR_API_TOKEN": API_TOKEN,
    "IMAGEBLUR_REVIEWER_TOKENS": f"photo-desk:{REVIEWER_TOKEN}",
}
UNCERTAIN = {**REVIEW, "IMAGEBLUR_DETECTION_THRESHOLD": "0.99"}

# Mean absolute difference between horizontal neighbours inside a box of the shown
# result, at the picture's own size: high for detail, low once the box is hidden.
DETAIL_IN_BOX = """
const [image, x, y, w, h] = arguments;
const canvas = document.createElement('canvas');
canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
const context = canvas.getContext('2d');
context.drawImage(image, 0, 0);
const pixels = context.getImageData(x, y, w, h).data;
let sum = 0;
for (let row = 0; row < h; row += 1) {
  for (let col = 1; col < w; col += 1) {
    const i = (row * w + col) * 4;
    sum += Math.abs(pixels[i] - pixels[i - 4]) + Math.abs(pixels[i + 1] - pixels[i - 3]);
  }
}
return sum / (h * (w - 1));
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The face scores below the threshold: an uncertain candidate."""
    with run_server(tmp_path_factory.mktemp("browser-review") / "data", env=UNCERTAIN) as srv:
        yield srv


@pytest.fixture(scope="module")
def detector_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default threshold: the detector hides the face."""
    with run_server(tmp_path_factory.mktemp("browser-reason") / "data", env=REVIEW) as srv:
        yield srv


@pytest.fixture
def page(request: pytest.FixtureRequest, driver: webdriver.Chrome) -> Iterator[Page]:
    """On `server`, or (parametrized indirectly) on `detector_server`; the tab holds
    photo-desk's token, as the page's prompt would have kept it."""
    server: Server = request.getfixturevalue(getattr(request, "param", "server"))
    for fresh in fresh_page(driver, server.url):
        driver.execute_script(
            "sessionStorage.setItem('imageblur.token', arguments[0])", REVIEWER_TOKEN
        )
        yield fresh


def client(server: Server, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.url, timeout=30, headers=headers)


def wait_status(api: httpx.Client, image_id: str, wanted: str) -> Any:
    return support.wait_status(api, image_id, {wanted})


def regions(api: httpx.Client, image_id: str) -> tuple[str, list[dict[str, Any]]]:
    response = api.get(f"/picture/{image_id}/regions")
    assert response.status_code == 200, response.text
    return response.headers["etag"], response.json()["regions"]


def review_message(page: Page) -> str:
    return str(page.find("#review-message").text)


def shown_result(page: Page) -> tuple[str, float]:
    """The result's object URL and the detail inside BOX, once the image has loaded."""
    image = page.find("#after-image")
    page.wait(lambda: page.image_loaded(image), what="result shown")
    src = image.get_attribute("src") or ""
    return src, float(page.driver.execute_script(DETAIL_IN_BOX, image, *BOX))


def draw_box(
    page: Page,
    x: int,
    y: int,
    width: int,
    height: int,
    picture: tuple[int, int],
    layer: str = "#regions",
) -> None:
    """Drag with the mouse over a regions layer, from (x, y) to the opposite corner, in
    pixels of the picture; Selenium's offsets are from the layer's centre."""
    layer_element = page.find(layer)
    page.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", layer_element)
    size = layer_element.size
    scale_x, scale_y = size["width"] / picture[0], size["height"] / picture[1]

    def offset(px: float, py: float) -> tuple[int, int]:
        return round(px * scale_x - size["width"] / 2), round(py * scale_y - size["height"] / 2)

    actions = ActionChains(page.driver, duration=50)
    actions.move_to_element_with_offset(layer_element, *offset(x, y)).click_and_hold()
    for step in (0.25, 0.5, 0.75, 1.0):
        actions.move_to_element_with_offset(
            layer_element, *offset(x + width * step, y + height * step)
        )
    actions.release().perform()


def lists_items(page: Page, index: int) -> list[Any]:
    lists = page.find_all("#result .regions-list")
    return list(lists[index].find_elements("css selector", "li"))


def open_review(page: Page) -> None:
    page.visible("#uploads .card[data-status=review] button").click()  # Compare
    page.visible("#result .review")


def test_a_reviewer_draws_a_box_toggles_a_region_and_approves(page: Page, server: Server) -> None:
    page.allow_console("status of 412")  # provoked below: a stale revision
    page.open()
    page.find("#file-input").send_keys(str(BILL))
    card = page.wait(
        lambda: next(iter(page.find_all("#uploads .card[data-status=review]")), False),
        timeout_s=180,
        what="picture in review",
    )
    assert "review" in card.find_element("css selector", ".status").text
    image_id = card.get_attribute("data-id") or ""
    open_review(page)
    api = client(server, REVIEWER_TOKEN)
    etag, listed = regions(api, image_id)
    assert etag == '"0"'
    [face] = listed
    assert face["uncertain"] and not face["hidden"], listed
    assert "Revision 0" in page.find("#result .review").text

    # The uncertain candidate is listed apart, and drawn dashed over the picture.
    lists = page.find_all("#result .regions-list")
    labels = [lst.get_attribute("aria-label") for lst in lists]
    assert labels == ["Regions", "Uncertain candidates", "New boxes"]
    counts = [len(lst.find_elements("css selector", "li")) for lst in lists]
    assert counts == [0, 1, 0]
    [dashed] = page.find_all("#regions rect")
    assert "uncertain" in (dashed.get_attribute("class") or "")
    assert dashed.value_of_css_property("stroke-dasharray") not in ("none", "")

    # Draw a box with the mouse, save, and the result changes inside it.
    src_before, detail_before = shown_result(page)
    page.find("#draw-button").click()
    draw_box(page, *BOX, picture=(2400, 1350))
    page.wait(lambda: len(lists[2].find_elements("css selector", "li")) == 1, what="box listed")
    assert len(page.find_all("#regions rect")) == 2
    page.find("#save-button").click()
    page.wait(lambda: "The new result is shown" in review_message(page), timeout_s=120)
    src_after, detail_after = shown_result(page)
    assert src_after != src_before
    assert detail_after < 0.5 * detail_before, (detail_before, detail_after)
    assert "Revision 1" in page.find("#result .review").text
    etag, listed = regions(api, image_id)
    assert etag == '"1"'
    manual = [r for r in listed if r["source"] == "manual"]
    assert len(manual) == 1 and manual[0]["hidden"], listed
    for got, wanted in zip((manual[0][k] for k in ("x", "y", "width", "height")), BOX, strict=True):
        assert abs(got - wanted) <= 8, (manual[0], BOX)

    counts = [len(lists_items(page, i)) for i in range(3)]
    assert counts == [1, 1, 0]  # the manual region listed, the new box saved

    # Hide the uncertain face from the keyboard (space on its checkbox), save with Enter.
    checkbox = page.find(f"#result .review input[data-region='{face['id']}']")
    assert not checkbox.is_selected()
    checkbox.send_keys(Keys.SPACE)
    assert checkbox.is_selected()
    page.find("#save-button").send_keys(Keys.ENTER)
    page.wait(lambda: "Revision 2" in page.find("#result .review").text, timeout_s=120)
    assert "The new result is shown" in review_message(page)
    etag, listed = regions(api, image_id)
    assert etag == '"2"'
    assert next(r for r in listed if r["id"] == face["id"])["hidden"]

    # Someone else saves meanwhile: the page's save gets 412, says so, reloads the list.
    unhide = [{"id": r["id"], "hidden": r["source"] == "manual"} for r in listed]
    changed = api.put(f"/picture/{image_id}/regions", json={"regions": unhide},
                      headers={"If-Match": etag})  # fmt: skip
    assert changed.status_code == 202, changed.text
    page.find("#draw-button").click()
    draw_box(page, 1800, 100, 150, 150, picture=(2400, 1350))
    page.find("#save-button").click()
    page.wait(lambda: "Someone else changed these regions" in review_message(page))
    assert "Revision 3" in page.find("#result .review").text
    reloaded = page.find(f"#result .review input[data-region='{face['id']}']")
    assert not reloaded.is_selected()  # as the other reviewer left it
    assert not lists_items(page, 2)  # the unsaved box is gone with the reload
    wait_status(api, image_id, "review")  # their re-render is done

    # Approve (after the confirmation): the picture is done and released.
    page.find("#approve-button").click()
    page.visible("#approve-confirm").click()
    # (Not "Done" alone in #result-meta: a picture in review reads "Done, waiting for a
    # person". Read through waits: the view is rebuilt once more as the card updates.)
    page.wait(lambda: "Approved" in review_message(page), what="approval said")
    page.wait(lambda: page.find("#result-meta").text.startswith("Done ·"), what="done")
    assert not page.find_all("#result .review")
    body = api.get(f"/picture/{image_id}").json()
    assert body["status"] == "done" and body["review"] == "approved"
    page.wait(lambda: page.find_all(f"#history-list [data-id='{image_id}'][data-status=done]"))
    # The upload card follows too (it showed "waiting for review").
    page.wait(lambda: page.find_all(f"#uploads .card[data-id='{image_id}'][data-status=done]"))


def test_the_api_token_is_refused_where_the_reviewer_token_succeeds(
    page: Page, server: Server
) -> None:
    page.allow_console("status of 403")
    with client(server, API_TOKEN) as api:
        created = api.post("/picture", files={"image": (BILL.name, BILL.read_bytes())})
        image_id = created.json()["id"]
        wait_status(api, image_id, "review")
    # The API token, as the prompt would have kept it for this tab.
    page.driver.execute_script("sessionStorage.setItem('imageblur.token', arguments[0])", API_TOKEN)
    page.open()
    page.visible(f"#history-list .history-row[data-id='{image_id}'] button").click()  # View
    page.visible("#result .review")
    page.wait(lambda: page.find_all("#result .review input[type=checkbox]"))

    for button in ("#save-button", "#approve-button"):
        page.find(button).click()
        if button == "#approve-button":
            page.visible("#approve-confirm").click()
        page.wait(lambda: "need the reviewer token" in review_message(page), what=button)
        page.driver.execute_script("document.getElementById('review-message').textContent = ''")

    page.find("#token-button").click()
    field = page.visible("#token-input")
    field.send_keys(REVIEWER_TOKEN)
    page.find("#token-save").click()
    page.find("#save-button").click()
    page.wait(lambda: "The new result is shown" in review_message(page), timeout_s=120)
    page.find("#approve-button").click()
    page.visible("#approve-confirm").click()
    page.wait(lambda: "Approved" in review_message(page), what="approval said")
    with client(server, REVIEWER_TOKEN) as reviewer:
        body = reviewer.get(f"/picture/{image_id}").json()
        assert body["status"] == "done" and body["review"] == "approved"
        events = reviewer.get(f"/picture/{image_id}/history").json()["events"]
        signed = [(e["action"], e["reviewer"]) for e in events if e["role"] == "reviewer"]
        assert signed == [("corrected", "photo-desk"), ("approved", "photo-desk")]


@pytest.mark.parametrize("page", ["detector_server"], indirect=True)
def test_showing_a_face_the_detector_hid_asks_why(page: Page, detector_server: Server) -> None:
    with client(detector_server, API_TOKEN) as api:
        created = api.post("/picture", files={"image": (BILL.name, BILL.read_bytes())})
        image_id = created.json()["id"]
        wait_status(api, image_id, "review")
        _, listed = regions(api, image_id)
    face = next(r for r in listed if r["hidden"] and not r["uncertain"])
    page.open()
    page.visible(f"#history-list .history-row[data-id='{image_id}'] button").click()  # View
    page.visible("#result .review")
    checkbox = page.wait(
        lambda: page.find(f"#result .review input[data-region='{face['id']}']"), what="face"
    )
    reason = page.find(f"#reason-{face['id']}")
    assert checkbox.is_selected() and not reason.is_displayed()  # hidden: nothing to say

    checkbox.send_keys(Keys.SPACE)  # show the face: the page asks why
    assert not checkbox.is_selected()
    page.visible(f"#reason-{face['id']}")
    page.find("#save-button").click()
    page.wait(lambda: "Say why" in review_message(page), what="a reason asked for")
    assert page.driver.switch_to.active_element == reason  # where to type it
    with client(detector_server, API_TOKEN) as api:
        assert regions(api, image_id)[0] == '"0"'  # nothing was sent

    reason.send_keys("a face on a poster")
    page.find("#save-button").click()
    page.wait(lambda: "The new result is shown" in review_message(page), timeout_s=120)
    with client(detector_server, API_TOKEN) as api:
        events = api.get(f"/picture/{image_id}/history").json()["events"]
    [corrected] = [e for e in events if e["action"] == "corrected"]
    assert corrected["reviewer"] == "photo-desk"
    assert corrected["reasons"] == {face["id"]: "a face on a poster"}
    shown = page.find(f"#result .review input[data-region='{face['id']}']")
    assert not shown.is_selected()  # reloaded: shown now, and no reason asked again
    assert not page.find(f"#reason-{face['id']}").is_displayed()


def test_a_failed_render_says_so_and_shows_the_previous_result(page: Page, server: Server) -> None:
    page.open()
    page.find("#file-input").send_keys(str(BILL))
    card = page.wait(
        lambda: next(iter(page.find_all("#uploads .card[data-status=review]")), False),
        timeout_s=180,
        what="picture in review",
    )
    image_id = card.get_attribute("data-id") or ""
    open_review(page)
    _, detail_before = shown_result(page)
    # An original that opens with the key but that no decoder reads: the render fails.
    (original,) = [p for p in server.stored_files() if p.name.startswith(image_id)
                   and p.parent.name == "originals"]  # fmt: skip
    sealed = EncryptedStore(LocalObjectStore(original.parent), Keyring(base64.b64decode(KEY)))
    sealed.put(original.name, b"\xff\xd8\xff not a picture", content_type="image/jpeg")
    page.find("#draw-button").click()
    draw_box(page, *BOX, picture=(2400, 1350))
    page.find("#save-button").click()
    page.wait(lambda: "could not be made" in review_message(page), timeout_s=120)
    assert "the previous one is shown" in review_message(page)
    with client(server, API_TOKEN) as api:
        error = api.get(f"/picture/{image_id}").json()["error"]
    assert f"({error})" in review_message(page)  # the picture's short public error
    # The previous result: the box drawn was not hidden.
    assert shown_result(page)[1] == pytest.approx(detail_before, rel=0.01)
    assert page.find_all("#result .review")  # still in review: correct again, or approve


# Each read of the page's clock is 16 minutes after the one before, so a wait bounded by
# time (the re-render's, 15 minutes) is over at its first check, whatever the worker does.
LEAPING_CLOCK = """
const real = Date.now.bind(Date);
let leaps = 0;
Date.now = () => real() + (leaps += 1) * 16 * 60 * 1000;
"""


def test_a_save_stops_waiting_for_its_render_with_a_message(page: Page, server: Server) -> None:
    page.open()
    page.find("#file-input").send_keys(str(BILL))
    page.wait(
        lambda: next(iter(page.find_all("#uploads .card[data-status=review]")), False),
        timeout_s=180,
        what="picture in review",
    )
    open_review(page)
    page.driver.execute_script(LEAPING_CLOCK)
    page.find("#save-button").click()
    page.wait(lambda: "still not rendered after 15 minutes" in review_message(page), timeout_s=60)
    assert page.find("#save-button").get_attribute("aria-disabled") == "false"


@pytest.mark.parametrize("page", ["detector_server"], indirect=True)
def test_a_rectangle_the_upload_asked_to_hide_cannot_be_shown(
    page: Page, detector_server: Server
) -> None:
    """A `hide` option's region (source `request`) is listed ticked, disabled and says
    why; the reviewer's save keeps it hidden."""
    corner = {"x": 0, "y": 0, "width": 64, "height": 64}
    with client(detector_server, API_TOKEN) as api:
        created = api.post(
            "/picture",
            data={"hide": json.dumps([corner])},
            files={"image": (BILL.name, BILL.read_bytes())},
        )
        assert created.status_code == 202, created.text
        image_id = created.json()["id"]
        wait_status(api, image_id, "review")
        _, listed = regions(api, image_id)
    [asked] = [r for r in listed if r["source"] == "request"]
    page.open()
    page.visible(f"#history-list .history-row[data-id='{image_id}'] button").click()  # View
    page.visible("#result .review")
    checkbox = page.wait(
        lambda: page.find(f"#result .review input[data-region='{asked['id']}']"), what="box"
    )
    assert checkbox.is_selected() and not checkbox.is_enabled()
    label = page.find(f"#result .review label[for='region-{asked['id']}']").text
    assert "asked for by the upload: always hidden" in label
