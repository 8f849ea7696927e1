"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright.

Each browser test module takes one browser for all its tests (a module-scoped fixture built on
:func:`launch`); every page records its console errors and uncaught exceptions, which a test
checks are none.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-dev-shm-usage",
)


def chromium_path() -> Path:
    """Debian's chromium (``.ci/run`` installs it); skip the test where it cannot be had."""
    if CHROMIUM.exists():
        return CHROMIUM
    found = shutil.which("chromium")
    if found:
        return Path(found)
    pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does it)")


@contextmanager
def launch() -> Iterator[Any]:
    """A headless Chromium browser; closed (with Playwright) on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path()), args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    """What a page reported: console errors and uncaught exceptions."""

    errors: list[str] = field(default_factory=list)


def watch(page: Any) -> PageLog:
    """Collect ``page``'s console errors and page errors into a :class:`PageLog`."""
    log = PageLog()
    page.on(
        "console", lambda m: log.errors.append(f"console: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: log.errors.append(f"pageerror: {e}"))
    return log
