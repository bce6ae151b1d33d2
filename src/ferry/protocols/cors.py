"""CORS as TF Serving's `--rest_api_enable_cors_support` does it: every HTTP answer carries
the same three headers, and an OPTIONS preflight from a web origin is answered 200.

It wraps the whole HTTP app, outside `--auth`: a browser sends its preflight without
credentials, and the preflight runs nothing (the real request that follows is
authenticated as usual).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from ferry.errors import FailedPrecondition
from ferry.protocols.http_util import ErrorParts, Receive, Scope, Send, header, send_response

AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# TF Serving's headers (http_rest_api_util.cc), sent on every answer.
CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"Content-Type"),
]
# A preflight must come from a web page: TF Serving checks for `https?://` in Origin.
_WEB_ORIGIN = re.compile(rb"https?://")
PREFLIGHT_WITHOUT_ORIGIN = "Origin header is missing in CORS preflight"


class CorsApp:
    """An ASGI app that adds `CORS_HEADERS` to `app`'s answers and answers preflights."""

    def __init__(self, app: AsgiApp, error_parts: ErrorParts) -> None:
        self._app = app
        self._error_parts = error_parts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            origin = header(scope, b"origin") or b""
            if _WEB_ORIGIN.search(origin):
                await send_response(send, 200, b"", extra_headers=CORS_HEADERS)
            else:
                status, body, headers = self._error_parts(
                    FailedPrecondition(PREFLIGHT_WITHOUT_ORIGIN)
                )
                await send_response(send, status, body, extra_headers=[*headers, *CORS_HEADERS])
            return

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *CORS_HEADERS]}
            await send(message)

        await self._app(scope, receive, send_with_cors)
