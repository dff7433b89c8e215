"""`POST /v1/generate_stream`: server-sent events that join to `/v1/generate`'s output, errors, and the
batcher that streamed and ordinary requests share (disconnects and timeouts stop the work)."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from test_serving_server import TestClient, server  # noqa: F401 (the real server fixture)

from serving.batching import MicroBatcher
from serving.runtime import DecodingOptions, Runtime, StreamEvent
from serving.server import ServerSettings, create_app

TEXTS = ["september 27, 1994", "9/27/94", "MONDAY, NOVEMBER 30, 1992"]


def parse_sse(body: str) -> list[tuple[str, dict]]:
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.fixture(scope="module")
def client(runtime):
    with TestClient(create_app(runtime, ServerSettings(max_inputs=8, max_wait_ms=2))) as client:
        yield client


@pytest.mark.parametrize("options", [{}, {"method": "beam", "beam_size": 4, "num_hypotheses": 2},
                                     {"method": "sample", "seed": 3}, {"target_prefix": "19"}])
def test_the_stream_joins_to_the_plain_answer(client, options):
    body = {"inputs": TEXTS, **options}
    plain = client.post("/v1/generate", json=body).json()["outputs"]
    answer = client.post("/v1/generate_stream", json=body)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(answer.text)
    assert events[-1] == ("end", {"inputs": 3, "method": body.get("method", "greedy"), "model": "transformer"})
    for index, expected in enumerate(plain):
        pieces = [data["text"] for name, data in events if name == "token" and data["index"] == index]
        done = [data for name, data in events if name == "done" and data["index"] == index]
        assert "".join(pieces) == expected["text"] and len(done) == 1
        assert {k: v for k, v in done[0].items() if k != "index"} == expected


@pytest.mark.parametrize("body, status, message", [
    ({"inputs": [""]}, 422, "input 0 is empty"),
    ({"inputs": "9/27/94", "beam_size": 0}, 422, "beam_size must be >= 1"),
    ({"inputs": "9/27/94", "num_hypotheses": 2}, 422, "needs method beam"),
    ({"inputs": "9/27/94", "stream": True}, 422, "unknown field 'stream'"),
])
def test_bad_requests_are_refused_before_the_stream(client, body, status, message):
    answer = client.post("/v1/generate_stream", json=body)
    assert answer.status_code == status and message in answer.json()["error"]
    assert client.post("/v1/generate", json=body).json() == answer.json()  # the same messages


def test_a_timeout_mid_stream_is_an_error_event(tiny_export):
    slow = Runtime(tiny_export, intra_op_threads=1)
    factory = slow.in_place_step  # the step the runtime's searches use, slowed down

    def slow_factory(top_k=None):  # greedy steps with the one-column top-k step
        step = factory(top_k=top_k)
        return lambda *args: (time.sleep(0.05), step(*args))[1]

    slow.in_place_step = slow_factory
    with TestClient(create_app(slow, ServerSettings(request_timeout_s=0.3))) as client:
        events = parse_sse(client.post("/v1/generate_stream", json={"inputs": TEXTS[0]}).text)
        assert events[-1][0] == "error" and events[-1][1]["status"] == 408
        assert "timed out" in events[-1][1]["error"]
        assert client.get("/healthz").status_code == 200


def test_a_full_queue_is_503_before_the_stream(runtime):
    with TestClient(create_app(runtime, ServerSettings(max_queued_texts=2))) as client:
        answer = client.post("/v1/generate_stream", json={"inputs": TEXTS})
        assert answer.status_code == 503 and "busy" in answer.json()["error"]


# The batcher ---------------------------------------------------------------------------------------------

def test_streams_and_plain_requests_share_model_calls(tiny_export):
    runtime = Runtime(tiny_export, intra_op_threads=1)
    batches = []
    batcher = MicroBatcher(lambda *a: runtime.generate(*a[:3], seeds=a[3]), max_wait_s=0.2,
                           run_stream=lambda *a: runtime.generate_stream(*a[:3], seeds=a[3]),
                           on_batch=lambda texts, requests, seconds: batches.append((texts, requests)))

    async def scenario():
        await batcher.start()
        try:
            async def streamed():
                return [event async for event in batcher.stream(TEXTS[:2], DecodingOptions())]

            events, plain = await asyncio.gather(streamed(), batcher.submit(TEXTS[2:], DecodingOptions()))
            return events, plain
        finally:
            await batcher.stop()

    events, plain = asyncio.run(scenario())
    assert batches == [(3, 2)]  # one model call for both requests
    assert plain[0].text == runtime.generate(TEXTS[2:])[0].text
    texts = ["".join(e.text for e in events if e.index == i) for i in range(2)]
    assert texts == [g.text for g in runtime.generate(TEXTS[:2])]


def test_a_stream_that_goes_away_stops_its_search():
    steps = []

    def slow_stream(texts, options, return_attention, seeds):  # a search of 200 steps, one event each
        for index in range(200):
            time.sleep(0.005)
            steps.append(index)
            yield StreamEvent(0, "x", [5])
        yield StreamEvent(0, "", [], done=True, generation=None)

    batcher = MicroBatcher(lambda *a: None, run_stream=slow_stream)

    async def scenario():
        await batcher.start()
        try:
            events = batcher.stream(["text"], DecodingOptions())
            first = await events.__anext__()
            await events.aclose()
            await asyncio.sleep(0.3)  # the worker notices at its next event
            return first, len(steps), batcher.queued_texts
        finally:
            await batcher.stop()

    first, taken, queued = asyncio.run(scenario())
    assert first.text == "x" and taken < 120 and queued == 0


def test_the_real_server_streams_and_survives_a_disconnect(server):  # noqa: F811
    _, port, url = server
    body = json.dumps({"inputs": TEXTS[0]}).encode()
    request = (b"POST /v1/generate_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # hang up after the first bytes
        s.sendall(request)
        assert s.recv(64).startswith(b"HTTP/1.1 200")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        response = b""
        while b"event: end" not in response:
            chunk = s.recv(65536)
            assert chunk, response
            response += chunk
    assert b"event: done" in response and b"HTTP/1.1 200" in response
    import urllib.request

    assert urllib.request.urlopen(url + "/healthz", timeout=5).status == 200


def test_the_load_test_streams_with_time_to_first_token(server):  # noqa: F811
    from serving.loadtest import run_load

    _, _, url = server
    result = run_load(url, TEXTS, concurrency=8, requests=40, max_seconds=60, warmup=4, stream=True)
    assert result["errors"] == 0 and result["requests"] == 40 and result["endpoint"] == "/v1/generate_stream"
    assert 0 < result["ttft_p50_ms"] <= result["p50_ms"] and result["ttft_p99_ms"] <= result["max_ms"]


def _read_stream(sock: socket.socket) -> bytes:
    """A streamed response up to its `end` event (or what came before the server closed)."""
    response = b""
    while b"event: end" not in response:
        chunk = sock.recv(65536)
        if not chunk:
            break
        response += chunk
    return response


def test_streams_that_are_never_read_stay_within_the_connection_limit(server):  # noqa: F811
    """Clients that open streams and do not read them (slow readers, more of them than the server takes
    connections) do not stop the server: the connections past `--max-connections` get 503 at once, a
    plain request is served meanwhile, and every admitted stream is there to its end when read later."""
    import urllib.request

    from test_serving_server import MAX_CONNECTIONS

    _, port, url = server
    body = json.dumps({"inputs": TEXTS[2]}).encode()
    request = (b"POST /v1/generate_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    plain = urllib.request.Request(url + "/v1/generate", data=json.dumps({"inputs": TEXTS[0]}).encode(),
                                   headers={"Content-Type": "application/json"})
    # One connection short of the limit: the plain request takes the last one.
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(MAX_CONNECTIONS - 1)]
    extra = []
    try:
        for s in idle:
            s.sendall(request)  # and nothing read for now
        assert urllib.request.urlopen(plain, timeout=10).status == 200  # served while they wait
        time.sleep(0.3)
        extra = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
        for s in extra:
            s.sendall(request)
        refused = [_read_stream(s) for s in extra]
        answers = [_read_stream(s) for s in idle]  # read only now
    finally:
        for s in idle + extra:
            s.close()
    # The plain request's connection is free again: one of the four may get in, the rest are refused.
    assert sum(a.startswith(b"HTTP/1.1 503") for a in refused) >= 3, [a[:40] for a in refused]
    answers += [a for a in refused if not a.startswith(b"HTTP/1.1 503")]
    assert all(a.startswith(b"HTTP/1.1 200") and b"event: done" in a and b"event: end" in a for a in answers)
    assert urllib.request.urlopen(plain, timeout=10).status == 200  # and after
