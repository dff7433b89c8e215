"""The HTTP server under load: requests/s and p50/p99 latency at several client counts, batching on/off.

Uses the load tester of `serving.loadtest` (its server spawner and loopback-only client): for each mode a
fresh server starts on a free loopback port, takes unmeasured warm-up requests, then each concurrency.
"""

from __future__ import annotations

from collections.abc import Callable

from serving import loadtest

__all__ = ["run_server"]

MODES = (("batching on", []), ("batching off", ["--no-batching"]))


def run_server(export_dir: str, concurrencies=(1, 8, 32), requests: int = 300, max_seconds: float = 20.0,
               warmup: int = 32, log: Callable[[str], None] = print) -> list[dict]:
    """One row per (mode, concurrency): {"mode", "concurrency", "requests", "errors", "requests_per_s",
    "p50_ms", "p99_ms", ...} (see `serving.loadtest.summarize`)."""
    texts = loadtest._read_texts(None, export_dir)
    rows = []
    for mode, flags in MODES:
        port = loadtest.free_port()
        url = f"http://127.0.0.1:{port}"
        server = loadtest.spawn_server(export_dir, port, flags)
        try:
            loadtest.run_load(url, texts, min(8, warmup), warmup, max_seconds, 0)
            for concurrency in concurrencies:
                result = loadtest.run_load(url, texts, concurrency, requests, max_seconds, 0)
                result.update(mode=mode)
                rows.append(result)
                log(f"server {mode:<13} {concurrency:>3} clients {result['requests_per_s']:8.1f} req/s "
                    f"p50 {result['p50_ms']} ms p99 {result['p99_ms']} ms errors {result['errors']}")
        finally:
            loadtest.stop_server(server)
    return rows
