"""Connection-level guards under the app: slow clients, too many connections, malformed HTTP.

uvicorn's h11 protocol starts its timeouts only once a request has reached the app (and its keep-alive
timer is cancelled as soon as any byte arrives), so a client that opens a connection and sends its headers
a byte at a time, or never finishes them, holds that connection forever; a few hundred such clients tie
the server up. `GuardedH11Protocol` adds what the app cannot see:

- a header timeout: a request whose line and headers are not complete `header_timeout_s` after its first
  byte (or after the connection opened) gets `408 {"error": ...}` and the connection is closed;
- a connection limit: connection number `max_connections + 1` gets `503 {"error": ...}` and is closed at
  once (uvicorn's own `limit_concurrency` answers in plain text, and only after the headers arrive);
- JSON errors: a request h11 cannot parse (`Content-Length: abc` or `-5`, headers over the size limit,
  a broken request line) gets `400 {"error": ...}` instead of uvicorn's plain-text 400;
- a header size limit (`MAX_HEADER_BYTES`, 16 KiB): h11's own limit (`h11_max_incomplete_event_size`)
  counts only a head that is still incomplete, so headers of 100 KB that arrive in one read (the event loop
  reads up to 256 KiB at a time) parse and reach the app. `HeaderLimitMiddleware`, in front of
  the app's routes, answers those `400 {"error": ...}`; together every head over the limit gets 400.

What stays outside the JSON shape: a client that disconnects gets no answer at all, and bytes that are not
HTTP (a TLS handshake on the plain port) get the same JSON 400, which such a client cannot read.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["MAX_HEADER_BYTES", "GuardedH11Protocol", "HeaderLimitMiddleware", "guarded_protocol"]

# The README's limit, h11's default; passed to uvicorn as `h11_max_incomplete_event_size` too, so that the
# two checks (an incomplete head in h11, a complete one in the middleware) are of one number.
MAX_HEADER_BYTES = 16 * 1024
_LINGER_S = 2.0
_REASONS = {400: "Bad Request", 408: "Request Timeout", 503: "Service Unavailable"}


def raw_json_response(status: int, message: str) -> bytes:
    """A complete `Connection: close` HTTP/1.1 response with the server's `{"error": ...}` body, for the
    cases where h11 has no request to answer (it refuses to send a response before one arrived)."""
    body = json.dumps({"error": message}).encode("utf-8")
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout, a connection limit and JSON errors (module doc)."""

    header_timeout_s: float = 10.0
    max_connections: int = 1000

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._rejected = False
        if len(self.connections) > self.max_connections:
            self._reject(503, f"the server has {self.max_connections} open connections, its limit; "
                              "retry later")
            return
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return  # answered and closing: see _reject
        if self._header_timer is None and self._between_requests():
            self._arm_header_timer()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        if self._header_timer is not None and not self._between_requests():
            self._cancel_header_timer()  # the headers are complete: the app's own timeout takes over

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._reject(400, "invalid HTTP request: a malformed request line or header (Content-Length must "
                          "be a non-negative number) or headers over the size limit")

    # -------------------------------------------------------------------------------------------------

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._between_requests() and not self.transport.is_closing():
            self._reject(408, f"the request line and headers did not arrive within {self.header_timeout_s:g} s")

    def _reject(self, status: int, message: str) -> None:
        self._cancel_header_timer()
        self.logger.warning("closing a connection from %s: %d %s", self.client, status, message)
        if self.transport.is_closing():
            return
        self.transport.write(raw_json_response(status, message))
        # A lingering close: send FIN after the answer and drop what the client still sends, so that
        # unread bytes do not make the kernel reset the connection (which can discard the answer before
        # the client reads it); the transport is closed when the client hangs up or 2 s later.
        self._rejected = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(_LINGER_S, self.transport.close)
        else:
            self.transport.close()


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[GuardedH11Protocol]:
    """A `GuardedH11Protocol` subclass with these limits (uvicorn takes a protocol class, not an
    instance: `uvicorn.Config(app, http=guarded_protocol(10, 1000))`)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"header_timeout_s": header_timeout_s, "max_connections": max_connections})


def header_bytes(headers: list[tuple[bytes, bytes]]) -> int:
    """The size of the header lines as sent: `name: value\r\n` each."""
    return sum(len(name) + len(value) + 4 for name, value in headers)


class HeaderLimitMiddleware:
    """An ASGI middleware: `400 {"error": ...}` for a request whose headers exceed `max_bytes`, before
    the app reads its body (module doc: h11 lets a complete head of any size through)."""

    def __init__(self, app, max_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        size = header_bytes(scope.get("headers", [])) if scope["type"] == "http" else 0
        if size <= self.max_bytes:
            return await self.app(scope, receive, send)
        body = json.dumps({"error": f"request headers are {size} bytes; the limit is {self.max_bytes}"})
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode("ascii"))]})
        await send({"type": "http.response.body", "body": body.encode("utf-8")})
