"""`bench.browser.chromium_page` for tests: skips, saying why, where Chromium or Playwright is missing
(`.ci/run` installs both, so CI runs these tests)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench import browser


@contextmanager
def chromium_page(width: int = 1200, height: int = 900) -> Iterator:
    if browser.CHROMIUM is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium; .ci/run does)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    with browser.chromium_page(width, height) as page:
        yield page


@contextmanager
def page_server(export_dir: Path) -> Iterator[str]:
    """`python -m serving.page_server` for `export_dir` on a free port, in a thread: its base URL."""
    from serving.page_server import PageFiles, make_server

    server = make_server(PageFiles.load(export_dir), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
