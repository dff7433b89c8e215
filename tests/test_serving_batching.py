"""Dynamic micro-batching (`serving.batching.MicroBatcher`) with a fake model call that records batches."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serving.batching import MicroBatcher
from serving.errors import RequestError
from serving.runtime import DecodingOptions, Generation

GREEDY = DecodingOptions()


class FakeModel:
    """Echoes each text upper-cased; records (texts, options) of every call; can be slowed or broken."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.calls: list[tuple[list[str], DecodingOptions, bool]] = []
        self.seeds: list = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, texts, options, return_attention, seeds):
        with self.lock:
            self.calls.append((list(texts), options, return_attention))
            self.seeds.append(seeds)
        time.sleep(self.delay)
        if self.fail_on in texts:
            raise ValueError("boom")
        return [Generation(text=t.upper(), token_ids=[len(t)]) for t in texts]


def run(coro):
    return asyncio.run(coro)


async def _with(batcher, body):
    await batcher.start()
    try:
        return await body()
    finally:
        await batcher.stop()


def test_concurrent_requests_share_one_call_and_get_their_own_outputs():
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_s=0.2)

    async def body():
        requests = [[f"r{i}a", f"r{i}b"] if i % 3 == 0 else [f"r{i}"] for i in range(10)]
        results = await asyncio.gather(*(batcher.submit(texts, GREEDY) for texts in requests))
        for texts, generations in zip(requests, results, strict=True):
            assert [g.text for g in generations] == [t.upper() for t in texts]
        return requests

    requests = run(_with(batcher, body))
    assert len(model.calls) == 1
    assert sorted(model.calls[0][0]) == sorted(t for texts in requests for t in texts)


def test_batches_never_exceed_max_batch_size():
    model = FakeModel(delay=0.01)
    batcher = MicroBatcher(model, max_batch_size=4, max_wait_s=0.05)

    async def body():
        return await asyncio.gather(*(batcher.submit([str(i)], GREEDY) for i in range(11)))

    results = run(_with(batcher, body))
    assert [r[0].text for r in results] == [str(i) for i in range(11)]
    assert all(len(texts) <= 4 for texts, _, _ in model.calls)
    assert sum(len(texts) for texts, _, _ in model.calls) == 11 and len(model.calls) == 3


def test_waits_at_most_max_wait_when_idle():
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_s=0.05)

    async def body():
        started = time.perf_counter()
        # A batcher that waited for a full batch would never answer: the timeout, not a clock threshold,
        # tells the two apart, so a loaded or slow machine cannot fail the test.
        await asyncio.wait_for(batcher.submit(["alone"], GREEDY), timeout=30)
        return time.perf_counter() - started

    elapsed = run(_with(batcher, body))
    assert elapsed >= 0.04 and [texts for texts, _, _ in model.calls] == [["alone"]]  # it did wait for company


def test_different_options_are_never_mixed():
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_s=0.1)
    beam = DecodingOptions(method="beam", beam_size=3)
    hot = DecodingOptions(method="sample", temperature=2.0)

    async def body():
        await asyncio.gather(
            batcher.submit(["g1"], GREEDY), batcher.submit(["b1"], beam), batcher.submit(["g2"], GREEDY),
            batcher.submit(["b2"], beam), batcher.submit(["h1"], hot),
            batcher.submit(["s1"], DecodingOptions(method="sample")),
            batcher.submit(["a1"], GREEDY, return_attention=True))

    run(_with(batcher, body))
    groups = sorted((sorted(texts), options.method, attention) for texts, options, attention in model.calls)
    assert groups == [(["a1", "g1", "g2"], "greedy", True), (["b1", "b2"], "beam", False),
                      (["h1"], "sample", False), (["s1"], "sample", False)]


