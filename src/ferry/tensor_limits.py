"""How large a request's decoded tensors may be, checked before any of them exists.

Every codec sizes a tensor here from its client-given shape before it allocates:
elements and bytes are computed with Python ints (no int64 overflow), and a tensor over
`--max_tensor_bytes`, or a request whose tensors together are over it, is refused with
InvalidArgument (HTTP 400 / gRPC INVALID_ARGUMENT, as TF Serving refuses a bad shape).
Not RESOURCE_EXHAUSTED: TF Serving's REST mapping makes that 429, which tells clients
to retry a request that can never pass.

Without this a 41-byte gRPC Predict (`float_val: [0.5]`, shape [2**20, 784]) filled
3 GiB, and a 109-byte V2 request (BYTES, shape [2**29], no data) allocated gigabytes
before noticing the data was missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ferry.errors import InvalidArgument

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
# The default --max_tensor_bytes, per byte of --max_request_bytes. A request that carries
# its data never decodes to more than 4x its size: the densest wire form is a 1-digit
# JSON number and its comma ("0,", 2 bytes) read into an 8-byte int64 or float64;
# binary forms are 1:1, base64 3:4, V2 BYTES elements at least 4 wire bytes for an
# 8-byte reference. So only fills (TensorProto's one-value `*_val`) and claimed element
# counts can go beyond it, and those are what the limit stops.
TENSOR_BYTES_PER_REQUEST_BYTE = 4

# TensorFlow's TensorShape takes up to 254 dimensions, but every ferry tensor is a numpy
# array and NumPy 2 holds at most 64 (NPY_MAXDIMS); a deeper shape used to fail inside
# numpy with HTTP 500. ONNX Runtime and LiteRT models have far fewer.
MAX_RANK = 64
# numpy sizes an array's buffer as the product of its non-zero dimensions times the
# element size, in a signed 64-bit int, even when a zero dimension leaves it empty.
_MAX_EXTENT_BYTES = 2**63 - 1
# The width of one element of a string tensor: numpy object arrays hold 8-byte
# references (the strings themselves are already in the request).
REFERENCE_BYTES = 8


@dataclass(frozen=True)
class RequestLimits:
    """The per-request limits the protocols enforce: the body size (`--max_request_bytes`)
    and the decoded size of its tensors (`--max_tensor_bytes`; 0 means
    TENSOR_BYTES_PER_REQUEST_BYTE times the body limit). Immutable, shared by every
    protocol object."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_tensor_bytes: int = 0

    def __post_init__(self) -> None:
        if self.max_tensor_bytes <= 0:
            derived = TENSOR_BYTES_PER_REQUEST_BYTE * self.max_request_bytes
            object.__setattr__(self, "max_tensor_bytes", derived)

    def budget(self) -> TensorBudget:
        """A fresh budget for one request's input tensors."""
        return TensorBudget(self.max_tensor_bytes)


class TensorBudget:
    """The bytes one request's decoded input tensors may take, spent tensor by tensor
    (`admit`) before each is allocated. One per request decode; not thread-safe."""

    __slots__ = ("max_bytes", "spent")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.spent = 0

    def admit(self, name: str, shape: Sequence[int], itemsize: int) -> int:
        """Check a tensor of `shape` with elements of `itemsize` bytes and charge it to
        the request; returns its element count. Raises InvalidArgument for a negative
        dimension, a rank over MAX_RANK, a shape no array can have, a tensor over the
        limit, or a request whose tensors together go over it."""
        dims = checked_dims(shape, name)
        count = math.prod(dims)
        if count == 0 and math.prod(d for d in dims if d) * max(itemsize, 1) > _MAX_EXTENT_BYTES:
            # An empty tensor whose other dimensions exceed what numpy (and TF's int64
            # element count) can describe: [0, 2**63] used to fail inside numpy.
            raise InvalidArgument(
                f"Input '{name}' has shape {list(dims)}, whose non-zero dimensions multiply "
                "to more than any tensor can have (2**63 - 1 bytes)"
            )
        size = count * itemsize
        # The hot path (every input of every request): one comparison when within limits.
        if self.spent + size > self.max_bytes:
            self.charge(f"Input '{name}' of shape {list(dims)}", size)  # raises
        self.spent += size
        return count

    def charge(self, what: str, size: int) -> None:
        """Charge `size` decoded bytes for `what` ("Input 'x' of shape [2, 3]"), or raise
        InvalidArgument when it, or the request's total with it, is over the limit."""
        if size > self.max_bytes:
            raise InvalidArgument(
                f"{what} would take {size} bytes decoded, over the limit of "
                f"{self.max_bytes} bytes (--max_tensor_bytes)"
            )
        if self.spent + size > self.max_bytes:
            raise InvalidArgument(
                f"The request's inputs would take {self.spent + size} bytes decoded "
                f"together, over the limit of {self.max_bytes} bytes (--max_tensor_bytes)"
            )
        self.spent += size


def unlimited() -> TensorBudget:
    """A budget with no byte limit (shapes are still checked): for trusted data such as
    the operator's warm-up files and a client's view of its server's answers."""
    return TensorBudget(_MAX_EXTENT_BYTES)


def checked_dims(shape: Sequence[int], name: str) -> tuple[int, ...]:
    """`shape` as a tuple of dimensions, refused (InvalidArgument naming the input) when
    its rank is over MAX_RANK or a dimension is negative."""
    if len(shape) > MAX_RANK:
        # The shape itself is not echoed: it may be a million dimensions long.
        raise InvalidArgument(
            f"Input '{name}' has {len(shape)} dimensions; a tensor may have at most {MAX_RANK}"
        )
    dims = tuple(shape)
    if dims and min(dims) < 0:
        raise InvalidArgument(f"Input '{name}' has a negative dimension in shape {list(dims)}")
    return dims
