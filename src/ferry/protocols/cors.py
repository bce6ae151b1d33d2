"""CORS, two ways: TF Serving's `--rest_api_enable_cors_support` (`CorsApp`: every HTTP
answer carries the same three headers, and an OPTIONS preflight from a web origin is
answered 200), and ferry's `--cors_origins` (`CorsOriginsApp`: only the listed origins,
with real preflight checks, credentials for explicit origins only, and `Vary: Origin`).

Either wraps the whole HTTP app, outside `--auth`: a browser sends its preflight without
credentials, and the preflight runs nothing (the real request that follows is
authenticated as usual). With both flags, `--cors_origins` decides (it narrows TF
Serving's allow-all to the listed origins; `ferry.protocols.cors_flags`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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


# `--cors_origins`: what a listed origin may do. Methods: every method ferry's routes
# answer (DELETE: SageMaker's multi-model unload). Request headers: those ferry reads
# (SigV4's x-amz-*, SageMaker's x-amzn-sagemaker-*, the AWS JavaScript SDK's amz-sdk-*,
# V2's binary header length). Exposed: ferry's own response headers a page may read.
ALLOWED_METHODS = ("GET", "HEAD", "POST", "DELETE")
ALLOWED_REQUEST_HEADERS = frozenset(
    {
        "accept",
        "authorization",
        "content-encoding",
        "content-type",
        "inference-header-content-length",
        "x-request-id",
        "amz-sdk-invocation-id",
        "amz-sdk-request",
    }
)
ALLOWED_REQUEST_HEADER_PREFIXES = ("x-amz-", "x-amzn-sagemaker-")
EXPOSED_HEADERS = (
    b"Inference-Header-Content-Length, X-Request-ID, Retry-After, Ferry-Readiness, "
    b"X-Amzn-RequestId, X-Amzn-ErrorType, X-Amzn-Invoked-Production-Variant, "
    b"X-Amzn-SageMaker-Custom-Attributes"
)
# A preflight's answer depends on all three of its request headers.
PREFLIGHT_VARY = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
ANY_ORIGIN = "*"
DEFAULT_MAX_AGE_SECONDS = 600
_ORIGIN = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>[^/?#@\s]+)")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def normalize_origin(text: str) -> str:
    """An origin as browsers write it in `Origin` (`scheme://host[:port]`, lower case, no
    default port, no path), or `*`; raises ValueError saying what is wrong."""
    text = text.strip()
    if text == ANY_ORIGIN:
        return text
    if text.lower() == "null":
        raise ValueError(
            "'null' is the origin of sandboxed frames and local files: any page can send "
            "it, so it cannot be allowed"
        )
    match = _ORIGIN.fullmatch(text.lower())
    if match is None:
        raise ValueError(
            f"{text!r} is not an origin: give scheme://host[:port] with no path "
            "(e.g. https://app.example.com), or '*'"
        )
    scheme, host = match["scheme"], match["host"]
    default_port = _DEFAULT_PORTS.get(scheme)
    if default_port and host.endswith(default_port):
        host = host[: -len(default_port)]
    return f"{scheme}://{host}"


@dataclass(frozen=True)
class CorsPolicy:
    """`--cors_origins` and its companions. `origins` are normalized (`normalize_origin`);
    `*` among them allows every origin, without credentials. Credentials
    (`Access-Control-Allow-Credentials`) go only to origins listed by name."""

    origins: frozenset[str]
    allow_credentials: bool = False
    max_age_seconds: int = DEFAULT_MAX_AGE_SECONDS

    @property
    def any_origin(self) -> bool:
        return ANY_ORIGIN in self.origins

    @property
    def named_origins(self) -> frozenset[str]:
        return self.origins - {ANY_ORIGIN}


class CorsOriginsApp:
    """An ASGI app that answers CORS preflights by `policy` and adds CORS headers to
    `app`'s answers to listed origins.

    A preflight (OPTIONS with `Origin` and `Access-Control-Request-Method`) runs nothing:
    204 when the origin, method and every requested header are allowed, else 403 with
    a one-line reason. Other requests always reach `app`; their answers carry
    `Access-Control-Allow-Origin` only for an allowed origin, and `Vary: Origin` whenever
    origins are listed by name (the answer then depends on the origin, and a cache must
    not hand one origin's answer to another)."""

    def __init__(self, app: AsgiApp, policy: CorsPolicy) -> None:
        self._app = app
        self._policy = policy
        self._vary = [(b"vary", b"Origin")] if policy.named_origins else []
        # Answers to each named origin, and to any other (None: no CORS headers).
        self._named = {
            origin.encode(): self._allow_headers(origin.encode(), policy.allow_credentials)
            for origin in policy.named_origins
        }
        self._other = self._allow_headers(b"*", False) if policy.any_origin else None

    def _allow_headers(self, origin: bytes, credentials: bool) -> list[tuple[bytes, bytes]]:
        headers = [(b"access-control-allow-origin", origin)]
        if credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers

    def _allowed(self, origin: bytes | None) -> list[tuple[bytes, bytes]] | None:
        if origin is not None and origin in self._named:
            return self._named[origin]
        return self._other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        origin = header(scope, b"origin")
        if scope["method"] == "OPTIONS" and origin is not None:
            requested = header(scope, b"access-control-request-method")
            if requested is not None:
                await self._preflight(scope, send, origin, requested)
                return
        allowed = self._allowed(origin)
        extra = [*(allowed or ()), *self._vary]
        if allowed is not None:
            extra.append((b"access-control-expose-headers", EXPOSED_HEADERS))
        if not extra:
            await self._app(scope, receive, send)
            return

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self._app(scope, receive, send_with_cors)

    async def _preflight(self, scope: Scope, send: Send, origin: bytes, method: bytes) -> None:
        vary = [(b"vary", PREFLIGHT_VARY)]
        allowed = self._allowed(origin)
        names = _header_names(header(scope, b"access-control-request-headers") or b"")
        refused_headers = [name for name in names if not _request_header_allowed(name)]
        method_text = method.decode("latin-1").strip()
        if allowed is None:
            reason = (
                f"CORS preflight refused: origin {origin.decode('latin-1')!r} is not in "
                "--cors_origins"
            )
        elif method_text not in ALLOWED_METHODS:
            reason = (
                f"CORS preflight refused: method {method_text!r} is not allowed "
                f"(allowed: {', '.join(ALLOWED_METHODS)})"
            )
        elif refused_headers:
            reason = (
                "CORS preflight refused: request header(s) not allowed: "
                f"{', '.join(refused_headers)}"
            )
        else:
            headers = [
                *allowed,
                (b"access-control-allow-methods", ", ".join(ALLOWED_METHODS).encode()),
                (b"access-control-max-age", str(self._policy.max_age_seconds).encode()),
                *vary,
            ]
            if names:
                headers.append((b"access-control-allow-headers", ", ".join(names).encode()))
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        body = json.dumps({"error": reason}).encode()
        await send_response(send, 403, body, extra_headers=vary)


def _header_names(value: bytes) -> list[str]:
    """`Access-Control-Request-Headers`' names, lower case, in order, each once."""
    names = (name.strip().lower() for name in value.decode("latin-1").split(","))
    return list(dict.fromkeys(name for name in names if name))


def _request_header_allowed(name: str) -> bool:
    return name in ALLOWED_REQUEST_HEADERS or name.startswith(ALLOWED_REQUEST_HEADER_PREFIXES)
