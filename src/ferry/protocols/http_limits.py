"""uvicorn's httptools protocol with the limits it lacks: request-head size and header
count (431, or 414 for the URL), head and body read deadlines (408) and a connection
limit (503), each refused with a one-line `{"error": ...}` JSON body and the connection
closed.

Why a subclass: uvicorn's httptools protocol (and the httptools parser under it) has no
head limit, so a 128 MB header is buffered by concatenation and stalls everyone;
no read deadline, so a client that connects and sends nothing, or dribbles its body,
holds a task and a descriptor for ever; and `limit_concurrency` answers only after a
head was read, so idle connections are never refused and still use up descriptors.

Cost on the hot path: counters and comparisons in uvicorn's own per-URL and per-header
callbacks, and a deadline stored (not a timer armed) at the start of each head and body.
Measured: 0.9 µs more per request than uvicorn's protocol (13.1 against 12.2 µs, a
wrk-like POST with three headers, alternating, thread CPU time), about 1 % of the event
loop's ~85 µs per mlp_small request at c64; a timer armed and cancelled per request
would cost more. One sweep per `sweep_interval` walks the open connections and expires
those past their deadline.

The refusal body is `{"error": "..."}`: both TF Serving REST and KServe V2 REST use that
form, and the refusal comes before routing, so the protocol is not known yet.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from ferry.transport_limits import (
    MAX_LINGERING_REFUSALS,
    REFUSAL_LINGER_BYTES,
    REFUSAL_LINGER_SECONDS,
    HttpLimits,
)

log = logging.getLogger(__name__)

NO_DEADLINE = math.inf
# What the deadline of a connection guards (`_phase`).
IDLE, HEAD, BODY = 0, 1, 2


class TransportRefusal(Exception):
    """A request refused at the transport: its HTTP status and one-line reason. Raised
    inside llhttp's callbacks (which stops the parser) and answered by `data_received`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def head_too_large(limits: HttpLimits) -> TransportRefusal:
    return TransportRefusal(
        431,
        f"Request head (request line and headers) over the limit of "
        f"{limits.max_header_bytes} bytes (--max_header_bytes)",
    )


def url_too_long(limits: HttpLimits) -> TransportRefusal:
    return TransportRefusal(
        414, f"Request URL over the limit of {limits.max_header_bytes} bytes (--max_header_bytes)"
    )


def too_many_headers(limits: HttpLimits) -> TransportRefusal:
    return TransportRefusal(
        431, f"More than {limits.max_header_count} request headers (--max_header_count)"
    )


def head_timeout(limits: HttpLimits) -> TransportRefusal:
    return TransportRefusal(
        408,
        f"Request head not received within {limits.header_timeout_seconds:g} s "
        "(--http_header_timeout_seconds)",
    )


def body_timeout(limits: HttpLimits) -> TransportRefusal:
    return TransportRefusal(
        408,
        f"Request body not received within {limits.body_timeout_seconds:g} s "
        "(--http_body_timeout_seconds)",
    )


def too_many_connections(limits: HttpLimits) -> TransportRefusal:
    return TransportRefusal(
        503,
        f"Too many open connections (limit {limits.max_connections}, --max_connections); "
        "retry later",
    )


def refusal_body(refusal: TransportRefusal) -> bytes:
    """A refusal's JSON body (the Rust front sends these bytes too, ferry.dataplane)."""
    return json.dumps({"error": refusal.message}).encode()


