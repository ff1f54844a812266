"""The page's batches section (issue 27), on a server that runs batches over `file:`
folders: a batch posted through the API shows up open, with its pace and a progress bar
named after it, is followed while it runs, and ends with its final counts, said once in
the status line; a prefix someone typed is shown as text, never as HTML; axe finds
nothing in the section, light or dark. A server without batch locations never asks, and
a reviewer's token (which the server does not let list batches) sees no section."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver

from browser.conftest import Page, fresh_page
from browser.test_accessibility import AXE, theme, violations
from browser.test_review import API_TOKEN, REVIEW, REVIEWER_TOKEN
from support import BILL, Server, jpeg_bytes, png_bytes, run_server

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch-page-root")


@pytest.fixture(scope="module")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "IMAGEBLUR_BATCH_ROOTS": str(root),
        # One item queued at a time, topped up once a second: a batch of six runs for
        # several seconds, long enough for the page to see it running.
        "IMAGEBLUR_BATCH_WINDOW": "1",
        "IMAGEBLUR_BATCH_PUMP_INTERVAL_S": "1",
        "IMAGEBLUR_MAX_ATTEMPTS": "1",
    }
    with run_server(tmp_path_factory.mktemp("batch-page") / "data", env=env) as srv:
        yield srv


@pytest.fixture
def page(driver: webdriver.Chrome, server: Server) -> Iterator[Page]:
    yield from fresh_page(driver, server.url)
    theme(driver, None)


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.is_file():
        raise AssertionError(f"{AXE} is missing: `make axe` installs it")
    return AXE.read_text()


def _post(server: Server, source: str, target: str, **where: str) -> dict[str, Any]:
    body = {
        "source": {"bucket": source, "prefix": where.get("source_prefix", "photos/")},
        "target": {"bucket": target, "prefix": where.get("target_prefix", "blurred/")},
    }
    answer = httpx.post(f"{server.url}/batches", json=body, timeout=30)
    assert answer.status_code == 202, answer.text
    batch: dict[str, Any] = answer.json()
    return batch


def _row(page: Page, batch_id: str) -> str:
    return f'#batch-list li[data-id="{batch_id}"]'


def test_a_running_batch_is_followed_to_its_final_counts(
    page: Page, server: Server, root: Path, axe_source: str
) -> None:
    source, target = root / "in", root / "out"
    (source / "photos").mkdir(parents=True)
    for name, data in {
        "bill.jpg": BILL.read_bytes(),
        "a.png": png_bytes(),
        "b.jpg": jpeg_bytes(seed=1),
        "c.jpg": jpeg_bytes(seed=2),
        "notes.txt": b"not a picture",
        "broken.jpg": b"\xff\xd8\xff" + b"\x00" * 100,
    }.items():
        (source / "photos" / name).write_bytes(data)
    batch = _post(server, f"file:{source}", f"file:{target}")
    page.open()
    row = _row(page, batch["id"])
    page.visible("#batches")
    page.wait(
        lambda: page.find(row).get_attribute("data-status") == "running",
        what="the batch shown running",
    )
    name = f"file:{source}/photos/ → file:{target}/blurred/"
    assert page.find(f"{row} .file-name").text == name
    # The bar is named by the row's title (what a screen reader says with its value).
    bar = page.find(f"{row} progress")
    label = page.find(f"#{bar.get_attribute('aria-labelledby')}")
    assert label.text == name
    assert "items a second" in page.find(f"{row} .meta").text or "no item ended" in (
        page.find(f"{row} .meta").text
    )
    running = violations(page, axe_source)

    page.wait(
        lambda: page.find(row).get_attribute("data-status") == "done",
        timeout_s=180,
        what="the batch shown done",
    )
    state, counts = (e.text for e in page.find_all(f"{row} .meta"))
    assert state == "Done · 6 of 6 ended"
    assert counts.startswith("4 done, 1 failed, 1 skipped (1 not a picture) · ")
    assert "hidden" in counts  # Bill's face
    bar = page.find(f"{row} progress")
    assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("6", "6")
    assert bar.get_attribute("aria-valuetext") == "6 of 6 ended"
    # Seen open, then ended: said once in the status line.
    message = page.find("#batches-message").text
    assert message.startswith(f"{name}: done; 4 done, 1 failed, 1 skipped")
    # The API agrees with what the page says.
    final = httpx.get(f"{server.url}/batches/{batch['id']}", timeout=30).json()
    assert (final["done"], final["failed"], final["skipped"]) == (4, 1, {"not_an_image": 1})
    done = violations(page, axe_source)
    theme(page.driver, "dark")
    dark = violations(page, axe_source)
    # A long path wraps: no horizontal scroll on a phone.
    page.driver.set_window_size(375, 900)
    widths = page.driver.execute_script(
        "return [window.innerWidth, document.documentElement.scrollWidth]"
    )
    assert widths[1] <= widths[0], widths
    assert {"running": running, "done": done, "dark": dark} == {
        "running": [],
        "done": [],
        "dark": [],
    }


def test_a_hostile_prefix_is_shown_as_text(page: Page, server: Server, root: Path) -> None:
    source, target = root / "hostile-in", root / "hostile-out"
    source.mkdir()
    batch = _post(
        server,
        f"file:{source}",
        f"file:{target}",
        source_prefix=HOSTILE,
        target_prefix="<b>bold</b>",
    )
    page.open()
    row = _row(page, batch["id"])
    page.wait(
        lambda: page.find(row).get_attribute("data-status") == "done",
        what="the empty batch shown done",
    )
    assert page.find(f"{row} .file-name").text == (
        f"file:{source}/{HOSTILE} → file:{target}/<b>bold</b>"
    )
    assert page.find_all("#batches img, #batches b") == []
    assert page.driver.execute_script("return document.querySelectorAll('img[src=x]').length") == 0


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("batch-page-none") / "data") as srv:
        yield srv


@pytest.fixture
def plain_page(driver: webdriver.Chrome, plain_server: Server) -> Iterator[Page]:
    yield from fresh_page(driver, plain_server.url)


def test_a_server_without_batches_is_never_asked(plain_page: Page) -> None:
    page = plain_page
    page.open()
    page.wait(lambda: page.find("#limits").text, what="the limits stated")
    page.wait(lambda: page.find("#history-message").text == "No pictures yet.")
    urls = page.driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert not [u for u in urls if "/batches?" in u]
    assert not page.find("#batches").is_displayed()


@pytest.fixture(scope="module")
def token_server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {**REVIEW, "IMAGEBLUR_BATCH_ROOTS": str(root)}
    with run_server(tmp_path_factory.mktemp("batch-page-token") / "data", env=env) as srv:
        yield srv


@pytest.fixture
def token_page(driver: webdriver.Chrome, token_server: Server) -> Iterator[Page]:
    yield from fresh_page(driver, token_server.url)


def test_the_api_token_sees_batches_and_a_reviewers_does_not(
    token_page: Page, token_server: Server, root: Path
) -> None:
    page = token_page
    source = root / "token-in"
    source.mkdir()
    body = {
        "source": {"bucket": f"file:{source}", "prefix": ""},
        "target": {"bucket": f"file:{root}/token-out", "prefix": ""},
    }
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    answer = httpx.post(f"{token_server.url}/batches", json=body, headers=bearer, timeout=30)
    assert answer.status_code == 202, answer.text
    row = _row(page, answer.json()["id"])
    set_token = "sessionStorage.setItem('imageblur.token', arguments[0])"

    page.driver.execute_script(set_token, API_TOKEN)  # on this origin's /healthz
    page.open()
    page.wait(lambda: page.find(row).is_displayed(), what="the batch shown to the API token")

    # The server decides: a reviewer's token may not list batches, and the page shows none.
    desk = {"Authorization": f"Bearer {REVIEWER_TOKEN}"}
    assert httpx.get(f"{token_server.url}/batches", headers=desk, timeout=30).status_code == 403
    page.allow_console("status of 403")
    page.driver.execute_script(set_token, REVIEWER_TOKEN)
    page.open()
    page.wait(lambda: page.find("#history-message").text, what="the history loaded")
    page.wait(
        lambda: page.driver.execute_script(
            "return performance.getEntriesByType('resource')"
            ".some(e => e.name.includes('/batches?'))"
        ),
        what="the batches asked for",
    )
    assert not page.find("#batches").is_displayed()
    assert page.find_all(row) == []
    assert not page.find("#token-dialog").is_displayed()  # a 403 asks for no other token
