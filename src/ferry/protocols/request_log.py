"""Request ids on every HTTP request and gRPC call, and the optional access log.

The HTTP side is the outermost ASGI layer, so refusals by --auth and CORS answers carry
an id too: the client's `X-Request-ID` when acceptable (ferry.logging_setup), else a
fresh one, returned as `x-request-id` on the response and set in the context variable
that stamps every log line of the request. gRPC takes `x-request-id` from the call's
metadata the same way (the handler runs in the task the id is set in).

The access log (`--access_log`) is one line per HTTP request on the `ferry.access`
logger: method, path, status, duration, response bytes, request id. Off by default: it
formats and writes a line per request on the event loop that also serves them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import grpc

from ferry.logging_setup import (
    REQUEST_ID_HEADER,
    REQUEST_ID_METADATA,
    accepted_request_id,
    request_id,
)
from ferry.protocols.http_util import Message, Receive, Scope, Send, header

access_log = logging.getLogger("ferry.access")

HttpApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestIdApp:
    """Gives every HTTP request an id (and, with `access_log`, an access line)."""

    def __init__(self, app: HttpApp, access_log_enabled: bool = False) -> None:
        self.app = app
        self.access_log_enabled = access_log_enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = accepted_request_id(header(scope, REQUEST_ID_HEADER))
        token = request_id.set(rid)
        id_header = (REQUEST_ID_HEADER, rid.encode())
        if not self.access_log_enabled:

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), id_header]
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            finally:
                request_id.reset(token)
            return
        await self._logged(scope, receive, send, rid, id_header, token)

    async def _logged(self, scope, receive, send, rid, id_header, token) -> None:
        started = time.perf_counter()
        status = 0
        sent = 0

        async def send_counted(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            access_log.info(
                "%s %s %d %.2fms %dB",
                scope["method"],
                scope["path"],
                status,
                duration_ms,
                sent,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(duration_ms, 3),
                    "bytes": sent,
                },
            )
            request_id.reset(token)


class GrpcRequestId(grpc.aio.ServerInterceptor):
    """Sets the request id of a gRPC call from its `x-request-id` metadata (or a fresh
    one) for the handler's log lines."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        value = None
        for key, item in handler_call_details.invocation_metadata or ():
            if key == REQUEST_ID_METADATA:
                value = item
                break
        # grpc.aio runs the interceptors and then the handler in the call's own task, so
        # the variable set here is what the handler's log lines see.
        request_id.set(accepted_request_id(value))
        return await continuation(handler_call_details)