def refusal_response(refusal: TransportRefusal) -> bytes:
    """The whole HTTP response for a refusal, `Connection: close` included."""
    body = refusal_body(refusal)
    return b"".join(
        [
            STATUS_LINE[refusal.status],
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class Refusals:
    """One server's refused connections (one event loop: no lock): how many are still
    open for their linger, at most `linger_limit` (beyond it a refusal closes at once,
    so a flood of connections over `--max_connections` cannot use up the descriptors
    the limit protects), and how many to report in the next log line (at most one a
    second, so a flood does not flood the log too)."""

    def __init__(self, linger_limit: int = MAX_LINGERING_REFUSALS) -> None:
        self.linger_limit = linger_limit
        self.lingering = 0
        self._unlogged = 0
        self._logged_at = -math.inf

    def take_linger(self) -> bool:
        if self.lingering >= self.linger_limit:
            return False
        self.lingering += 1
        return True

    def end_linger(self) -> None:
        self.lingering -= 1

    def note_over_limit(self, now: float, limit: int, count: int = 1) -> None:
        """Count `count` refused connections; log them unless a line went out this second."""
        self._unlogged += count
        if now - self._logged_at >= 1.0:
            log.warning("refused %d connection(s) over --max_connections %d", self._unlogged, limit)
            self._unlogged = 0
            self._logged_at = now


def limited_protocol(limits: HttpLimits) -> Callable[..., LimitedHttpToolsProtocol]:
    """The protocol factory for `uvicorn.Config(http=...)`: one per server."""
    return functools.partial(LimitedHttpToolsProtocol, limits=limits, refusals=Refusals())


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection, as uvicorn's, within `limits`.

    Head bytes are counted two ways, both lower bounds of the true size: exactly in the
    parser callbacks (URL pieces, each complete header), and per received chunk while a
    head is in progress (httptools keeps a header that has not ended in its own buffer,
    so only the chunk count sees a single endless header line). Each is checked against
    the limit, so a huge header is cut within a chunk or two of it, and no valid head is
    refused for bytes of the body or of a pipelined request that share its chunk.

    Deadlines: the head deadline runs from connection open, or on a kept-alive
    connection from the request's first byte (idle time before it is uvicorn's keep-alive
    timer's); the body deadline from the end of the head until the body is complete.
    While uvicorn has paused reading (ferry's side is the slow one: a pipelined request
    waits, or the app has not taken the body yet) the body deadline does not expire.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HttpLimits,
        refusals: Refusals,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._refusals = refusals
        self._max_head = limits.max_header_bytes
        self._max_count = limits.max_header_count
        self._head_timeout = limits.header_timeout_seconds
        self._body_timeout = limits.body_timeout_seconds
        self._deadline = NO_DEADLINE
        self._phase = IDLE
        self._head_bytes = 0  # counted by the parser callbacks
        self._head_chunks = 0  # counted per received chunk
        self._header_count = 0
        self._fresh_head = False  # the head began inside the chunk being parsed
        self._refused = False
        self._deferred_refusal: TransportRefusal | None = None  # waits for earlier answers
        self._linger_bytes = REFUSAL_LINGER_BYTES

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refusals.note_over_limit(self.loop.time(), self.limits.max_connections)
            self._refuse(too_many_connections(self.limits))
            return
        self._phase = HEAD
        self._deadline = self.loop.time() + self._head_timeout

    def data_received(self, data: bytes) -> None:
        if self._refused:
            # The refusal is sent: drop what the client still sends, up to a bound (an
            # attacker streaming a huge header is then cut off at once).
            self._linger_bytes -= len(data)
            if self._linger_bytes < 0:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, TransportRefusal):
                self._refuse(exc.__context__)
            else:
                self._bad_request()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._phase == HEAD:
            if self._fresh_head:
                self._fresh_head = False  # part of this chunk may belong to the last request
            else:
                self._head_chunks += len(data)
                # (A URL in progress is cut by `on_url` first: llhttp hands it over
                # piece by piece, so what is left here is a header.)
                if self._head_chunks > self._max_head:
                    self._refuse(head_too_large(self.limits))

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = NO_DEADLINE
        super().connection_lost(exc)

    # Parser callbacks (uvicorn's, with counting)

    # The base class's methods are called directly, not through super(): these run for
    # every request, and super() costs a measurable share of the protocol's time.

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._head_bytes = self._head_chunks = self._header_count = 0
        self._fresh_head = True
        if self._phase != HEAD:  # a new connection's head deadline is already running
            self._phase = HEAD
            self._deadline = self.loop.time() + self._head_timeout

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self._max_head:
            raise url_too_long(self.limits)
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, inlined (one call per header instead of two).
        self._header_count += 1
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > self._max_count:
            raise too_many_headers(self.limits)
        if self._head_bytes > self._max_head:
            raise head_too_large(self.limits)
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # The body phase lasts until the next head begins; `expire_if_late` knows the
        # body is complete from the request cycle (no callback per request for it).
        self._phase = BODY
        self._deadline = self.loop.time() + self._body_timeout
        HttpToolsProtocol.on_headers_complete(self)

    # Deadlines

    def expire_if_late(self, now: float) -> None:
        """Refuse with 408 if the head or body deadline has passed (called by
        `enforce_deadlines`)."""
        if now < self._deadline or self._refused:
            return
        if self._phase == BODY:
            cycle = self.cycle
            if cycle is None or not cycle.more_body:
                return  # the body is complete
            if self.flow.read_paused and not cycle.response_complete:
                return  # ferry is not reading: the client is not the slow one
            # (A body still dribbling in after ferry answered early, e.g. 413, expires
            # too: uvicorn's keep-alive timer restarts on every byte, so nothing else would.)
        refusal = head_timeout(self.limits) if self._phase == HEAD else body_timeout(self.limits)
        self._refuse(refusal)

    # Refusals

    def _refuse(self, refusal: TransportRefusal) -> None:
        """Answer `refusal`, stop reading requests, and close after a short linger.
        A refused head waits for the answers of the requests before it (in flight or
        pipelined): it goes out after them, in order (`on_response_complete`). Where this
        request's own response is already on the wire (a body refused late) the
        connection is only closed: a second response would garble it. An app task still
        running for a refused body sees a disconnect.
        """
        # In the head phase `cycle` is the previous request's; in the body phase, this one's.
        head = self._phase == HEAD
        cycle = self.cycle
        answered = not head and cycle is not None and cycle.response_started
        self._refused = True
        self._phase = IDLE
        self._deadline = NO_DEADLINE
        self.connections.discard(self)
        self._unset_keepalive_if_required()
        if head and cycle is not None and not cycle.response_complete:
            self._deferred_refusal = refusal
            return
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        if self.transport.is_closing():
            return
        if answered:
            self.transport.close()
            return
        self._send_refusal(refusal)

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)
        refusal = self._deferred_refusal
        if refusal is not None and (self.cycle is None or self.cycle.response_complete):
            self._deferred_refusal = None
            if not self.transport.is_closing():
                self._send_refusal(refusal)

    def _send_refusal(self, refusal: TransportRefusal) -> None:
        self.transport.write(refusal_response(refusal))
        if not self._refusals.take_linger():
            self.transport.close()  # a flood of refusals: no descriptors to spare for it
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        # Keep reading (and dropping) for a moment: closing with unread request bytes
        # makes the kernel send a reset, and the client may lose the answer.
        self.loop.call_later(REFUSAL_LINGER_SECONDS, self._end_linger)

    def _end_linger(self) -> None:
        self._refusals.end_linger()
        self.transport.close()

    def _bad_request(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self._phase = IDLE
        self._deadline = NO_DEADLINE
        self.send_400_response(message)


async def enforce_deadlines(connections: set, interval: float) -> None:
    """Every `interval` seconds, expire the connections past their deadline. Runs until
    cancelled; a deadline is kept to within `interval`."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        now = loop.time()
        for connection in list(connections):
            expire = getattr(connection, "expire_if_late", None)
            if expire is not None:
                expire(now)


def sweep_interval(limits: HttpLimits) -> float:
    """A quarter of the shortest read timeout, between 50 ms and 1 s."""
    shortest = min(limits.header_timeout_seconds, limits.body_timeout_seconds)
    return min(1.0, max(0.05, shortest / 4))
