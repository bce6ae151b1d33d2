"""Request bodies sent compressed (`Content-Encoding: gzip` / `deflate`), inflated with
the body limit enforced while inflating.

Which encodings a protocol takes is its peer's rule:
  * V2 (Triton's http_server.cc): exactly `gzip` or `deflate` is inflated (zlib detects
    the gzip or zlib header, as Triton's `inflateInit2(15 | 32)` does); absent, empty
    or `identity` is taken as it is; anything else is refused (501, with
    `Accept-Encoding: gzip, deflate`).
  * TF Serving (net_http's evhttp_request.cc): a Content-Encoding that contains `gzip`
    is inflated; any other value is ignored and the body taken as it is.

Why bounded while inflating, never after: a 64 KB gzip of zeros inflates to 64 MB and
a few hundred KB to gigabytes, so the inflated size is checked chunk by chunk and the
request is refused at `--max_request_bytes` + 1 bytes, before more is allocated
(Triton likewise stops at its --http-max-input-size). Inflating costs CPU in
proportion to the output (64 MB of zeros: 1.3 s on this repository's loaded 2-core test
machine), so it runs on a worker thread (zlib releases the GIL) and the event loop
keeps serving other clients meanwhile.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from enum import Enum

from ferry.errors import FerryError, InvalidArgument
from ferry.protocols.http_util import RequestTooLarge, Scope, header

# Inflate at most this much per step: the buffer zlib fills before the limit is checked.
_CHUNK_BYTES = 1 << 20
# zlib or gzip header, detected (zlib's windowBits 15 | 32).
_AUTO_HEADER = 15 | 32


class Coding(Enum):
    IDENTITY = "identity"
    GZIP = "gzip"
    DEFLATE = "deflate"


def v2_coding(scope: Scope, unsupported: Callable[[], FerryError]) -> Coding:
    """The V2 body's encoding by Triton's rule; `unsupported()` is raised for others."""
    value = header(scope, b"content-encoding")
    if value is None or value in (b"", b"identity"):
        return Coding.IDENTITY
    if value == b"gzip":
        return Coding.GZIP
    if value == b"deflate":
        return Coding.DEFLATE
    raise unsupported()


def tfserving_coding(scope: Scope) -> Coding:
    """The TF Serving REST body's encoding by TF Serving's rule (gzip or nothing)."""
    value = header(scope, b"content-encoding")
    return Coding.GZIP if value is not None and b"gzip" in value else Coding.IDENTITY


def inflates_too_large(limit: int) -> RequestTooLarge:
    """ferry's refusal where the peer has no words of its own (TF Serving's server drops
    a body it cannot inflate, and its handler then finds the document empty): 413, as
    for a body over the limit as sent."""
    return RequestTooLarge(
        f"Request body inflates to more than the limit of {limit} bytes (--max_request_bytes)"
    )


async def decoded_body(
    body: bytes, coding: Coding, limit: int, too_large: Callable[[int], FerryError]
) -> bytes:
    """`body` inflated (as it is for IDENTITY), refusing with `too_large(limit)` as soon
    as the inflated size passes `limit` and with InvalidArgument for corrupt data."""
    if coding is Coding.IDENTITY:
        return body
    return await asyncio.to_thread(inflate, body, coding, limit, too_large)


def inflate(
    body: bytes, coding: Coding, limit: int, too_large: Callable[[int], FerryError]
) -> bytes:
    """The inflated body, never holding more than `limit` + 1 inflated bytes. The input
    is fed in pieces too: zlib copies what it has not consumed on every call, which for
    a whole body at once would make inflating quadratic."""
    inflater = zlib.decompressobj(_AUTO_HEADER)
    parts: list[bytes] = []
    size = 0
    view = memoryview(body)
    try:
        for start in range(0, len(view), _CHUNK_BYTES):
            pending: bytes | memoryview = view[start : start + _CHUNK_BYTES]
            while not inflater.eof:
                room = min(_CHUNK_BYTES, limit + 1 - size)
                part = inflater.decompress(pending, room)
                size += len(part)
                if size > limit:
                    raise too_large(limit)
                parts.append(part)
                pending = inflater.unconsumed_tail
                if not pending and len(part) < room:
                    break  # this piece is used up and its output given out: the next one
            if inflater.eof:
                break
    except zlib.error as exc:
        raise InvalidArgument(f"The request body is not valid {coding.value} data: {exc}") from None
    if not inflater.eof:
        raise InvalidArgument(
            f"The request body ({coding.value}) ends before its compressed data does"
        )
    return b"".join(parts)
