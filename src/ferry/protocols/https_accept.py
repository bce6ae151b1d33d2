"""HTTPS on the REST port under ferry's HTTP limits: the TLS handshake counts against
`--max_connections` and must finish within `--http_header_timeout_seconds` together
with the request head, and plain HTTP sent to the HTTPS port gets a readable 400.

Why ferry does TLS in its protocol factory instead of handing uvicorn an `ssl` context:
with uvicorn's, the event loop runs the handshake before ferry's protocol exists, so
a connection in its handshake is in no connection count and under no ferry deadline
(only the loop's fixed 60 s handshake timeout): a client could hold descriptors past
`--max_connections` by starting handshakes and never finishing them. And a plain HTTP
request to the port failed as a bare close, which curl reports as "empty reply".

So the server listens on plain TCP and each connection starts as a `TlsAccept`: it is in
the server's connection set from accept, under the head deadline from accept; its first
byte tells a TLS ClientHello (a handshake record, 0x16) from anything else; a ClientHello
goes to the standard library's `asyncio.sslproto.SSLProtocol` (the code behind
`loop.create_server(ssl=...)`), whose handshake timeout is what is left of the deadline,
and the request protocol (`TlsHttpProtocol`, ferry's `LimitedHttpToolsProtocol`) takes
over once the handshake is done, with the head deadline still counted from accept.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from asyncio.sslproto import SSLProtocol
from collections.abc import Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from ferry.protocols.http_limits import (
    HEAD,
    LimitedHttpToolsProtocol,
    Refusals,
    TransportRefusal,
    refusal_response,
)
from ferry.transport_limits import REFUSAL_LINGER_BYTES, REFUSAL_LINGER_SECONDS, HttpLimits

# The first byte of every TLS record that opens a connection (a handshake record).
TLS_HANDSHAKE_RECORD = 0x16
# How long a closing connection waits for the peer's close_notify. A peer that reads
# answers it within a round trip; an idle pooled client (requests, urllib3) never reads,
# and each close (keep-alive expiry, drain) would hold its descriptor, and a drain, for
# the standard library's default 30 s.
TLS_CLOSE_WAIT_SECONDS = 1.0
PLAIN_HTTP_ON_HTTPS = TransportRefusal(
    400, "This port serves HTTPS (--ssl_certfile): send the request over TLS (https://)"
)


def https_protocol(limits: HttpLimits, context: ssl.SSLContext) -> Callable[..., TlsAccept]:
    """The protocol factory for `uvicorn.Config(http=...)` on an HTTPS port: one per server."""
    return functools.partial(TlsAccept, limits=limits, refusals=Refusals(), context=context)


def _feed(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    """Hand bytes already read to a buffered protocol, as the transport would have."""
    view = memoryview(data)
    while view:
        buffer = protocol.get_buffer(len(view))
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        protocol.buffer_updated(size)
        view = view[size:]


class TlsAccept(asyncio.Protocol):
    """One TCP connection to the HTTPS port until its TLS handshake is done.

    While it is in the server's connection set (from accept until the request protocol
    takes over, the connection closes, or its deadline passes) it counts against
    `--max_connections`, and ferry's deadline sweep (`expire_if_late`) closes it once
    the head deadline passes. One event loop: no locks."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HttpLimits,
        refusals: Refusals,
        context: ssl.SSLContext,
    ) -> None:
        self._loop = _loop or asyncio.get_event_loop()
        self._request_protocol = functools.partial(
            TlsHttpProtocol, config, server_state, app_state, _loop, limits=limits,
            refusals=refusals, accept=self,
        )  # fmt: skip
        self.connections = server_state.connections
        self.limits = limits
        self._refusals = refusals
        self._context = context
        self.transport: asyncio.Transport | None = None
        self.accepted_at = self._loop.time()
        self.deadline = self.accepted_at + limits.header_timeout_seconds
        self._refused = False
        self._linger_bytes = REFUSAL_LINGER_BYTES

    # Connection events (only until the TLS protocol takes the transport)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # (uvloop's transports are not asyncio.Transport subclasses: no isinstance check.)
        self.transport = transport
        self.accepted_at = self._loop.time()
        self.deadline = self.accepted_at + self.limits.header_timeout_seconds
        self.connections.add(self)
        if len(self.connections) > self.limits.max_connections:
            # Nothing readable can be said before the handshake: close at once, as
            # `LimitedHttpToolsProtocol` does with a flood of refusals.
            self._refusals.note_over_limit(self._loop.time(), self.limits.max_connections)
            self._leave()
            transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._linger_bytes -= len(data)
            if self._linger_bytes < 0 and self.transport is not None:
                self.transport.close()
            return
        if data[0] != TLS_HANDSHAKE_RECORD:
            self._refuse_plain_http()
            return
        self._start_tls(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()

    def _start_tls(self, first_bytes: bytes) -> None:
        transport = self.transport
        assert transport is not None
        remaining = max(self.deadline - self._loop.time(), 0.001)
        tls = _TlsConnection(
            self,
            self._loop,
            self._request_protocol(),
            self._context,
            None,
            server_side=True,
            ssl_handshake_timeout=remaining,
            ssl_shutdown_timeout=TLS_CLOSE_WAIT_SECONDS,
        )
        # Reading restarts after the switch, so the transport reads into the buffered
        # TLS protocol from then on (what `loop.start_tls` does).
        transport.pause_reading()
        transport.set_protocol(tls)
        tls.connection_made(transport)
        _feed(tls, first_bytes)
        if not transport.is_closing():
            transport.resume_reading()

    def _refuse_plain_http(self) -> None:
        transport = self.transport
        assert transport is not None
        self._refused = True
        self._leave()
        transport.write(refusal_response(PLAIN_HTTP_ON_HTTPS))
        if not self._refusals.take_linger():
            transport.close()
            return
        if transport.can_write_eof():
            transport.write_eof()
        self._loop.call_later(REFUSAL_LINGER_SECONDS, self._end_linger)

    def _end_linger(self) -> None:
        self._refusals.end_linger()
        if self.transport is not None:
            self.transport.close()

    # The server's connection set

    def _leave(self) -> None:
        self.connections.discard(self)

    def handed_over(self) -> None:
        """The handshake is done and the request protocol has the connection."""
        self._leave()

    def expire_if_late(self, now: float) -> None:
        """Close the connection once its head deadline passed with the handshake not
        done (called by `enforce_deadlines`)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self._leave()
        elif now >= self.deadline:
            self._leave()
            transport.abort()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: a connection still in its handshake has no
        request to finish."""
        self._leave()
        if self.transport is not None:
            self.transport.close()


class _TlsConnection(SSLProtocol):
    """The standard library's TLS protocol, telling the connection's `TlsAccept` when the
    connection closes (a failed handshake leaves the connection set at once)."""

    def __init__(self, accept: TlsAccept, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._accept = accept

    def connection_lost(self, exc: Exception | None) -> None:
        self._accept.connection_lost(exc)
        super().connection_lost(exc)


class TlsHttpProtocol(LimitedHttpToolsProtocol):
    """`LimitedHttpToolsProtocol` on a TLS connection: it replaces the connection's
    `TlsAccept` in the connection set, and its first head deadline runs from accept
    (the handshake's time is the client's too)."""

    def __init__(self, *args: Any, accept: TlsAccept, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._accept = accept

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._accept.handed_over()
        super().connection_made(transport)
        if self._phase == HEAD:  # not refused over --max_connections
            self._deadline = self._accept.deadline
