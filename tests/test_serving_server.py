"""The HTTP service: every endpoint, the limits, bad inputs, batching, and a real uvicorn process."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings

import pytest
from helpers import ROOT

from serving.loadtest import check_loopback, run_load
from serving.runtime import DecodingOptions, Runtime
from serving.server import ServerSettings, SettingsError, create_app, main

TEXTS = ["september 27, 1994", "9/27/94", "MONDAY, NOVEMBER 30, 1992"]


def TestClient(app, **kwargs):  # noqa: N802 (stands in for the class)
    with warnings.catch_warnings():  # starlette asks for httpx2, which this project does not need
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    return TestClient(app, **kwargs)


@pytest.fixture(scope="module")
def client(runtime):
    app = create_app(runtime, ServerSettings(max_inputs=8, max_body_bytes=4096, max_wait_ms=2))
    with TestClient(app) as client:
        yield client


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def test_health_readiness_docs(client, runtime):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["max_source_length"] == runtime.max_source_length
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"inputs", "method", "beam_size", "top_p", "seed", "return_attention"} <= set(body["properties"])
    assert client.get("/docs").status_code == 200


def test_not_ready_before_startup(runtime):
    client = TestClient(create_app(runtime))  # no `with`: the lifespan (warm-up) has not run
    assert client.get("/healthz").status_code == 200
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503 and "not ready" in not_ready.json()["error"]
    assert client.post("/v1/generate", json={"inputs": "9/27/94"}).status_code == 503


def test_generate_one_and_many(client, runtime):
    one = client.post("/v1/generate", json={"inputs": TEXTS[0]})
    assert one.status_code == 200
    assert one.json()["outputs"] == [{"text": runtime.generate(TEXTS[:1])[0].text,
                                      "score": pytest.approx(runtime.generate(TEXTS[:1])[0].score, abs=1e-4)}]
    many = client.post("/v1/generate", json={"inputs": TEXTS}).json()
    assert [o["text"] for o in many["outputs"]] == [g.text for g in runtime.generate(TEXTS)]
    assert many["method"] == "greedy" and many["model"] == "transformer"


@pytest.mark.parametrize("request_options, options", [
    ({"method": "beam", "beam_size": 3, "length_penalty": 0.0}, DecodingOptions(method="beam", beam_size=3,
                                                                                length_penalty=0.0)),
    ({"method": "sample", "seed": 11, "top_k": 5, "top_p": 0.9, "temperature": 0.8},
     DecodingOptions(method="sample", seed=11, top_k=5, top_p=0.9, temperature=0.8)),
    ({"max_new_tokens": 3}, DecodingOptions(max_new_tokens=3)),
])
def test_decoding_options(client, runtime, request_options, options):
    got = client.post("/v1/generate", json={"inputs": TEXTS, **request_options})
    assert got.status_code == 200, got.text
    assert [o["text"] for o in got.json()["outputs"]] == [g.text for g in runtime.generate(TEXTS, options)]


def test_tokens_and_attention(client, runtime):
    body = client.post("/v1/generate", json={"inputs": TEXTS[1], "return_attention": True}).json()
    (output,) = body["outputs"]
    expected = runtime.generate(TEXTS[1:2], return_attention=True)[0]
    assert output["tokens"] == expected.tokens and output["source_tokens"] == expected.source_tokens
    assert len(output["attention"]) == len(output["tokens"])
    assert all(len(row) == len(output["source_tokens"]) for row in output["attention"])
    assert all(abs(sum(row) - 1) < 1e-3 for row in output["attention"])
    tokens_only = client.post("/v1/generate", json={"inputs": TEXTS[1], "return_tokens": True}).json()
    assert "attention" not in tokens_only["outputs"][0] and tokens_only["outputs"][0]["token_ids"] == \
        expected.token_ids


BAD_REQUESTS = [
    (b'{"inputs": "9/27/94"', 400, "not valid JSON"),
    (b'{"inputs": "\xff\xfe 94"}', 400, "not valid UTF-8"),
    (b"[" * 3000, 400, "not valid JSON"),
    (b'["9/27/94"]', 422, "must be a JSON object"),
    (b'{"inputs": 94}', 422, "inputs must be"),
    (b'{"inputs": ["ok", 3]}', 422, "inputs must be"),
    (b'{"text": "9/27/94"}', 422, "inputs is required"),
    (b'{"inputs": ""}', 422, "input 0 is empty"),
    (b'{"inputs": ["ok", "  "]}', 422, "input 1 is empty"),
    (b'{"inputs": []}', 422, "inputs is empty"),
    (b'{"inputs": "\\ud800"}', 422, "lone surrogate"),
    (b'{"inputs": "x", "beam_size": "4"}', 422, "beam_size"),
    (b'{"inputs": "x", "beam_size": 2.5}', 422, "beam_size"),
    (b'{"inputs": "x", "return_tokens": 1}', 422, "return_tokens"),
    (b'{"inputs": "x", "method": "nucleus"}', 422, "method"),
    (b'{"inputs": "x", "stream": true}', 422, "unknown field 'stream'"),
    (b'{"inputs": "x", "method": "sample", "temperature": NaN}', 422, "temperature"),
    (b'{"inputs": "x", "top_p": 0}', 422, "top_p"),
    (b'{"inputs": "x", "beam_size": 0}', 422, "beam_size must be >= 1"),
    (b'{"inputs": "x", "beam_size": 9}', 422, "above the limit 8"),
    (b'{"inputs": "x", "max_new_tokens": 1000}', 422, "above the limit"),
    (b'{"inputs": "x", "seed": -1, "method": "sample"}', 422, "seed"),
    (json.dumps({"inputs": ["9/27/94"] * 9}).encode(), 413, "9 inputs; the limit is 8"),
    (json.dumps({"inputs": "1" * 60}).encode(), 413, "tokens long"),
    (json.dumps({"inputs": "9" * 5000}).encode(), 413, "limit is 4096"),
]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_not_declared_json_is_415(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    answer = client.post("/v1/generate", content=b'{"inputs": "9/27/94"}', headers=headers)
    assert answer.status_code == 415 and "Content-Type: application/json" in answer.json()["error"]
    charset = client.post("/v1/generate", content=b'{"inputs": "9/27/94"}',
                          headers={"Content-Type": "application/json; charset=utf-8"})
    assert charset.status_code == 200


def test_a_tiny_temperature_is_served(client, runtime):
    answer = client.post("/v1/generate", json={"inputs": TEXTS, "method": "sample", "temperature": 1e-40,
                                               "seed": 1})
    assert answer.status_code == 200, answer.text
    assert [o["text"] for o in answer.json()["outputs"]] == [g.text for g in runtime.generate(TEXTS)]


@pytest.mark.parametrize("body, status, message", BAD_REQUESTS)
def test_bad_requests_are_clear_4xx_and_the_server_keeps_serving(client, body, status, message):
    answer = client.post("/v1/generate", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"} and message in answer.json()["error"]
    assert client.post("/v1/generate", json={"inputs": "9/27/94"}).status_code == 200


def test_headers_over_16_kib_are_400(client):
    big = client.post("/v1/generate", json={"inputs": "9/27/94"}, headers={"X-Big": "a" * 100_000})
    assert big.status_code == 400 and set(big.json()) == {"error"}
    assert big.json()["error"].startswith("request headers are 1") and "the limit is 16384" in big.json()["error"]
    assert client.post("/v1/generate", json={"inputs": "9/27/94"},
                       headers={"X-Big": "a" * 8_000}).status_code == 200


@pytest.mark.parametrize("bad, message, flag_message", [
    ({"max_batch_size": 0}, "max_batch_size must be >= 1", "--max-batch-size must be >= 1"),
    ({"max_connections": -3}, "max_connections must be >= 1", "--max-connections must be >= 1"),
    ({"request_timeout_s": 0.0}, "request_timeout_s must be > 0 seconds", "--timeout must be > 0 seconds"),
    ({"header_timeout_s": float("nan")}, "header_timeout_s must be > 0 seconds",
     "--header-timeout must be > 0 seconds"),
])
def test_settings_are_checked_where_they_are_built(bad, message, flag_message, capsys):
    with pytest.raises(SettingsError) as raised:
        ServerSettings(**bad)
    assert str(raised.value) == message and raised.value.for_flags() == flag_message
    # The command line prints the same check with its flags, before it loads any export.
    argv = [flag_message.split()[0], str(next(iter(bad.values())))]
    assert main(["no-such-export", *argv]) == 2
    assert capsys.readouterr().err == f"error: {flag_message}\n"


def test_unknown_paths_and_methods_answer_json(client):
    assert client.get("/v2/nothing").status_code == 404 and "error" in client.get("/v2/nothing").json()
    wrong = client.get("/v1/generate")
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_request_timeout_is_408(tiny_export):
    slow = Runtime(tiny_export, intra_op_threads=1)
    generate = slow.generate
    slow.generate = lambda *args, **kwargs: (time.sleep(0.5), generate(*args, **kwargs))[1]
    with TestClient(create_app(slow, ServerSettings(request_timeout_s=0.1))) as client:
        answer = client.post("/v1/generate", json={"inputs": "9/27/94"})
        assert answer.status_code == 408 and "timed out" in answer.json()["error"]
        assert client.get("/healthz").status_code == 200


def test_internal_error_is_500_json_and_not_fatal(tiny_export):
    broken = Runtime(tiny_export, intra_op_threads=1)
    generate = broken.generate

    def fail_once(texts, *args, **kwargs):
        if texts == ["explode"]:
            raise RuntimeError("kaboom")
        return generate(texts, *args, **kwargs)

    broken.generate = fail_once
    with TestClient(create_app(broken), raise_server_exceptions=False) as client:
        answer = client.post("/v1/generate", json={"inputs": "explode"})
        assert answer.status_code == 500 and answer.json() == {"error": "internal error: RuntimeError"}
        assert client.post("/v1/generate", json={"inputs": "9/27/94"}).status_code == 200


def test_metrics_count_requests_and_batches(client):
    before = client.get("/metrics").text
    client.post("/v1/generate", json={"inputs": TEXTS})
    client.post("/v1/generate", content=b"{", headers={"Content-Type": "application/json"})
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    ok = 'serving_requests_total{endpoint="/v1/generate",status="200"}'
    bad = 'serving_requests_total{endpoint="/v1/generate",status="400"}'
    assert _metric(text, ok) == _metric(before, ok) + 1
    assert _metric(text, bad) == _metric(before, bad) + 1
    assert _metric(text, "serving_inputs_total") == _metric(before, "serving_inputs_total") + len(TEXTS)
    assert _metric(text, "serving_batch_texts_count") == _metric(before, "serving_batch_texts_count") + 1
    assert _metric(text, "serving_ready") == 1
    assert "serving_request_seconds_bucket" in text and "serving_queued_texts" in text


# A real server process -----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raw_request(port: int, data: bytes) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        response = b""
        while b"\r\n\r\n" not in response or len(response.split(b"\r\n\r\n", 1)[1]) < int(
                response.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]):
            chunk = s.recv(65536)
            if not chunk:
                break
            response += chunk
    head, body = response.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


HEADER_TIMEOUT_S, MAX_CONNECTIONS = 1.0, 24


@pytest.fixture(scope="module")
def server(tiny_export):
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "serving.server", str(tiny_export), "--port", str(port),
                                "--threads", "1", "--max-wait-ms", "20", "--max-body-bytes", "2048",
                                "--header-timeout", str(HEADER_TIMEOUT_S), "--max-connections",
                                str(MAX_CONNECTIONS)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if urllib.request.urlopen(url + "/readyz", timeout=1).status == 200:
                break
        except OSError:
            time.sleep(0.1)
    yield process, port, url
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_real_server_answers_batches_and_survives_load(server, runtime):
    process, port, url = server
    request = urllib.request.Request(url + "/v1/generate", data=json.dumps({"inputs": TEXTS}).encode(),
                                     headers={"Content-Type": "application/json"})
    body = json.loads(urllib.request.urlopen(request, timeout=10).read())
    assert [o["text"] for o in body["outputs"]] == [g.text for g in runtime.generate(TEXTS)]

    # Bodies the HTTP client libraries would not send: raw bytes, chunked without a length.
    bad_utf8 = b'{"inputs": "\xc3\x28"}'
    status, error = _raw_request(port, b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                 b"application/json\r\nContent-Length: %d\r\n\r\n" % len(bad_utf8) + bad_utf8)
    assert status == 400 and "UTF-8" in error["error"]
    chunk = b'{"inputs": "' + b"9" * 3000 + b'"}'
    status, error = _raw_request(port, b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                                 b"\r\nContent-Type: application/json"
                                 b"\r\n\r\n%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n")
    assert status == 413 and "limit of 2048 bytes" in error["error"]

    result = run_load(url, TEXTS, concurrency=8, requests=120, max_seconds=60, warmup=8)
    assert result["errors"] == 0 and result["requests"] == 120
    assert result["p50_ms"] is not None and result["p99_ms"] >= result["p50_ms"]
    metrics = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    calls = _metric(metrics, "serving_batch_texts_count")
    texts = _metric(metrics, "serving_batch_texts_sum")
    assert texts / calls > 1.5  # 8 concurrent clients share model calls
    assert process.poll() is None


def _read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (or 5 s pass)."""
    data = b""
    sock.settimeout(5)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _json_status(response: bytes) -> tuple[int, dict]:
    head, body = response.split(b"\r\n\r\n", 1)
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("head", [
    b"Content-Length: abc\r\n", b"Content-Length: -5\r\n", b"X-Big: " + b"a" * 300_000 + b"\r\n",
], ids=["content-length-abc", "content-length-negative", "oversized-headers"])
def test_malformed_http_gets_json_400(server, head):
    _, port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + head +
                  b"\r\n{}")
        status, error = _json_status(_read_all(s))
    assert status == 400 and "invalid HTTP request" in error["error"]


