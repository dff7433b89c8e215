"""A bounded load test of a local server: `python -m serving.loadtest`.

`--concurrency` clients, each on its own keep-alive connection, send `POST /v1/generate` with one text
until `--requests` requests are done or `--max-seconds` have passed; the report gives errors, latency
percentiles and requests/s. With `--stream` they send `POST /v1/generate_stream` and the report adds the
time to the first token (`ttft_p50_ms`, `ttft_p99_ms`) beside the time to the end of the stream. The target must be a loopback address (127.0.0.1, ::1, localhost): this tool
never sends anything elsewhere.

    # against a running server
    python -m serving.loadtest --url http://127.0.0.1:8000 --concurrency 32 --requests 2000
    # start the server itself, with batching on and then off, and compare
    python -m serving.loadtest --export artifacts/dates-transformer/export --compare

The client is a minimal HTTP/1.1 client on asyncio streams (standard library only), so it costs the
server's cores as little as possible.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

__all__ = ["LOOPBACK_HOSTS", "batch_counters", "check_loopback", "free_port", "run_load", "spawn_server", "stop_server",
           "summarize"]

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
SAMPLE_TEXTS = ("september 27, 1994", "9/27/94", "27.09.1994", "Tuesday, September 27, 1994", "sept. 3, 2001",
                "03-SEP-2001", "MONDAY, NOVEMBER 30, 1992", "1 january 2000")


def check_loopback(url: str) -> tuple[str, int]:
    """(host, port) of `url`; raises ValueError unless it is http:// on a loopback address."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(f"refusing {url!r}: the load test only targets http://127.0.0.1 (or ::1, localhost)")
    return parts.hostname, parts.port or 80


async def _send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str,
                body: bytes) -> tuple[int, bytes]:
    writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                   if k.strip().lower() == "content-length"), None)
    if length is None:
        raise ConnectionError("response without Content-Length")
    return status, await reader.readexactly(length)


async def _send_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str,
                       body: bytes) -> tuple[int, float | None]:
    """Sends one streaming request and reads its chunked event stream to the end: (status, seconds to the
    first `token` event, None if there was none)."""
    started = time.perf_counter()
    writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    status = int(head.split()[1])
    if "transfer-encoding: chunked" not in head:  # a refusal: a JSON body with its length
        length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
        await reader.readexactly(length)
        return status, None
    first_token = None
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if first_token is None and b"event: token" in chunk:
            first_token = time.perf_counter() - started
        if size == 0:
            return status, first_token
        if b"event: error" in chunk:
            status = 0  # the stream began but failed (a timeout, a shutdown)


async def _client(host: str, port: int, path: str, bodies: list[bytes], counter: list[int], total: int,
                  deadline: float, records: list) -> None:
    reader = writer = None
    while counter[0] < total and time.perf_counter() < deadline:
        i = counter[0]
        counter[0] += 1
        started = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            send = _send_stream if path.endswith("_stream") else _send
            status, first = await asyncio.wait_for(send(reader, writer, host, path, bodies[i % len(bodies)]),
                                                   max(deadline - started, 0.001) + 30)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, ValueError):
            status, first = 0, None  # a transport error: reconnect for the next request
            if writer is not None:
                writer.close()
            reader = writer = None
        records.append((status, time.perf_counter() - started, first if path.endswith("_stream") else None))
    if writer is not None:
        writer.close()


async def _load(host: str, port: int, bodies: list[bytes], concurrency: int, total: int,
                max_seconds: float, path: str = "/v1/generate") -> tuple[list, float]:
    records: list = []
    counter = [0]
    started = time.perf_counter()
    deadline = started + max_seconds
    await asyncio.gather(*(_client(host, port, path, bodies, counter, total, deadline, records)
                           for _ in range(concurrency)))
    return records, time.perf_counter() - started


