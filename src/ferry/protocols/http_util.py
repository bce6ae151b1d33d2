"""Plain-ASGI helpers for the hot POST paths.

Inference requests skip Starlette's routing and middleware (measured: about a fifth of
the per-request Python time for small models); these helpers read the body with its
limit enforced and send a complete response.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson

from ferry.errors import FerryError, InvalidArgument, unexpected

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
# A successful answer: body, content type, extra headers.
Answer = tuple[bytes, bytes, Headers]
# A protocol's error form: HTTP status, body, extra headers.
ErrorParts = Callable[[FerryError], tuple[int, bytes, Headers]]
JSON = b"application/json"
# Sent with a refusal of a body that was not read (over --max_request_bytes): the rest of
# that body is still on its way, so the connection cannot carry another request.
CLOSE_CONNECTION = (b"connection", b"close")


class RequestTooLarge(FerryError):
    """The request body is over `--max_request_bytes` (HTTP 413)."""


class ClientDisconnected(Exception):
    """The client went away before sending its whole body."""


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (`name` in lower case)."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, refusing bodies over `limit` bytes before reading them in full."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(
            f"Request body of {int(declared)} bytes is over the limit of {limit} bytes "
            "(--max_request_bytes)"
        )
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    body = message.get("body", b"")
    if not message.get("more_body", False) and len(body) <= limit:
        return body  # the common case: the whole body arrived in one message
    chunks = [body]
    size = len(body)
    if size > limit:  # a chunked body (no length declared) that came in one message
        raise RequestTooLarge(
            f"Request body is over the limit of {limit} bytes (--max_request_bytes)"
        )
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(
                f"Request body is over the limit of {limit} bytes (--max_request_bytes)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def answer_post(
    scope: Scope, send: Send, answer: Awaitable[Answer], error_parts: ErrorParts
) -> None:
    """Send what `answer` produces with status 200, or its failure in the protocol's
    error form (`error_parts`): a FerryError as itself, anything else as an internal
    error that costs this one request, never the server (logged with its traceback).
    A client that went away mid-body gets nothing."""
    try:
        body, content_type, headers = await answer
        status = 200
    except FerryError as exc:
        status, body, headers = error_parts(exc)
        if isinstance(exc, RequestTooLarge):
            headers = [*headers, CLOSE_CONNECTION]
        content_type = JSON
    except ClientDisconnected:
        return
    except Exception as exc:
        log.exception("unexpected error serving %s %s", scope["method"], scope["path"])
        status, body, headers = error_parts(unexpected(exc))
        content_type = JSON
    await send_response(send, status, body, content_type, headers)


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def json_object_body(body: bytes) -> dict:
    """A small JSON control body (V2 repository and shared-memory requests): an object,
    or {} for an empty body; anything else is an InvalidArgument."""
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument("The request body must be a JSON object")
    return value
