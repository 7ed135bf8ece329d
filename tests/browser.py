"""A real browser for the gallery tests: Debian's chromium (`make browser-setup`), headless, driven by Playwright.

No browser is downloaded: Playwright's bundled driver starts the system chromium. Every page opened through
``open_page`` records console errors, uncaught exceptions and every request it makes, so a test can say that a
page loaded cleanly and fetched nothing from the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

ARTIFACTS = REPO / ".dedup-data" / "test-artifacts"
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    found = os.environ.get("DEDUP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("chromium not found: run `make browser-setup` (Debian's chromium, apt) or set DEDUP_CHROMIUM")
    return found


@dataclasses.dataclass
class PageLog:
    errors: list[str] = dataclasses.field(default_factory=list)  # console errors and uncaught exceptions
    requests: list[str] = dataclasses.field(default_factory=list)  # every URL the page asked for


@contextlib.contextmanager
def open_page(url: str, *, width: int = 1280, height: int = 900) -> Iterator[tuple[object, PageLog]]:
    """(page, log) for ``url`` in a fresh headless chromium with a fresh profile; closed afterwards."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: it is a dev dependency (make setup)")
    log = PageLog()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda message: log.errors.append(f"console {message.type}: {message.text}")
                    if message.type in ("error", "warning") else None)
            page.on("pageerror", lambda error: log.errors.append(f"uncaught: {error}"))
            page.on("request", lambda request: log.requests.append(request.url))
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            yield page, log
        finally:
            browser.close()


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
