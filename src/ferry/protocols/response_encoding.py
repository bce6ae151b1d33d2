"""Answers compressed as the request's `Accept-Encoding` asks, where the peer does so.

Which answers are compressed is the peer's rule:
  * V2 (Triton's http_server.cc): a successful inference answer (POST .../infer), JSON
    or with binary outputs, is compressed with the coding `Accept-Encoding` prefers
    (`CompressionTypeUsed`: the first of `identity`, `gzip`, `deflate` with the highest
    `;q=`, 1 when absent; names are compared exactly, `*` and other codings are
    ignored, and with none of the three the answer goes as it is). `Content-Encoding`
    names the coding; with binary outputs `Inference-Header-Content-Length` still counts
    the JSON header before compression (tritonclient inflates the whole body, then
    splits it there). `deflate` is the zlib format (RFC 9110 section 8.4.1.2: Triton's
    `deflateInit`, read by tritonclient's `zlib.decompress`). Errors, the other V2
    routes and Triton's SageMaker and Vertex AI front ends are never compressed.
  * TF Serving (net_http): never. Its HTTP server inflates gzip request bodies but has
    no response compression ("To be added: compression" in httpserver_interface.h), so
    `Accept-Encoding` is ignored on /v1/; SageMaker's routes likewise.

Where ferry departs from Triton, and why (all three are flags, ferry.protocols.
response_encoding_flags): Triton compresses every non-empty answer at zlib's default
level 6. ferry leaves answers under `min_bytes` as they are: a body that small fits one
TCP segment either way, so compressing it saves no packet and costs CPU on both ends
(a 124-byte answer shrinks by 20 bytes). It compresses at level 1: on a 4.9 MB JSON
answer of random FP32 values, level 6 took 417 ms against level 1's 75 ms for a 7 %
smaller body, and float tensors in binary hardly shrink at any level (1 MB: 7 %).
A body that did not get smaller is sent as it is (the client then has nothing to
inflate). Bodies over `_INLINE_BYTES` are compressed on a worker thread (zlib releases
the GIL), so the event loop keeps serving other clients meanwhile.
"""

from __future__ import annotations

import asyncio
import math
import re
import zlib
from dataclasses import dataclass

from ferry.protocols.http_util import Headers, Scope, header
from ferry.protocols.request_encoding import Coding

# Answers smaller than this are sent as they are (see the module docstring).
DEFAULT_MIN_BYTES = 1024
# zlib's fastest level (Triton's is zlib's default, 6; see the module docstring).
DEFAULT_LEVEL = 1
# Compressing this much at level 1 takes about a millisecond; larger bodies go to a thread.
_INLINE_BYTES = 64 * 1024
# zlib's windowBits for each coding: 15, the zlib format; 16 + 15, the gzip format.
_WINDOW_BITS = {Coding.GZIP: 16 + 15, Coding.DEFLATE: 15}
_CODINGS = {"identity": Coding.IDENTITY, "gzip": Coding.GZIP, "deflate": Coding.DEFLATE}
_WEIGHT = ";q="
# What std::stod reads of a `q` value: leading white space, then a decimal number, an
# infinity or NaN (the text after it is ignored).
_NUMBER = re.compile(
    r"[ \t\n\v\f\r]*([+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan))",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ResponseCompression:
    """Whether, from what size and how hard V2 inference answers are compressed."""

    enabled: bool = True
    min_bytes: int = DEFAULT_MIN_BYTES
    level: int = DEFAULT_LEVEL

    async def encode(self, scope: Scope, body: bytes) -> tuple[bytes, Headers]:
        """`body` as the request's `Accept-Encoding` asks (Triton's rule), with the
        `Content-Encoding` header to send when it was compressed."""
        if not self.enabled or len(body) < max(self.min_bytes, 1):
            return body, []
        coding = accepted_coding(header(scope, b"accept-encoding"))
        if coding is Coding.IDENTITY:
            return body, []
        if len(body) > _INLINE_BYTES:
            compressed = await asyncio.to_thread(compress, body, coding, self.level)
        else:
            compressed = compress(body, coding, self.level)
        if len(compressed) >= len(body):
            return body, []
        return compressed, [(b"content-encoding", coding.value.encode())]


def accepted_coding(value: bytes | None) -> Coding:
    """The coding an `Accept-Encoding` value prefers, read as Triton's
    `CompressionTypeUsed` reads it: items split at commas, leading spaces dropped, a
    weight after an exact `;q=` (an item whose weight is unreadable is skipped), and the
    first item of the highest weight above 0 among `identity`, `gzip` and `deflate`."""
    if value is None:
        return Coding.IDENTITY
    chosen, best = Coding.IDENTITY, 0.0
    for item in value.decode("latin-1").split(","):
        start = len(item) - len(item.lstrip(" "))
        at = item.find(_WEIGHT)
        if start == len(item) or (at != -1 and start >= at):
            continue  # empty, or a weight without a name
        name = item[start:] if at == -1 else item[start:at]
        weight = 1.0 if at == -1 else _weight(item[at + len(_WEIGHT) :])
        coding = _CODINGS.get(name)
        if coding is not None and weight is not None and weight > best:
            chosen, best = coding, weight
    return chosen


def _weight(text: str) -> float | None:
    """A `q` value as std::stod reads it; None where stod throws (no number, or one out
    of a double's range)."""
    match = _NUMBER.match(text)
    if match is None:
        return None
    number = match[1]
    value = float(number)
    if math.isinf(value) and "inf" not in number.lower():
        return None  # overflows a double: stod's out_of_range
    return value


def compress(body: bytes, coding: Coding, level: int) -> bytes:
    """`body` in `coding`'s format (gzip or deflate) at zlib `level`."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, _WINDOW_BITS[coding])
    return compressor.compress(body) + compressor.flush()
