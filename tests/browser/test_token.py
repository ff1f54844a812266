"""The page on a server that requires a token, behind a path prefix (IMAGEBLUR_ROOT_PATH):
the page is public, the API is not; the page asks for the token, keeps it in
sessionStorage only, sends it as a header, and asks again on a 401."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import httpx
import pytest

from browser.conftest import Page
from support import LINUS, Server, run_server

TOKEN = "browser-test-token-0123456789"
PREFIX = "/imageblur"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"IMAGEBLUR_API_TOKEN": TOKEN, "IMAGEBLUR_ROOT_PATH": PREFIX}
    with run_server(tmp_path_factory.mktemp("browser-token") / "data", env=env) as srv:
        yield srv


def test_the_page_is_public_and_the_api_is_not(server: Server) -> None:
    for path in ("/", "/web/js/main.js", "/web/style.css", "/web/icon.svg"):
        assert httpx.get(f"{server.url}{PREFIX}{path}").status_code == 200, path
    assert httpx.get(f"{server.url}{PREFIX}/pictures").status_code == 401
    # The public prefix opens no way around the token to the API or out of the folder.
    host, port = server.url.removeprefix("http://").split(":")
    for raw in ("/web/../pictures", "/web/%2e%2e/pictures", "/web/../../../etc/passwd"):
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", PREFIX + raw)
        assert connection.getresponse().status == 404, raw
        connection.close()


def enter_token(page: Page, token: str) -> None:
    field = page.visible("#token-input")
    field.clear()
    field.send_keys(token)
    page.find("#token-save").click()


def test_the_token_prompt(page: Page) -> None:
    page.allow_console("status of 401")
    page.open(f"{PREFIX}/")
    reason = page.visible("#token-reason")  # the history's 401 brings the prompt
    assert "needs its API token" in reason.text

    enter_token(page, "not-the-right-token-at-all")
    page.wait(lambda: "refused" in page.find("#token-reason").text, what="asked again")
    enter_token(page, TOKEN)
    page.wait(lambda: page.find("#history-message").text == "No pictures yet.")
    assert not page.find("#token-dialog").is_displayed()

    page.find("#file-input").send_keys(str(LINUS))
    card = page.visible("#uploads .card[data-status=done] .thumb img")
    page.wait(lambda: page.image_loaded(card))

    # Kept for this tab only, and never put in a URL.
    storage = page.driver.execute_script("return [sessionStorage.length, localStorage.length]")
    assert storage == [1, 0]
    urls = page.driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert urls and not [u for u in urls if TOKEN in u]
    assert TOKEN not in page.driver.current_url

    # A token the server no longer takes: the next call brings the prompt back.
    page.driver.execute_script("sessionStorage.setItem('imageblur.token', 'revoked-token-123456')")
    page.find("#history-refresh").click()
    page.wait(lambda: "refused" in page.visible("#token-reason").text)
    enter_token(page, TOKEN)
    page.wait(lambda: len(page.find_all("#history-list .history-row")) == 1)


def test_cancelling_the_prompt_says_how_to_give_the_token_later(page: Page) -> None:
    page.allow_console("status of 401")
    page.open(f"{PREFIX}/")
    page.visible("#token-reason")
    page.find("#token-cancel").click()
    message = page.wait(lambda: page.find("#history-message").text, what="history's message")
    assert "No token was entered" in message
    assert "“API token” button at the top of the page" in message
    # The limits need no token: stated all the same.
    assert "HEIC/HEIF" in page.find("#limits").text
    page.find("#token-button").click()
    enter_token(page, TOKEN)
    page.wait(lambda: not page.find("#history-message").text.startswith("The API token"))
