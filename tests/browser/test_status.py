"""What the page says, as a screen reader hears it (the live regions' text as it is
written), and what it says when things go wrong: each message names its file and is
written once per change, "Uploading…" is announced, a deletion is announced (by the
history's status line), an outage
shows on the waiting card and in the history until it ends, and the server's limits are
stated and checked before a file is sent."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from selenium import webdriver

from browser.conftest import Page, fresh_page
from browser.test_accessibility import AXE, violations
from support import BILL, LINUS, Server, free_port, run_server

MAX_UPLOAD_BYTES = 1_000_000
MAX_PIXELS = 5_000_000  # the example pictures are smaller (3.24 megapixels at most)
# A MutationObserver that keeps, for each live region of the upload cards and the page,
# every text written into it (with the region's number), and each card's status text at
# the moment the card was inserted.
LISTEN = """
window.heard = [];
window.insertedWith = [];
let next = 0;
const ids = new WeakMap();
const id = (region) => { if (!ids.has(region)) ids.set(region, next++); return ids.get(region); };
new MutationObserver((mutations) => {
  for (const m of mutations) {
    for (const node of m.addedNodes) {
      if (node.nodeType === 1 && node.matches('#uploads > li')) {
        insertedWith.push(node.querySelector('[role=status]').textContent);
      }
    }
    const element = m.target.nodeType === 1 ? m.target : m.target.parentElement;
    const region = element.closest('#uploads [role=status], #uploads [role=alert]');
    if (region && m.type === 'childList' && m.target === region && m.addedNodes.length) {
      heard.push([id(region), region.textContent]);
    } else if (region && m.type === 'characterData') {
      heard.push([id(region), region.textContent]);
    }
  }
}).observe(document.body, { subtree: true, childList: true, characterData: true });
"""


def listen(page: Page) -> None:
    page.driver.execute_script(LISTEN)


def heard(page: Page) -> list[tuple[int, str]]:
    return [(n, text) for n, text in page.driver.execute_script("return window.heard")]


def by_region(records: list[tuple[int, str]]) -> dict[int, list[str]]:
    regions: dict[int, list[str]] = {}
    for number, text in records:
        regions.setdefault(number, []).append(text)
    return regions


def upload(page: Page, *files: Path) -> None:
    page.find("#file-input").send_keys("\n".join(str(f) for f in files))


def card_status(page: Page, name: str) -> str:
    for card in page.find_all("#uploads .card"):
        if card.find_element("css selector", ".file-name").text == name:
            text = page.driver.execute_script(
                "return arguments[0].querySelector('[role=status]').textContent", card
            )
            return str(text)
    return ""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "IMAGEBLUR_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        "IMAGEBLUR_MAX_PIXELS": str(MAX_PIXELS),
    }
    with run_server(tmp_path_factory.mktemp("status") / "data", env=env) as srv:
        yield srv


def test_each_status_names_its_file_and_is_written_once_per_change(page: Page) -> None:
    page.open()
    listen(page)
    upload(page, BILL, LINUS)
    page.wait(
        lambda: len(page.find_all("#uploads .card[data-status=done]")) == 2,
        timeout_s=180,
        what="both pictures done",
    )
    # Each card's status region was empty when the card came, then filled: a region
    # filled as it is inserted is not read out.
    assert page.driver.execute_script("return window.insertedWith") == ["", ""]
    regions = by_region(heard(page))
    for name in (BILL.name, LINUS.name):
        texts = next(t for t in regions.values() if t[0].startswith(f"{name}: "))
        assert texts[0] == f"{name}: Uploading…", texts
        assert texts[-1].startswith(f"{name}: Done: 1 face hidden"), texts
        assert all(t.startswith(f"{name}: ") for t in texts), texts
        # Written only when the words change: the same text never twice in a row.
        assert all(a != b for a, b in itertools.pairwise(texts)), texts


def test_a_deletion_is_announced_with_the_files_name(page: Page, server: Server) -> None:
    with server.client() as client:
        data = LINUS.read_bytes()
        created = client.post("/picture", files={"image": ("to-delete.jpg", data, "image/jpeg")})
        server.wait_done(client, created.json()["id"])
    page.open()
    row = f"#history-list .history-row[data-id='{created.json()['id']}']"
    delete = page.visible(f"{row} button.danger")
    assert "to-delete.jpg" in (delete.get_attribute("aria-label") or "")
    delete.click()
    delete.click()
    # Said in the history's status line (a live region), naming the file.
    page.wait(
        lambda: "Deleted to-delete.jpg." in page.find("#history-message").text,
        what="the deletion announced",
    )


def test_the_limits_are_stated_and_checked_before_sending(
    page: Page, server: Server, tmp_path: Path
) -> None:
    too_big = tmp_path / "big.jpg"
    too_big.write_bytes(b"\xff\xd8\xff" + b"\0" * (MAX_UPLOAD_BYTES + 1))
    wide = tmp_path / "wide.png"
    out = io.BytesIO()
    Image.new("RGB", (2500, 2200), (90, 120, 150)).save(out, "PNG")  # 5.5 megapixels, small
    wide.write_bytes(out.getvalue())
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    with server.client() as client:
        before = client.get("/pictures").json()["total"]

    page.open()
    limits = page.wait(lambda: page.find("#limits").text, what="the limits stated")
    assert limits == (
        "Accepted: JPEG, PNG, WebP, HEIC/HEIF or AVIF; up to 1 MB and 5 megapixels each."
    )
    accept = page.find("#file-input").get_attribute("accept") or ""
    assert ".heic" in accept and "image/avif" in accept

    upload(page, too_big, wide, notes)
    shown = "#uploads .card .error:not([hidden])"
    page.wait(lambda: len(page.find_all(shown)) == 3, what="three refusals")
    errors = {
        card.find_element("css selector", ".file-name").text: card.find_element(
            "css selector", ".error"
        ).text
        for card in page.find_all("#uploads .card")
    }
    assert "too large" in errors["big.jpg"] and "at most 1 MB" in errors["big.jpg"]
    assert "too many pixels" in errors["wide.png"]
    assert "2500 x 2200 pixels (5.5 megapixels)" in errors["wide.png"]
    assert "not a picture the service accepts" in errors["notes.txt"]
    assert "JPEG, PNG, WebP, HEIC/HEIF or AVIF" in errors["notes.txt"]
    # Refused in the page: none of them reached the server.
    with server.client() as client:
        assert client.get("/pictures").json()["total"] == before
    sent = page.driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.initiatorType === 'xmlhttprequest').length"
    )
    assert sent == 0


def test_a_renamed_text_file_gets_the_servers_list_once(page: Page, tmp_path: Path) -> None:
    renamed = tmp_path / "holiday.jpg"
    renamed.write_text("a text file with a picture's name\n")
    page.allow_console("status of 415")
    page.open()
    upload(page, renamed)
    error = page.visible("#uploads .card .error")
    assert "This is not a picture the service accepts. Not a supported image: send" in error.text
    assert error.text.count("HEIC/HEIF") == 1  # one list, the server's


# The outage: a server started as a subprocess (the API alone, so that the picture waits
# for a worker), stopped while the picture waits, then started again on the same port.


@pytest.fixture
def lone_api(tmp_path: Path) -> Iterator[tuple[Server, int, Path]]:
    port = free_port()
    data = tmp_path / "data"
    with run_server(data, command="api", port=port) as srv:
        yield srv, port, data


@pytest.fixture
def api_page(driver: webdriver.Chrome, lone_api: tuple[Server, int, Path]) -> Iterator[Page]:
    yield from fresh_page(driver, lone_api[0].url)


OUTAGE = "Cannot reach the server; retrying; the last news is from "


def test_an_outage_shows_on_the_waiting_card_and_in_the_history_until_it_ends(
    api_page: Page, lone_api: tuple[Server, int, Path]
) -> None:
    page, (api, port, data) = api_page, lone_api
    page.allow_console("ERR_CONNECTION_REFUSED", "Failed to load resource")
    page.open()
    listen(page)
    upload(page, LINUS)
    page.wait(lambda: card_status(page, LINUS.name).endswith("Waiting for a worker…"))
    page.wait(lambda: page.find_all("#history-list .history-row"), what="history row")

    api.process.terminate()
    api.process.wait(timeout=30)
    # Seen on the card within seconds (the page polls every second): the bound is loose.
    page.wait(lambda: OUTAGE in card_status(page, LINUS.name), timeout_s=15, what="on card")
    page.wait(lambda: OUTAGE in page.find("#history-outage").text, what="in the history")
    assert "stale" in (page.find("#history-list").get_attribute("class") or "")
    if not AXE.is_file():
        raise AssertionError(f"{AXE} is missing: `make axe` installs it")
    assert violations(page, AXE.read_text()) == []  # the outage state, for everyone too
    before = len(heard(page))
    # Started again on the same port and data, now with a worker, which takes up the
    # picture the stopped API had queued in its memory.
    restart_env = {
        "IMAGEBLUR_RECONCILE_INTERVAL_S": "1",
        "IMAGEBLUR_PENDING_GRACE_S": "0",
        "IMAGEBLUR_QUEUED_GRACE_S": "0",
    }
    with run_server(data, command="serve", port=port, env=restart_env):
        page.wait(lambda: not page.find("#history-outage").text, what="outage line gone")
        page.wait(
            lambda: card_status(page, LINUS.name).endswith("Done: 1 face hidden"),
            timeout_s=120,
            what="done after the restart",
        )
        assert "stale" not in (page.find("#history-list").get_attribute("class") or "")
    # The outage text was written once, not at every failed poll.
    texts: list[Any] = [t for _, t in heard(page)]
    assert sum(OUTAGE in t for t in texts) == 1, texts
    assert len(texts) - before <= 3, texts


def test_the_limits_are_asked_again_until_the_server_answers(page: Page, server: Server) -> None:
    page.allow_console("ERR_BLOCKED_BY_CLIENT", "Failed to load resource")
    page.driver.execute_cdp_cmd("Network.enable", {})
    # The whole URL: a pattern would also block web/js/limits.js, and the page with it.
    page.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": [f"{server.url}/limits"]})
    try:
        page.open()
        # The page asks for the limits first thing; by the time the history is shown
        # that first request has failed.
        page.wait(lambda: page.find("#history-position").text or page.find("#history-message").text)
        assert page.find("#limits").text == ""
    finally:
        page.driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
        page.driver.execute_cdp_cmd("Network.disable", {})
    # Asked again, without a reload: the page was loaded once.
    page.wait(lambda: "HEIC/HEIF" in page.find("#limits").text, what="stated once answered")