def test_real_server_refuses_headers_over_16_kib(server):
    _, port, _ = server
    request = b'POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: ' \
              b'21\r\n\r\n{"inputs": "9/27/94"}'
    # 100 KB usually arrives in one read, which h11's own limit (on an incomplete head) lets through.
    status, error = _raw_request(port, request % (b"X-Big: " + b"a" * 100_000 + b"\r\n"))
    assert status == 400 and "headers" in error["error"], error
    status, body = _raw_request(port, request % (b"X-Big: " + b"a" * 8_000 + b"\r\n"))
    assert status == 200 and len(body["outputs"]) == 1


def test_slow_clients_are_dropped_and_connections_limited(server):
    process, port, url = server
    slow = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(MAX_CONNECTIONS + 6)]
    try:
        for s in slow:  # headers started, never finished
            s.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answers = [_json_status(_read_all(s)) for s in slow]
        waited = time.monotonic() - started
    finally:
        for s in slow:
            s.close()
    statuses = [status for status, _ in answers]
    # Connections past the limit are refused at once; the rest are dropped after the header timeout.
    assert statuses.count(503) >= 6 and set(statuses) == {408, 503}, statuses
    assert any("did not arrive within 1 s" in e["error"] for status, e in answers if status == 408)
    # The server drops them (its 1 s header timeout), not the client's own 10 s socket timeout; the
    # margin is for a loaded machine, not a measurement.
    assert waited < HEADER_TIMEOUT_S + 8
    request = urllib.request.Request(url + "/v1/generate", data=json.dumps({"inputs": TEXTS[0]}).encode(),
                                     headers={"Content-Type": "application/json"})
    assert urllib.request.urlopen(request, timeout=10).status == 200
    assert process.poll() is None


def test_real_server_stops_cleanly_on_sigterm(server):
    process, _, _ = server
    process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells why it stopped.
    assert process.wait(timeout=20) in (0, -signal.SIGTERM)
    assert "Traceback" not in process.communicate()[1]


def test_server_refuses_a_broken_export_with_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "serving.server", str(tmp_path / "none")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "does not exist" in done.stderr


def test_load_test_only_targets_loopback():
    assert check_loopback("http://127.0.0.1:8000") == ("127.0.0.1", 8000)
    for url in ("http://10.0.0.1:8000", "http://example.com", "https://127.0.0.1:8000", "http://0.0.0.0:80"):
        with pytest.raises(ValueError, match="refusing"):
            check_loopback(url)
    with pytest.raises(ValueError, match="refusing"):
        run_load("http://192.168.1.1:8000", ["x"], requests=1)
