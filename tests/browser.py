"""`bench.browser.chromium_page` for tests: skips, saying why, where Chromium or Playwright is missing
(`.ci/run` installs both, so CI runs these tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench import browser


@contextmanager
def chromium_page(width: int = 1200, height: int = 900) -> Iterator:
    if browser.CHROMIUM is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium; .ci/run does)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    with browser.chromium_page(width, height) as page:
        yield page
