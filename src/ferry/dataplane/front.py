"""The bridge from the Rust HTTP front to ferry's ASGI app.

`ferry._dataplane.HttpFront` queues each request it has read (head and body, under the
transport limits) and makes a descriptor readable; the event loop watches it, takes every
queued request at once and runs each through the ASGI app, then hands the answer back
with `Request.respond`. No Rust thread waits for the GIL (see rust/src/handoff.rs).

The app sees what uvicorn would give it: the same scope keys, the body as one message
(or, when the body is over `--max_request_bytes`, split so the app's own limit check
refuses it in its protocol's form), and `http.disconnect` once the answer is sent. An
app that fails before answering gets uvicorn's 500 (`Internal Server Error`), so the two
fronts answer alike.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from ferry.auth.middleware import VERIFIED_EXTENSION
from ferry.codecs.float_rows import FLOAT_ROWS_EXTENSION, from_front
from ferry.codecs.v2 import V2_INPUTS_EXTENSION
from ferry.dataplane.flags import EXTENSION
from ferry.errors import ListenError, SetupError
from ferry.protocols.http_limits import (
    Refusals,
    TransportRefusal,
    body_timeout,
    head_timeout,
    head_too_large,
    refusal_body,
    too_many_connections,
    too_many_headers,
    url_too_long,
)
from ferry.protocols.http_util import Message, Receive, Scope, Send
from ferry.protocols.https_accept import PLAIN_HTTP_ON_HTTPS
from ferry.rest_tls import RestTls
from ferry.transport_limits import (
    MAX_LINGERING_REFUSALS,
    REFUSAL_LINGER_BYTES,
    REFUSAL_LINGER_SECONDS,
    HttpLimits,
)

log = logging.getLogger(__name__)

# An ASGI application.
ASGI = Callable[[Scope, Receive, Send], Awaitable[None]]
INTERNAL_ERROR = (500, [(b"content-type", b"text/plain; charset=utf-8")], b"Internal Server Error")
# How often a drain checks whether the last connection has closed.
DRAIN_POLL_SECONDS = 0.02


def load_extension() -> Any:
    """The compiled module, or a SetupError that says how to build it."""
    try:
        return importlib.import_module(EXTENSION)
    except ImportError as exc:
        raise SetupError(
            "--dataplane rust: the Rust front is not built in this install (run `make serve` "
            "or `make test` in a clone where cargo is; docs/dataplane.md); "
            f"--dataplane python serves without it ({exc})"
        ) from None


def _refusal(refusal: TransportRefusal) -> tuple[int, bytes]:
    return refusal.status, refusal_body(refusal)


def _tls_arguments(tls: RestTls) -> tuple[bytes, bytes, bytes | None, str, tuple[int, bytes]]:
    """What the front's rustls config is made of: the PEM texts, the client certificate
    mode, and the answer to plain HTTP on the HTTPS port (the Python front's words)."""
    return (
        tls.certfile.read_bytes(),
        tls.keyfile.read_bytes(),
        tls.ca_certs.read_bytes() if tls.ca_certs is not None else None,
        tls.client_certificate.value,
        _refusal(PLAIN_HTTP_ON_HTTPS),
    )


class RustHttpFront:
    """One REST listener served by the Rust front, its requests run by `app`."""

    def __init__(
        self,
        app: ASGI,
        host: str,
        port: int,
        limits: HttpLimits,
        max_request_bytes: int,
        threads: int,
        tls: RestTls | None = None,
    ) -> None:
        """`tls`: HTTPS with these files (`--ssl_certfile` and companions, already
        checked by `ferry.rest_tls.resolve`)."""
        extension = load_extension()
        self._max_connections = limits.max_connections
        self._refusals = Refusals()
        self._refused_seen = 0
        self._scheme = "https" if tls is not None else "http"
        self._app = app
        self._limit = max_request_bytes
        self._server = (host, port)
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            self._front = extension.HttpFront(
                host,
                port,
                threads=threads,
                max_header_bytes=limits.max_header_bytes,
                max_header_count=limits.max_header_count,
                header_timeout_seconds=limits.header_timeout_seconds,
                body_timeout_seconds=limits.body_timeout_seconds,
                keep_alive_timeout_seconds=limits.keep_alive_timeout_seconds,
                max_connections=limits.max_connections,
                max_request_bytes=max_request_bytes,
                too_many_connections=_refusal(too_many_connections(limits)),
                head_timeout=_refusal(head_timeout(limits)),
                body_timeout=_refusal(body_timeout(limits)),
                head_too_large=_refusal(head_too_large(limits)),
                url_too_long=_refusal(url_too_long(limits)),
                too_many_headers=_refusal(too_many_headers(limits)),
                refusal_linger_seconds=REFUSAL_LINGER_SECONDS,
                refusal_linger_bytes=REFUSAL_LINGER_BYTES,
                max_lingering_refusals=MAX_LINGERING_REFUSALS,
                tls=_tls_arguments(tls) if tls is not None else None,
            )
        except ValueError as exc:  # a PEM form rustls does not read (OpenSSL did)
            raise SetupError(f"--dataplane rust: HTTPS cannot start: {exc}") from None
        except OSError as exc:
            # The line uvicorn logs (asyncio's words), then ferry's one error line.
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            log.error(
                "[Errno %s] error while attempting to bind on address %r: %s",
                exc.errno,
                (host, port),
                reason,
            )
            raise ListenError.rest_port(host, port) from None

    @property
    def port(self) -> int:
        return self._front.port

    def publish_keys(
        self,
        generation: int,
        secrets: dict[str, str],
        token_ids: dict[str, str],
        max_skew_seconds: float,
    ) -> None:
        """`--auth`'s keys for the front's own checks (ferry.auth.middleware's SetKeys)."""
        self._front.set_keys(generation, secrets, token_ids, max_skew_seconds)

    @property
    def in_flight(self) -> int:
        return self._front.in_flight

    def start(self) -> None:
        """Start taking requests on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._front.wake_fd, self._take)

    def _log_refusals(self) -> None:
        """Log the connections the front refused over `--max_connections` as the Python
        front does (at most a line a second). The front wakes the loop for each."""
        assert self._loop is not None
        refused = self._front.refused_connections
        if refused > self._refused_seen:
            self._refusals.note_over_limit(
                self._loop.time(), self._max_connections, refused - self._refused_seen
            )
            self._refused_seen = refused

    def _take(self) -> None:
        assert self._loop is not None
        self._log_refusals()
        for request in self._front.take():
            task = self._loop.create_task(self._serve(request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _scope(self, request) -> Scope:
        raw_path = request.path
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self._server,
            "client": request.client,
            "scheme": self._scheme,
            "method": request.method,
            "root_path": "",
            "path": unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": request.query,
            "headers": request.headers,
        }
        extensions = {}
        rows = request.take_float_rows()
        if rows is not None:
            extensions[FLOAT_ROWS_EXTENSION] = from_front(rows)
        v2_inputs = request.take_v2_inputs()
        if v2_inputs is not None:
            extensions[V2_INPUTS_EXTENSION] = v2_inputs
        credentials = request.credentials
        if credentials is not None:
            extensions[VERIFIED_EXTENSION] = credentials
        if extensions:
            scope["extensions"] = extensions
        return scope

    def _messages(self, body: bytes) -> list[Message]:
        if len(body) <= self._limit:
            return [{"type": "http.request", "body": body, "more_body": False}]
        # One byte over the limit: two messages, so the app's running count sees it.
        return [
            {"type": "http.request", "body": body[: self._limit], "more_body": True},
            {"type": "http.request", "body": body[self._limit :], "more_body": False},
        ]

    async def _serve(self, request) -> None:
        messages = self._messages(request.take_body())
        answered = asyncio.Event()
        status: int | None = None
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def receive() -> Message:
            if messages:
                return messages.pop(0)
            await answered.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    answered.set()

        try:
            await self._app(self._scope(request), receive, send)
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
        finally:
            answered.set()
            if status is None:
                status, headers, chunks = INTERNAL_ERROR[0], INTERNAL_ERROR[1], [INTERNAL_ERROR[2]]
            request.respond(status, headers, b"".join(chunks))

    async def drain(self, timeout_seconds: float) -> None:
        """Stop accepting; wait (at most `timeout_seconds`) for open connections to finish
        the requests they are on."""
        self._front.close()
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while not self._front.drained and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(DRAIN_POLL_SECONDS)

    def stop(self) -> None:
        """Stop the front's threads (after `drain`)."""
        if self._loop is not None:
            self._loop.remove_reader(self._front.wake_fd)
        self._front.shutdown()
