"""Headless Chromium for the web UI's tests, driven through ChromeDriver.

``browser`` (a pytest fixture in conftest.py) gives each test a fresh
:class:`Browser`; every page a test looks at is kept as a screenshot in
``$BBB_SCREENSHOTS`` (default ``target/test-logs/screenshots``), named after
the test, so a person can see what the test saw.
"""

from __future__ import annotations

import os
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("BBB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("BBB_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = Path(os.environ.get("BBB_SCREENSHOTS", REPO / "target" / "test-logs" / "screenshots"))

#: A laptop's window and a phone's.
LAPTOP = (1280, 900)
PHONE = (390, 844)


class Browser:
    """One headless Chromium window, named after the test that uses it."""

    def __init__(self, test_name: str, size: tuple[int, int] = LAPTOP):
        options = Options()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            f"--window-size={size[0]},{size[1]}",
        ):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.shots = 0

    def quit(self) -> None:
        try:
            self.driver.quit()
        except WebDriverException:
            pass

    def open(self, url: str) -> None:
        """Load ``url`` and wait until the document has loaded."""
        self.driver.get(url)
        self.wait_for(lambda: self.driver.execute_script("return document.readyState") == "complete", 15, "page load")

    def resize(self, size: tuple[int, int]) -> None:
        self.driver.set_window_size(*size)

    def screenshot(self, what: str) -> Path:
        """Keep what the window shows now as ``<test>-<n>-<what>.png``."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        path = SCREENSHOTS / f"{self.name}-{self.shots:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', what)}.png"
        self.driver.save_screenshot(str(path))
        return path

    @property
    def title(self) -> str:
        return self.driver.title

    def text(self) -> str:
        """The page's visible text."""
        return self.driver.find_element(By.TAG_NAME, "body").text

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def sign_in(self, origin: str, name: str, password: str, next_path: str = "/") -> None:
        """Sign in as a person does: the sign-in form at ``/login``, the name
        and the password typed in, Enter; then wait to be sent on to
        ``next_path``, signed in as ``name``."""
        self.open(f"{origin}/login?" + urllib.parse.urlencode({"next": next_path}))
        assert self.title == "Sign in · bbb", self.title
        field = self.find("input#name")
        field.clear()
        field.send_keys(name)
        self.find("input#password").send_keys(password, Keys.ENTER)
        self.wait_for(
            lambda: self.title != "Sign in · bbb" and urllib.parse.urlsplit(self.driver.current_url).path == next_path,
            15,
            f"{name} to be signed in",
        )
        self.wait_for(lambda: f"Signed in as {name}" in self.text(), 15, f"the page to show {name}")

    def wait_for(self, check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
        """Wait until ``check()`` is truthy (page content changes as a person waits)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = check()
                if value:
                    return value
            except WebDriverException as e:
                last = e
            time.sleep(interval)
        self.screenshot(f"timeout-{what}")
        raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" ({last})" if last else ""))

    def wait_for_text(self, text: str, timeout: float = 15) -> None:
        self.wait_for(lambda: text in self.text(), timeout, f"text {text!r}")
