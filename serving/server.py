"""The HTTP service: `python -m serving.server EXPORT_DIR` (`make serve`), FastAPI on uvicorn.

Endpoints: `POST /v1/generate` (one or many inputs, decoding options), `POST /v1/generate_stream` (the
same request, answered as server-sent events while the output is generated), `GET /healthz` (the process is
alive), `GET /readyz` (the model is loaded and warmed up), `GET /metrics` (Prometheus), `GET /docs` and
`GET /openapi.json`, and a page to try the model at `GET /`. Concurrent requests are batched together (`serving.batching`). Every bad request gets
a 4xx with `{"error": "one line"}`: 400 bad JSON or UTF-8 (or HTTP that does not parse, or headers over
16 KiB), 413 a body,
input count or input too large, 415 a body not sent as `application/json`, 422 wrong types or values,
408 past the request timeout (or headers slower than `--header-timeout`), 503 when the queue is full or
the server has `--max-connections` open; the server keeps running whatever it is sent. The cases below
the app are `serving.http_protocol`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.batching import MicroBatcher
from serving.cli import add_runtime_arguments
from serving.errors import RequestError, ServingError, flag_name
from serving.http_protocol import MAX_HEADER_BYTES, HeaderLimitMiddleware, guarded_protocol
from serving.options import METHODS, DecodingOptions
from serving.runtime import Runtime

__all__ = ["GenerateRequest", "RequestLimits", "ServerSettings", "SettingsError", "create_app", "error_response",
           "main", "parse_generate_request"]

logger = logging.getLogger("serving")


# The settings whose flag is not `flag_name` of the field (`build_parser` uses these too).
_FLAGS = {"request_timeout_s": "--timeout", "header_timeout_s": "--header-timeout"}
# What `ServerSettings` checks on construction: counts and sizes >= 1, times > 0 seconds.
_AT_LEAST_ONE = ("max_batch_size", "workers", "max_inputs", "max_beam_size", "max_body_bytes",
                 "max_queued_texts", "max_connections")
_POSITIVE_SECONDS = ("request_timeout_s", "header_timeout_s")


class SettingsError(ServingError):
    """A `ServerSettings` value out of range. The message names the field; `for_flags` the option of
    `python -m serving.server`, as the command line prints it."""

    def __init__(self, field: str, requirement: str) -> None:
        super().__init__(f"{field} {requirement}")
        self.field, self.requirement = field, requirement

    def for_flags(self) -> str:
        return f"{_FLAGS.get(self.field, flag_name(self.field))} {self.requirement}"


@dataclass
class ServerSettings:
    """Limits and batching. None for `max_input_tokens` / `max_new_tokens` means the model's own
    `max_source_length` / `max_target_length`. Out-of-range values raise `SettingsError` here, so an app
    built in Python is held to the same bounds as the command line."""

    batching: bool = True
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    workers: int = 1
    max_inputs: int = 64
    max_input_tokens: int | None = None
    max_new_tokens: int | None = None
    max_beam_size: int = 8
    request_timeout_s: float = 10.0
    max_body_bytes: int = 65536
    max_queued_texts: int = 4096
    # Below the app (serving.http_protocol): slow or incomplete request headers, open connections.
    header_timeout_s: float = 10.0
    max_connections: int = 512

    def __post_init__(self) -> None:
        for name in _AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise SettingsError(name, "must be >= 1")
        for name in _POSITIVE_SECONDS:
            if not getattr(self, name) > 0:  # written so that NaN is refused too
                raise SettingsError(name, "must be > 0 seconds")


def _request_fields() -> dict:
    """The decoding fields of the request body, as `DecodingOptions` defines them (names, types,
    defaults, descriptions): the HTTP API cannot drift from the CLI and the runtime."""
    fields = {}
    for name, kind, default, help_text in DecodingOptions.fields():
        if name == "method":
            kind = Literal.__getitem__(METHODS)  # an enum in the OpenAPI schema
        fields[name] = (kind, Field(default, description=help_text))
    return fields


GenerateRequest = create_model(
    "GenerateRequest",
    __doc__="Body of `POST /v1/generate`.",
    __config__=ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"inputs": ["september 27, 1994", "9/27/94"], "method": "greedy"}]}),
    inputs=(str | list[str], Field(description="one text, or a list of texts")),
    **_request_fields(),
    return_tokens=(bool, Field(False, description="add pieces and ids of the output and the source")),
    return_attention=(bool, Field(False, description="add the cross-attention (last layer, mean over "
                                                     "heads), one row per output token, one column per "
                                                     "source token")),
    return_attention_heads=(bool, Field(False, description="add every layer's and head's cross-attention "
                                                           "as attention_heads[layer][head] (tokens x source)")),
)


class Output(BaseModel):
    text: str
    score: float | None = None
    tokens: list[str] | None = None
    token_ids: list[int] | None = None
    source_tokens: list[str] | None = None
    attention: list[list[float]] | None = None
    attention_heads: list[list[list[list[float]]]] | None = None
    hypotheses: list[dict] | None = None


class GenerateResponse(BaseModel):
    outputs: list[Output]
    method: str
    model: str | None


class ErrorResponse(BaseModel):
    error: str


class Metrics:
    """The Prometheus series, in a registry of their own (one per app)."""

    ENDPOINTS = ("/v1/generate", "/v1/generate_stream", "/healthz", "/readyz", "/metrics")

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("serving_requests_total", "HTTP requests", ["endpoint", "status"],
                                registry=r)
        self.latency = Histogram("serving_request_seconds", "HTTP request latency", ["endpoint"],
                                 registry=r, buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                                      2.5, 5, 10, 30))
        self.batch_texts = Histogram("serving_batch_texts", "texts per model call", registry=r,
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_requests = Histogram("serving_batch_requests", "requests per model call", registry=r,
                                        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_seconds = Histogram("serving_batch_seconds", "model call time", registry=r,
                                       buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        self.inputs = Counter("serving_inputs_total", "texts generated for", registry=r)
        self.queued = Gauge("serving_queued_texts", "texts waiting for a model call", registry=r)
        self.ready = Gauge("serving_ready", "1 once the model is loaded and warmed up", registry=r)

    def on_batch(self, texts: int, requests: int, seconds: float) -> None:
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)
        self.batch_seconds.observe(seconds)
        self.inputs.inc(texts)


class _MetricsMiddleware:
    """Counts and times every HTTP request by endpoint and status (a plain ASGI middleware: cheap)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in Metrics.ENDPOINTS else "other"
        status = 500

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


