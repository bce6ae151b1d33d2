"""Small HTTP helpers shared by the REST protocol modules."""

from __future__ import annotations

from starlette.requests import Request

from ferry.errors import FerryError


class RequestTooLarge(FerryError):
    """The request body is over `--max_request_bytes` (HTTP 413)."""


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing bodies over `limit` bytes before reading them in full."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(
            f"Request body of {declared} bytes is over the limit of {limit} bytes "
            "(--max_request_bytes)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(
                f"Request body is over the limit of {limit} bytes (--max_request_bytes)"
            )
        chunks.append(chunk)
    return b"".join(chunks)
