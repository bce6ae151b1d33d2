"""The fast path for the commonest `:predict` body: `{"instances": [[numbers, ...], ...]}`.

orjson makes a Python float of every number and numpy then reads them back one by
one: for 1,024 floats about 30 µs, most of a large model's per-request JSON cost.
simdjson (pysimdjson) parses the body into its tape and hands the numbers over as one
buffer of doubles: about 14 µs, checks included. Only the exact shape below takes this
path. Any other body, and every malformed one, goes through `tfserving_json` as
before, so its errors read the same.

Taken when the body is a JSON object whose only keys are "instances" and, optionally,
"signature_name" (a string), no key repeated, "instances" a non-empty array of
non-empty arrays of numbers, all of one length, with nothing nested deeper. The last
is checked by counting the body's `[`: its only strings are the keys and the signature
name, so every other `[` opens an array. Numbers become float64 and then the input's
dtype, as numpy converts Python floats, so the arrays equal the orjson path's bit for
bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import simdjson

INSTANCES = "instances"
SIGNATURE_NAME = "signature_name"
# The ASGI scope extension under which the Rust front passes the rows it decoded from a
# `:predict` body on its own threads (rust/src/codec/float_rows.rs takes a subset of
# what `parse_float_rows` takes, with the same doubles; ferry.dataplane.front).
FLOAT_ROWS_EXTENSION = "ferry.float_rows"


@dataclass(frozen=True)
class FloatRows:
    """A row-format body of plain numbers: `rows` is float64, one row per instance."""

    signature_name: str | None
    rows: np.ndarray


def decoded_by_front(scope: Mapping[str, Any]) -> FloatRows | None:
    """The rows the Rust front decoded from this ASGI request's body, if it did."""
    return scope.get("extensions", {}).get(FLOAT_ROWS_EXTENSION)


def from_front(decoded: tuple[str | None, int, int, bytearray]) -> FloatRows:
    """The rows as the Rust front hands them over: (signature_name, rows, width, the
    doubles' bytes, little-endian)."""
    signature_name, count, width, data = decoded
    values = np.frombuffer(data, dtype="<f8").reshape(count, width)
    return FloatRows(signature_name, values)


def parse_float_rows(body: bytes) -> FloatRows | None:
    """The body's rows, or None when it is not exactly the simple shape (the caller
    then parses it the general way)."""
    try:
        # A parser per call: parsers are not thread-safe, and creating one costs
        # well under a microsecond (its buffers come with the first parse).
        document = simdjson.Parser().parse(body)
        if not isinstance(document, simdjson.Object):
            return None
        keys = list(document.keys())
        if INSTANCES not in keys or len(keys) != len(set(keys)):
            return None
        signature_name = None
        if len(keys) == 2:
            if SIGNATURE_NAME not in keys:
                return None
            signature_name = document[SIGNATURE_NAME]
            if not isinstance(signature_name, str) or "[" in signature_name:
                return None
        elif len(keys) != 1:
            return None
        instances = document[INSTANCES]
        if not isinstance(instances, simdjson.Array):
            return None
        count = len(instances)
        if not count or body.count(b"[") != count + 1:
            return None
        values = np.frombuffer(instances.as_buffer(of_type="d"), dtype=np.float64)
        width = values.size // count
        if not width or values.size != width * count:
            return None
        for row in instances:
            if not isinstance(row, simdjson.Array) or len(row) != width:
                return None
    except (ValueError, TypeError, RuntimeError):
        # Not JSON simdjson takes (NaN tokens, huge numbers, bad syntax), or not numbers.
        return None
    return FloatRows(signature_name, values.reshape(count, width))
