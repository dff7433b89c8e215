"""Headless Chromium through Playwright, on Debian's `chromium` (Playwright may not download a browser of
its own here): the page tests and the README's screenshot use it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CHROMIUM", "FLAGS", "chromium_page"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without the background-networking flags Chromium keeps trying hosts this machine cannot reach.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium_page(width: int = 1200, height: int = 900) -> Iterator:
    """A fresh page of a headless Chromium (`playwright.sync_api.Page`)."""
    if CHROMIUM is None:
        raise RuntimeError("no chromium on this machine (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()