def summarize(records: list, seconds: float) -> dict:
    """Errors, statuses, rate and latency percentiles of `(status, seconds, seconds to first token or
    None)` records; the time-to-first-token percentiles where the records have them (streaming)."""
    statuses = np.array([record[0] for record in records])
    latencies = np.array([record[1] for record in records]) * 1000
    ok = latencies[statuses == 200]
    first = np.array([r[2] for r in records if r[0] == 200 and len(r) > 2 and r[2] is not None]) * 1000
    ttft = {f"ttft_p{q}_ms": round(float(np.percentile(first, q)), 1) for q in (50, 99)} if first.size else {}
    return {**ttft,
        "requests": len(records), "errors": int((statuses != 200).sum()),
        "statuses": {str(k): int(v) for k, v in zip(*np.unique(statuses, return_counts=True), strict=True)},
        "seconds": round(seconds, 2), "requests_per_s": round(len(records) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(float(np.percentile(ok, 50)), 1) if ok.size else None,
        "p90_ms": round(float(np.percentile(ok, 90)), 1) if ok.size else None,
        "p99_ms": round(float(np.percentile(ok, 99)), 1) if ok.size else None,
        "max_ms": round(float(ok.max()), 1) if ok.size else None,
    }


def run_load(url: str, texts: list[str], concurrency: int = 32, requests: int = 2000,
             max_seconds: float = 300.0, warmup: int = 64, options: dict | None = None,
             stream: bool = False) -> dict:
    """Runs the load (after `warmup` unmeasured requests) and returns `summarize`'s figures; `stream`:
    against `/v1/generate_stream`, with the time to the first token."""
    host, port = check_loopback(url)
    bodies = [json.dumps({"inputs": t, **(options or {})}).encode() for t in texts]
    path = "/v1/generate_stream" if stream else "/v1/generate"
    if warmup:
        asyncio.run(_load(host, port, bodies, min(concurrency, warmup), warmup, max_seconds, path))
    records, seconds = asyncio.run(_load(host, port, bodies, concurrency, requests, max_seconds, path))
    result = summarize(records, seconds)
    result.update(concurrency=concurrency, url=url, endpoint=path)
    return result


def batch_counters(url: str) -> tuple[float, float]:
    """(model calls, texts) so far, from the server's /metrics."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    values = {m.group(1): float(m.group(2))
              for m in re.finditer(r"^(serving_batch_texts_(?:sum|count)) (\S+)$", text, re.M)}
    return values.get("serving_batch_texts_count", 0.0), values.get("serving_batch_texts_sum", 0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_server(export_dir: str, port: int, extra: list[str], timeout: float = 120.0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "serving.server", export_dir, "--host", "127.0.0.1", "--port", str(port),
           *extra]
    log = tempfile.TemporaryFile("w+")  # not a pipe: a chatty server must never block on it
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the server exited with {server.returncode}: {log.read().strip()[-500:]}")
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError(f"the server was not ready within {timeout:g} s")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _read_texts(path: Path | None, export_dir: str | None) -> list[str]:
    if path is None and export_dir is not None and (Path(export_dir).parent / "test.tsv").is_file():
        path = Path(export_dir).parent / "test.tsv"  # the run's held-out sources
    if path is None:
        return list(SAMPLE_TEXTS)
    with open(path, encoding="utf-8", newline="") as f:
        texts = [row[0] for row in csv.reader(f, delimiter="\t") if row and row[0].strip()]
    if not texts:
        raise ValueError(f"{path} holds no texts")
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="a running server (loopback only)")
    parser.add_argument("--export", help="start `serving.server` on this export instead of using --url")
    parser.add_argument("--compare", action="store_true", help="with --export: batching on, then off")
    parser.add_argument("--server-args", default="", help="with --export: extra server flags")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop sending after this long")
    parser.add_argument("--warmup", type=int, default=64, help="unmeasured requests first")
    parser.add_argument("--texts", type=Path, help="TSV/text file, first column (default: the run's test.tsv)")
    parser.add_argument("--method", default="greedy")
    parser.add_argument("--stream", action="store_true",
                        help="POST /v1/generate_stream: also report the time to the first token")
    parser.add_argument("--json-out", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.requests < 1 or args.max_seconds <= 0:
        parser.error("--concurrency, --requests and --max-seconds must be positive")
    try:
        check_loopback(args.url)
        texts = _read_texts(args.texts, args.export)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    options = {"method": args.method} if args.method != "greedy" else {}
    modes = ([("batching on", []), ("batching off", ["--no-batching"])] if args.compare
             else [("server", [])])
    results = []
    for label, flags in modes:
        url, server = args.url, None
        if args.export:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            server = spawn_server(args.export, port, flags + args.server_args.split())
        try:
            if args.warmup:
                run_load(url, texts, min(args.concurrency, args.warmup), args.warmup, args.max_seconds, 0,
                         options, args.stream)
            calls, batched = batch_counters(url)
            result = run_load(url, texts, args.concurrency, args.requests, args.max_seconds, 0, options,
                              args.stream)
            calls_after, batched_after = batch_counters(url)
            calls = calls_after - calls
            result.update(mode=label, model_calls=int(calls),
                          mean_batch_texts=round((batched_after - batched) / calls, 2) if calls else None)
        finally:
            if server is not None:
                stop_server(server)
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'mode':<14}{'requests':>9}{'errors':>7}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'batch':>7}"
          + (f"{'ttft p50':>10}{'ttft p99':>10}" if args.stream else ""))
    for r in results:
        print(f"{r['mode']:<14}{r['requests']:>9}{r['errors']:>7}{r['requests_per_s']:>8}{r['p50_ms']!s:>8}"
              f"{r['p99_ms']!s:>8}{r['mean_batch_texts']!s:>7}"
              + (f"{r.get('ttft_p50_ms')!s:>10}{r.get('ttft_p99_ms')!s:>10}" if args.stream else ""))
    return 0 if all(r["errors"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