def test_seeded_sampling_requests_share_a_call_with_per_text_seeds():
    model = FakeModel()
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_s=0.1)

    async def body():
        await asyncio.gather(batcher.submit(["a", "b"], DecodingOptions(method="sample", seed=5)),
                             batcher.submit(["c"], DecodingOptions(method="sample", seed=9)),
                             batcher.submit(["d"], DecodingOptions(method="sample")))

    run(_with(batcher, body))
    (texts, options, _), = model.calls
    seeds = dict(zip(texts, model.seeds[0], strict=True))
    # The seeds a request would get alone (`Runtime.generate`): (seed, position in the request).
    assert seeds["a"] == (5, 0) and seeds["b"] == (5, 1) and seeds["c"] == (9, 0)
    assert isinstance(seeds["d"], int) and options.seed is None


def test_batching_off_runs_each_request_alone():
    model = FakeModel()
    batcher = MicroBatcher(model, batching=False, max_wait_s=60.0)

    async def body():
        return await asyncio.gather(*(batcher.submit([f"{i}a", f"{i}b"], GREEDY) for i in range(5)))

    started = time.perf_counter()
    run(_with(batcher, body))
    assert sorted(texts for texts, _, _ in model.calls) == [[f"{i}a", f"{i}b"] for i in range(5)]
    # No batching wait: a batcher that honoured max_wait_s would take a minute, five fake calls take ms.
    assert time.perf_counter() - started < 30


def test_timeout_is_408_and_the_timed_out_job_is_skipped():
    model = FakeModel(delay=0.3)
    batcher = MicroBatcher(model, batching=False)

    async def body():
        first = asyncio.create_task(batcher.submit(["slow"], GREEDY))
        await asyncio.sleep(0.05)  # "slow" is running; "late" waits behind it and times out
        with pytest.raises(RequestError) as error:
            await batcher.submit(["late"], GREEDY, timeout=0.05)
        assert error.value.status == 408 and "timed out" in str(error.value)
        assert (await first)[0].text == "SLOW"
        assert (await batcher.submit(["next"], GREEDY))[0].text == "NEXT"

    run(_with(batcher, body))
    assert [texts for texts, _, _ in model.calls] == [["slow"], ["next"]]


def test_a_failing_call_fails_its_requests_and_the_batcher_keeps_going():
    model = FakeModel(fail_on="bad")
    batcher = MicroBatcher(model, max_wait_s=0.05)

    async def body():
        results = await asyncio.gather(batcher.submit(["ok"], GREEDY), batcher.submit(["bad"], GREEDY),
                                       return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
        assert (await batcher.submit(["after"], GREEDY))[0].text == "AFTER"

    run(_with(batcher, body))


def test_full_queue_is_503_and_stopped_batcher_is_503():
    model = FakeModel(delay=0.2)
    batcher = MicroBatcher(model, max_batch_size=2, max_queued_texts=3, max_wait_s=0.0)

    async def body():
        running = asyncio.create_task(batcher.submit(["a"], GREEDY))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(batcher.submit(["b", "c"], GREEDY))
        await asyncio.sleep(0.01)
        with pytest.raises(RequestError) as error:
            await batcher.submit(["d", "e"], GREEDY)
        assert error.value.status == 503 and "busy" in str(error.value)
        await asyncio.gather(running, waiting)
        assert batcher.queued_texts == 0

    run(_with(batcher, body))
    with pytest.raises(RequestError) as error:
        run(batcher.submit(["x"], GREEDY))
    assert error.value.status == 503


def test_batch_hook_sees_every_call():
    seen = []
    batcher = MicroBatcher(FakeModel(), max_wait_s=0.1, on_batch=lambda t, r, s: seen.append((t, r)))

    async def body():
        await asyncio.gather(batcher.submit(["a", "b"], GREEDY), batcher.submit(["c"], GREEDY))

    run(_with(batcher, body))
    assert seen == [(3, 2)]


def test_a_cancelled_request_is_dropped_from_the_queue():
    model = FakeModel(delay=0.2)
    batcher = MicroBatcher(model, batching=False)

    async def body():
        first = asyncio.create_task(batcher.submit(["slow"], GREEDY))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(batcher.submit(["gone"], GREEDY))  # e.g. its client disconnected
        await asyncio.sleep(0.01)
        gone.cancel()
        await first
        assert (await batcher.submit(["next"], GREEDY))[0].text == "NEXT"

    run(_with(batcher, body))
    assert [texts for texts, _, _ in model.calls] == [["slow"], ["next"]]
