"""The README's picture of the try-it page: `python -m bench.page_screenshot EXPORT_DIR [--out PNG]`.

Starts `serving.server` on the export (loopback), opens `/` in a headless Chromium, generates for one text
with beam search and three hypotheses, and saves a screenshot of the whole page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.browser import chromium_page
from serving.loadtest import free_port, spawn_server, stop_server


def screenshot(export_dir: str, out: Path, text: str, width: int = 1000) -> Path:
    port = free_port()
    server = spawn_server(export_dir, port, [])
    try:
        with chromium_page(width=width, height=900) as page:
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('request').dataset.state === 'ready'")
            page.fill("#source", text)
            page.select_option("#method", "beam")
            page.click("#options-panel summary")
            page.fill("#option-num_hypotheses", "3")
            page.click("#generate")
            page.wait_for_function("document.getElementById('request').dataset.state === 'done'")
            page.screenshot(path=str(out), full_page=True)
    finally:
        stop_server(server)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.page_screenshot", description=__doc__.split("\n")[0])
    parser.add_argument("export_dir")
    parser.add_argument("--out", type=Path, default=Path("docs/serving-page.png"))
    parser.add_argument("--text", default="Tuesday, September 27, 1994")
    args = parser.parse_args(argv)
    print(screenshot(args.export_dir, args.out, args.text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
