"""Dynamic micro-batching: concurrent requests share model calls, so throughput grows with load.

Requests whose decoding options agree (same method, lengths, beam or sampling settings) are queued
together. A model call takes up to `max_batch_size` texts from the oldest group; it starts as soon as the
group is full, or once its oldest request has waited `max_wait_s`, or at once when batching is off (then
each request is its own call). While `workers` calls are running, new requests queue up, so under load the
batches fill without any waiting. The model calls run in a thread pool: onnxruntime releases the GIL,
and the event loop keeps accepting and answering requests meanwhile.

Streamed requests (`MicroBatcher.stream`) queue with the others and share their model calls: a call that
holds one runs the streaming search (`Runtime.generate_stream`) for the whole batch and hands each streamed
request its events as they come. A call whose requests have all gone away (client disconnected, timed
out) stops after the step under way.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from serving.errors import RequestError
from serving.runtime import DecodingOptions, Generation, StreamEvent

__all__ = ["MicroBatcher"]

# run(texts, options, return_attention, seeds): seeds is one sampling seed per text, or None.
RunFn = Callable[[list[str], DecodingOptions, bool, list | None], list[Generation]]
# The same call, streaming: `Runtime.generate_stream`'s events for the batch (index: the text's place).
StreamFn = Callable[[list[str], DecodingOptions, bool, list | None], Iterator[StreamEvent]]
BatchHook = Callable[[int, int, float], None]  # (texts, requests, seconds) of each model call

_unique = itertools.count()


def batch_key(options: DecodingOptions) -> tuple:
    """Requests with equal keys may share a model call and get what they would get alone.

    Sampling requests share whatever their seeds: every text draws from its own generator (see
    `row_seeds`), so a seeded request's sample does not depend on who else is in the batch.
    """
    return (replace(options, seed=None),)


def row_seeds(options: DecodingOptions, count: int) -> list:
    """One sampling seed per text: `(seed, i)` as `Runtime.generate` uses, or fresh entropy."""
    if options.seed is None:
        return [secrets.randbits(63) for _ in range(count)]
    return [(options.seed, i) for i in range(count)]


@dataclass
class _Job:
    texts: list[str]
    options: DecodingOptions
    return_attention: bool
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    # A streamed request's events (its own text indices), then None; or the error that ended the call.
    events: asyncio.Queue | None = None


class MicroBatcher:
    """Queues generation requests and runs them in shared model calls.

    Args:
        run: the model call, `run(texts, options, return_attention, seeds) -> generations` (blocking;
            `seeds` is one sampling seed per text for method "sample", else None).
        batching: False makes every request its own call (for comparison).
        max_batch_size: most texts per call.
        max_wait_s: how long a call may wait for more requests when the model is idle.
        max_queued_texts: beyond this many waiting texts, `submit` answers 503.
        workers: model calls running at once.
        on_batch: called after each call with (texts, requests, seconds).
        run_stream: the streaming model call (`StreamFn`), for `stream`; None: streaming is refused.
    """

    def __init__(self, run: RunFn, batching: bool = True, max_batch_size: int = 64,
                 max_wait_s: float = 0.005, max_queued_texts: int = 4096, workers: int = 1,
                 on_batch: BatchHook | None = None, run_stream: StreamFn | None = None) -> None:
        self.run = run
        self.run_stream = run_stream
        self.batching = batching
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queued_texts = max_queued_texts
        self.workers = workers
        self.on_batch = on_batch
        self.queued_texts = 0
        self._groups: OrderedDict[tuple, deque[_Job]] = OrderedDict()
        self._executor: ThreadPoolExecutor | None = None
        self._dispatcher: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="generate")
        self._slots = asyncio.Semaphore(self.workers)
        self._new_job = asyncio.Event()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="micro-batcher")

    async def stop(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None
        await asyncio.gather(*self._running, return_exceptions=True)
        for group in self._groups.values():
            for job in group:
                if not job.future.done():
                    job.future.set_exception(RequestError("the server is shutting down", status=503))
        self._groups.clear()
        self.queued_texts = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _enqueue(self, texts: list[str], options: DecodingOptions, return_attention: bool,
                 streamed: bool) -> _Job:
        if self._dispatcher is None:
            raise RequestError("the server is not ready", status=503)
        if self.queued_texts + len(texts) > self.max_queued_texts:
            raise RequestError(f"the server is busy ({self.queued_texts} texts queued); retry later",
                               status=503)
        job = _Job(list(texts), options, return_attention, asyncio.get_running_loop().create_future(),
                   events=asyncio.Queue() if streamed else None)
        key = batch_key(options) if self.batching else (next(_unique),)
        self._groups.setdefault(key, deque()).append(job)
        self.queued_texts += len(texts)
        self._new_job.set()
        return job

    def stream(self, texts: list[str], options: DecodingOptions, return_attention: bool = False,
               timeout: float | None = None) -> AsyncIterator[StreamEvent]:
        """Queues `texts` at once (503 here when the queue is full, as `submit`) and returns their
        `StreamEvent`s as the shared model call makes them (each text's last one is `done`), with a 408
        after `timeout` seconds for the whole stream. Closing the iterator (a client that went away)
        withdraws the request."""
        if self.run_stream is None:
            raise RequestError("this server does not stream", status=404)
        job = self._enqueue(texts, options, return_attention, streamed=True)
        return self._events(job, timeout)

    async def _events(self, job: _Job, timeout: float | None) -> AsyncIterator[StreamEvent]:
        deadline = None if timeout is None else time.perf_counter() + timeout
        try:
            while True:
                remaining = None if deadline is None else max(deadline - time.perf_counter(), 0.0)
                try:
                    event = await asyncio.wait_for(job.events.get(), remaining)
                except asyncio.TimeoutError:
                    raise RequestError(f"the request timed out after {timeout:g} s", status=408) from None
                if event is None:
                    return
                if isinstance(event, BaseException):
                    raise event
                yield event
        finally:
            job.future.cancel()  # done or gone: either way the call need not go on for it

    async def submit(self, texts: list[str], options: DecodingOptions, return_attention: bool = False,
                     timeout: float | None = None) -> list[Generation]:
        """Waits for the generations of `texts`; `RequestError` 408 after `timeout` seconds, 503 when
        the queue is full or the batcher is not running."""
        job = self._enqueue(texts, options, return_attention, streamed=False)
        try:
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except asyncio.TimeoutError:
            # A job not yet taken is skipped by the dispatcher; a running one finishes unobserved.
            job.future.cancel()
            raise RequestError(f"the request timed out after {timeout:g} s", status=408) from None
        except asyncio.CancelledError:  # the client went away: nobody wants the result any more
            job.future.cancel()
            raise

    def _take_batch(self, key: tuple) -> list[_Job]:
        group = self._groups[key]
        jobs, size = [], 0
        while group and (not jobs or size + len(group[0].texts) <= self.max_batch_size):
            job = group.popleft()
            self.queued_texts -= len(job.texts)
            if job.future.done():  # timed out while waiting
                continue
            jobs.append(job)
            size += len(job.texts)
        if not group:
            del self._groups[key]
        return jobs

    def _oldest_key(self) -> tuple | None:
        live = [(group[0].enqueued, i, key) for i, (key, group) in enumerate(self._groups.items()) if group]
        return min(live)[2] if live else None

    async def _dispatch(self) -> None:
        while True:
            key = self._oldest_key()
            if key is None:
                self._new_job.clear()
                await self._new_job.wait()
                continue
            await self._slots.acquire()
            if self.batching:
                await self._fill(key)
            jobs = self._take_batch(key) if key in self._groups else []
            if not jobs:
                self._slots.release()
                continue
            task = asyncio.create_task(self._execute(jobs))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _fill(self, key: tuple) -> None:
        """Waits until the group holds a full batch or its oldest request has waited `max_wait_s`."""
        while key in self._groups:
            group = self._groups[key]
            remaining = group[0].enqueued + self.max_wait_s - time.perf_counter()
            if sum(len(job.texts) for job in group) >= self.max_batch_size or remaining <= 0:
                return
            self._new_job.clear()
            try:
                await asyncio.wait_for(self._new_job.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def _execute(self, jobs: list[_Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        return_attention = any(job.return_attention for job in jobs)
        seeds = None
        if jobs[0].options.method == "sample":
            seeds = [seed for job in jobs for seed in row_seeds(job.options, len(job.texts))]
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        options = replace(jobs[0].options, seed=None)
        try:
            if any(job.events is not None for job in jobs):
                generations = await loop.run_in_executor(self._executor, self._run_streaming, jobs, texts,
                                                         options, return_attention, seeds, loop)
            else:
                generations = await loop.run_in_executor(self._executor, self.run, texts, options,
                                                         return_attention, seeds)
        except Exception as e:  # handed to every waiting request; the batcher itself keeps running
            for job in jobs:
                if job.events is not None:
                    job.events.put_nowait(e)
                elif not job.future.done():
                    job.future.set_exception(e)
            return
        finally:
            self._slots.release()
        if generations is None:  # stopped: nobody was waiting any more
            return
        if self.on_batch is not None:
            self.on_batch(len(texts), len(jobs), time.perf_counter() - started)
        offset = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(generations[offset : offset + len(job.texts)])
            offset += len(job.texts)

    def _run_streaming(self, jobs: list[_Job], texts: list[str], options: DecodingOptions,
                       return_attention: bool, seeds: list | None,
                       loop: asyncio.AbstractEventLoop) -> list[Generation] | None:
        """Runs in a worker thread: the streaming call for the whole batch, each event handed to its
        streamed request on the event loop. Returns every text's generation, or None when all the
        batch's requests went away first (the search is then stopped)."""
        owners = [(job, local) for job in jobs for local in range(len(job.texts))]
        generations: list[Generation | None] = [None] * len(texts)
        unfinished = {id(job): len(job.texts) for job in jobs}
        events = self.run_stream(texts, options, return_attention, seeds)
        try:
            for event in events:
                job, local = owners[event.index]
                if event.done:
                    generations[event.index] = event.generation
                    unfinished[id(job)] -= 1
                if job.events is not None and not job.future.done():
                    loop.call_soon_threadsafe(job.events.put_nowait, replace(event, index=local))
                    if not unfinished[id(job)]:  # its last text is done: the end of its stream
                        loop.call_soon_threadsafe(job.events.put_nowait, None)
                if all(job.future.done() for job in jobs):
                    return None
        finally:
            events.close()
        return generations  # type: ignore[return-value]
