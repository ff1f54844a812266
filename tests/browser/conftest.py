"""Headless Chromium (Debian's, with its ChromeDriver) driven by Selenium against a real
server process. Nothing is downloaded: the browser and driver paths are given, so
Selenium Manager never runs. A failing test leaves a screenshot, the page's HTML and the
browser console in build/browser/ (BROWSER_ARTIFACTS), named in its report."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from support import REPO, Server, wait_until

ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS", REPO / "build" / "browser"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


def _require_browser() -> None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).is_file() or shutil.which(path)):
            raise AssertionError(f"{path} is missing: `make browser` installs it")


def new_driver(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    _require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


@dataclass
class Page:
    """The browser on one server, with the waits and checks the tests share."""

    driver: webdriver.Chrome
    url: str
    allowed_console: list[str] = field(default_factory=list)

    def open(self, path: str = "/") -> None:
        self.driver.get(self.url + path)
        self.wait(lambda: self.driver.execute_script("return document.readyState") == "complete")

    def wait(self, condition: Callable[[], Any], timeout_s: float = 60, what: str = "") -> Any:
        # The page rebuilds its views (after a save, on a status change): an element
        # found by one poll may be gone by the time it is read, so the next poll retries.
        return wait_until(
            condition,
            timeout_s=timeout_s,
            interval_s=0.1,
            what=what or "the page",
            retry_on=(NoSuchElementException, StaleElementReferenceException),
        )

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def visible(self, css: str) -> WebElement:
        return self.wait(
            lambda: next((e for e in self.find_all(css) if e.is_displayed()), False),
            what=f"{css} visible",
        )

    def allow_console(self, *fragments: str) -> None:
        """Console lines the test provokes on purpose (a 401, a 415 answer)."""
        self.allowed_console.extend(fragments)

    def console_errors(self) -> list[str]:
        entries = self.driver.get_log("browser")
        return [
            e["message"]
            for e in entries
            if e["level"] in ("SEVERE", "WARNING")
            and not any(f in e["message"] for f in self.allowed_console)
        ]

    def image_loaded(self, element: WebElement) -> bool:
        return bool(
            self.driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth > 0", element
            )
        )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.when == "call" and report.failed and isinstance(page, Page):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        stem = ARTIFACTS / item.name.replace("/", "_")
        try:
            page.driver.save_screenshot(str(stem.with_suffix(".png")))
            stem.with_suffix(".html").write_text(page.driver.page_source)
            log = "\n".join(str(e) for e in page.driver.get_log("browser"))
            stem.with_suffix(".console.txt").write_text(log)
            report.sections.append(("browser", f"screenshot: {stem.with_suffix('.png')}"))
        except Exception as exc:  # the browser itself may be what failed
            report.sections.append(("browser", f"no screenshot: {exc}"))
    return report


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    chrome = new_driver()
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def page(driver: webdriver.Chrome, server: Server) -> Iterator[Page]:
    """A fresh page of the module's `server` (a module whose page needs more, a token in
    the tab, has a `page` of its own)."""
    yield from fresh_page(driver, server.url)


def fresh_page(driver: webdriver.Chrome, url: str) -> Iterator[Page]:
    """A page with a clean tab state; after the test, no unexpected console errors."""
    driver.set_window_size(1280, 900)
    driver.get(url + "/healthz")
    driver.execute_script("sessionStorage.clear()")
    driver.get_log("browser")  # drop what earlier tests left
    page = Page(driver, url)
    yield page
    # The page declares its own icon; a /favicon.ico 404 can only come from the JSON
    # /healthz visit above, whose icon request may be logged after the drain.
    errors = [e for e in page.console_errors() if "/favicon.ico " not in e]
    assert not errors, f"browser console errors: {errors}"