# Error mapping: every error answers `{"error": "one line"}` -----------------------------------------------

def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


def error_response(error: ServingError) -> JSONResponse:
    """A user's mistake as its answer: a `RequestError` (`OptionError` included) with its own status,
    any other `ServingError` 422. A 503 (not ready, queue full) says when to retry."""
    status = error.status if isinstance(error, RequestError) else 422
    return _error(status, str(error), {"Retry-After": "1"} if status == 503 else None)


def _add_error_handlers(app: FastAPI) -> None:
    """The app's errors in the same JSON shape: a `ServingError` raised by a route, Starlette's own
    (404, 405), FastAPI's validation of a route's parameters, and anything else as a logged 500."""

    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        return error_response(exc)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, exc.detail if isinstance(exc.detail, str) else str(exc.detail))

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, str(exc.errors()[0].get("msg", "invalid request")))

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")

    app.add_exception_handler(ServingError, serving_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)


# Request parsing: content type, body size, JSON, schema --------------------------------------------------

def _check_json_content_type(value: str | None) -> None:
    """415 unless the body is declared JSON: `application/json` or a `+json` type, any parameters.

    A missing or other type (curl's `-d` sends `application/x-www-form-urlencoded`) is refused rather than
    guessed at, so a client that sends a form or plain text learns it at once."""
    media_type = (value or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not (media_type.startswith("application/")
                                                and media_type.endswith("+json")):
        shown = f"Content-Type {media_type!r}" if media_type else "no Content-Type"
        raise RequestError(f"the body must be JSON sent with Content-Type: application/json (got {shown})",
                           status=415)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to be over `limit`: from its declared length, or
    while it streams in (a chunked body declares none)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError("Content-Length must be a number", status=400)
        if int(declared) > limit:
            raise RequestError(f"request body is {int(declared)} bytes; the limit is {limit}", status=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(f"request body is over the limit of {limit} bytes", status=413)
    return bytes(body)


async def _read_body_in_time(request: Request, limit: int, timeout_s: float) -> bytes:
    # A client that sends its body slowly is answered 408 rather than holding a request slot.
    try:
        return await asyncio.wait_for(_read_body(request, limit), timeout_s)
    except asyncio.TimeoutError:
        raise RequestError("reading the request body timed out", status=408) from None


def _json_object(body: bytes) -> dict:
    """The body as a JSON object: 400 when it is not UTF-8 JSON, 422 when it is JSON of another kind."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RequestError(f"request body is not valid UTF-8 (byte {e.start})", status=400) from None
    except (ValueError, RecursionError) as e:  # RecursionError: deeply nested arrays
        raise RequestError(f"request body is not valid JSON: {e}", status=400) from None
    if not isinstance(payload, dict):
        raise RequestError("request body must be a JSON object", status=422)
    return payload


def _validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if first["type"] == "missing":
        return f"{'.'.join(loc)} is required"
    if loc and loc[0] == "inputs":
        return "inputs must be a non-empty string or a list of non-empty strings"
    if first["type"] == "extra_forbidden":
        return f"unknown field {'.'.join(loc)!r}"
    return f"{'.'.join(loc)}: {first['msg']}"


def _validated(payload: dict) -> GenerateRequest:
    """422 with the first schema error in one line (pydantic's own message lists them all)."""
    try:
        return GenerateRequest.model_validate(payload)
    except ValidationError as e:
        raise RequestError(_validation_message(e)) from None


async def parse_generate_request(request: Request, max_body_bytes: int, timeout_s: float) -> GenerateRequest:
    """The body of `POST /v1/generate` as a `GenerateRequest`, or a `RequestError` with its status: 415 not
    declared JSON, 413 over `max_body_bytes`, 408 not read within `timeout_s`, 400 not UTF-8 JSON, 422 not
    the schema. Checked in that order, so the cheapest refusal comes before reading the body."""
    _check_json_content_type(request.headers.get("content-type"))
    body = await _read_body_in_time(request, max_body_bytes, timeout_s)
    return _validated(_json_object(body))


# Limits: what one request may ask for --------------------------------------------------------------------

@dataclass(frozen=True)
class RequestLimits:
    """The settings' limits on one request, with the model's own lengths where the settings say None."""

    max_inputs: int
    max_input_tokens: int
    max_new_tokens: int
    max_beam_size: int

    @classmethod
    def of(cls, settings: ServerSettings, runtime: Runtime) -> RequestLimits:
        return cls(max_inputs=settings.max_inputs,
                   max_input_tokens=settings.max_input_tokens or runtime.max_source_length,
                   max_new_tokens=settings.max_new_tokens or runtime.max_target_length,
                   max_beam_size=settings.max_beam_size)

    def check(self, request: GenerateRequest, runtime: Runtime) -> tuple[list[str], DecodingOptions]:
        """The request's texts and decoding options, or a `RequestError`: 413 too many inputs or an input
        too long, 422 none, an empty one, or options out of range."""
        texts = [request.inputs] if isinstance(request.inputs, str) else request.inputs
        if not texts:
            raise RequestError("inputs is empty; give at least one text")
        if len(texts) > self.max_inputs:
            raise RequestError(f"{len(texts)} inputs; the limit is {self.max_inputs} per request", status=413)
        options = DecodingOptions.from_args(request)
        options.validate(max_new_tokens_limit=self.max_new_tokens, max_beam_size=self.max_beam_size)
        runtime.check_texts(texts, max_input_tokens=self.max_input_tokens)
        return texts, options


# The app: batcher, lifespan, routes ----------------------------------------------------------------------

def _batcher(runtime: Runtime, settings: ServerSettings, metrics: Metrics) -> MicroBatcher:
    def run(texts: list[str], options: DecodingOptions, return_attention: bool, seeds: list | None):
        return runtime.generate(texts, options, return_attention=return_attention,
                                batch_size=settings.max_batch_size, seeds=seeds)

    def run_stream(texts: list[str], options: DecodingOptions, return_attention: bool, seeds: list | None):
        return runtime.generate_stream(texts, options, return_attention=return_attention, seeds=seeds)

    batcher = MicroBatcher(run, batching=settings.batching, max_batch_size=settings.max_batch_size,
                           max_wait_s=settings.max_wait_ms / 1000, max_queued_texts=settings.max_queued_texts,
                           workers=settings.workers, on_batch=metrics.on_batch, run_stream=run_stream)
    metrics.queued.set_function(lambda: batcher.queued_texts)
    return batcher


def _lifespan(runtime: Runtime, batcher: MicroBatcher, metrics: Metrics):
    """Warm-up and the batcher's start on startup; ready only after both, not ready again on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.get_running_loop().run_in_executor(None, runtime.warmup)
        await batcher.start()
        app.state.ready = True
        metrics.ready.set(1)
        try:
            yield
        finally:
            app.state.ready = False
            metrics.ready.set(0)
            await batcher.stop()

    return lifespan


_GENERATE_ERRORS = {code: {"model": ErrorResponse, "description": what} for code, what in (
    (400, "body is not valid UTF-8 JSON"), (408, "request timed out"),
    (413, "body, input count or an input too large"),
    (415, "body not sent as Content-Type: application/json"), (422, "wrong types or values"),
    (503, "not ready or queue full"))}


def _wants_attention(req: GenerateRequest) -> bool:
    return req.return_attention or req.return_attention_heads


def _output(generation, req: GenerateRequest) -> dict:
    """One output object of a response, with the extras the request asked for."""
    return generation.to_json(tokens=req.return_tokens, attention=req.return_attention,
                              attention_heads=req.return_attention_heads)


def _request_body_schema() -> dict:
    # The body is read by hand (size limit, timeout, one-line errors), so the schema is given to OpenAPI.
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": GenerateRequest.model_json_schema()}}}}


def _add_generate_route(app: FastAPI, runtime: Runtime, batcher: MicroBatcher, settings: ServerSettings,
                        model_name: str | None) -> None:
    limits = RequestLimits.of(settings, runtime)

    @app.post("/v1/generate", response_model=GenerateResponse, summary="Generate outputs for inputs",
              openapi_extra=_request_body_schema(), responses=_GENERATE_ERRORS)
    async def generate(request: Request):
        deadline = time.perf_counter() + settings.request_timeout_s
        req = await parse_generate_request(request, settings.max_body_bytes, settings.request_timeout_s)
        texts, options = limits.check(req, runtime)
        if not app.state.ready:
            raise RequestError("the model is not ready yet", status=503)
        # The timeout covers the whole request: what reading the body took is not given again.
        remaining = max(deadline - time.perf_counter(), 0.001)
        generations = await batcher.submit(texts, options, _wants_attention(req), timeout=remaining)
        return JSONResponse({
            "outputs": [_output(g, req) for g in generations],
            "method": req.method, "model": model_name})


def _sse(event: str, data: dict) -> bytes:
    """One server-sent event (`text/event-stream`): its name and one line of JSON."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _stream_events(events, texts: list[str], req: GenerateRequest, model_name: str | None):
    """The body of `POST /v1/generate_stream`: a `token` event per new piece of an input's text, a `done`
    event per input with its whole output (`/v1/generate`'s output object, `index` added), `end` when all
    are done, or an `error` event (`{"error", "status"}`, the messages of `/v1/generate`'s 4xx) for what
    fails after the stream has begun."""
    try:
        async for event in events:
            if event.text:
                yield _sse("token", {"index": event.index, "text": event.text, "token_ids": event.token_ids})
            if event.done:
                yield _sse("done", {"index": event.index, **_output(event.generation, req)})
        yield _sse("end", {"inputs": len(texts), "method": req.method, "model": model_name})
    except ServingError as e:
        status = e.status if isinstance(e, RequestError) else 422
        yield _sse("error", {"error": " ".join(str(e).split()), "status": status})
    finally:
        await events.aclose()  # a client that went away: the batcher drops the request


def _add_stream_route(app: FastAPI, runtime: Runtime, batcher: MicroBatcher, settings: ServerSettings,
                      model_name: str | None) -> None:
    limits = RequestLimits.of(settings, runtime)

    @app.post("/v1/generate_stream", summary="Generate outputs as server-sent events",
              openapi_extra=_request_body_schema(), responses=_GENERATE_ERRORS, response_class=StreamingResponse)
    async def generate_stream(request: Request):
        # Everything that can refuse the request does so before the stream begins, with its 4xx.
        deadline = time.perf_counter() + settings.request_timeout_s
        req = await parse_generate_request(request, settings.max_body_bytes, settings.request_timeout_s)
        texts, options = limits.check(req, runtime)
        if not app.state.ready:
            raise RequestError("the model is not ready yet", status=503)
        events = batcher.stream(texts, options, _wants_attention(req),
                                timeout=max(deadline - time.perf_counter(), 0.001))
        return StreamingResponse(_stream_events(events, texts, req, model_name), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


PAGE_DIR = Path(__file__).resolve().parent / "static"


def _add_page(app: FastAPI) -> None:
    """The try-it page at `/` (`static/index.html`, `page.js`, `page.css`): plain files, no build step."""
    app.mount("/static", StaticFiles(directory=PAGE_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html")


def _add_status_routes(app: FastAPI, runtime: Runtime, settings: ServerSettings, metrics: Metrics) -> None:
    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the model is loaded and warmed up",
             responses={503: {"model": ErrorResponse}})
    async def readyz():
        if not app.state.ready:
            return _error(503, "not ready: the model is loading or the server is stopping")
        return {"status": "ready", **runtime.describe(), "settings": asdict(settings)}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(runtime: Runtime, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI application around a loaded runtime (the batcher starts with the app's lifespan)."""
    settings = settings or ServerSettings()
    metrics = Metrics()
    model_name = runtime.config.model
    batcher = _batcher(runtime, settings, metrics)
    app = FastAPI(title="keras-nlp-week4 serving", version="1", lifespan=_lifespan(runtime, batcher, metrics),
                  description="Sequence-to-sequence generation with onnxruntime (no TensorFlow).")
    app.state.ready = False
    app.state.runtime, app.state.batcher, app.state.metrics, app.state.settings = \
        runtime, batcher, metrics, settings
    # The last added is the outermost: the metrics count the header limit's 400s too.
    app.add_middleware(HeaderLimitMiddleware, max_bytes=MAX_HEADER_BYTES)
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    _add_error_handlers(app)
    _add_generate_route(app, runtime, batcher, settings, model_name)
    _add_stream_route(app, runtime, batcher, settings, model_name)
    _add_status_routes(app, runtime, settings, metrics)
    _add_page(app)
    return app


def build_parser() -> argparse.ArgumentParser:
    defaults = ServerSettings()
    parser = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runtime_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-batching", dest="batching", action="store_false",
                        help="run every request as its own model call")
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size)
    parser.add_argument("--max-wait-ms", type=float, default=defaults.max_wait_ms,
                        help="how long an idle model waits for more requests to batch")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="model calls at once")
    parser.add_argument("--max-inputs", type=int, default=defaults.max_inputs, help="texts per request")
    parser.add_argument("--max-input-tokens", type=int, help="default: the model's max_source_length")
    parser.add_argument("--max-new-tokens", type=int, help="default: the model's max_target_length")
    parser.add_argument("--max-beam-size", type=int, default=defaults.max_beam_size)
    parser.add_argument(_FLAGS["request_timeout_s"], dest="request_timeout_s", type=float,
                        default=defaults.request_timeout_s, help="request timeout in seconds")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--max-queued-texts", type=int, default=defaults.max_queued_texts)
    parser.add_argument(_FLAGS["header_timeout_s"], dest="header_timeout_s", type=float,
                        default=defaults.header_timeout_s,
                        help="seconds a client has to send its request line and headers")
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections,
                        help="open connections at once; more are answered 503 and closed")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = ServerSettings(**{k: getattr(args, k) for k in asdict(ServerSettings())})
    except SettingsError as e:
        print(f"error: {e.for_flags()}", file=sys.stderr)
        return 2
    try:
        runtime = Runtime(args.export_dir, provider=args.provider, intra_op_threads=args.threads,
                          allow_spinning=False, verify=args.verify, int8=args.int8)
    except ServingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if settings.max_new_tokens is not None and settings.max_new_tokens > runtime.max_target_length:
        print(f"error: --max-new-tokens {settings.max_new_tokens} is above the model's max_target_length "
              f"{runtime.max_target_length}", file=sys.stderr)
        return 2
    app = create_app(runtime, settings)
    print(f"serving {runtime.export_dir} ({runtime.config.model}, {', '.join(runtime.providers)}) "
          f"on http://{args.host}:{args.port} (batching {'on' if settings.batching else 'off'}); "
          f"docs at /docs", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log,
                timeout_graceful_shutdown=10, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                http=guarded_protocol(settings.header_timeout_s, settings.max_connections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
