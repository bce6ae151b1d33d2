"""Protobuf packed repeated fields written from numpy arrays without a Python object per
value, where that is faster than protobuf's own `extend`.

TF Serving answers gRPC Predict with outputs in the typed `*_val` fields of TensorProto.
Filling such a field from Python makes one Python object per element: measured for a
[1024, 1024] float32 output, `float_val.extend(array.tolist())` took 46 ms and
`extend(array)` 125 ms, against 7 ms for `tensor_content`. The wire form of a packed
field is only a tag, a length and the values, so for fixed-width values (float, double)
and one-byte varints (bools, values below 128) ferry writes those bytes with numpy and
lets the protobuf runtime parse them (`MergeFromString`, a memory copy): 11.7 ms for the
same output, 3.4 µs for a [1, 1024] one. Wider varints (most int32/int64 outputs) stay
with `extend(array.tolist())`: a numpy varint encoder measured no faster (64 Ki int64
values: 2.3-4.5 ms against 2.4-2.9 ms).
"""

from __future__ import annotations

import numpy as np

_LENGTH_DELIMITED = 2


def varint(value: int) -> bytes:
    """One unsigned integer as a protobuf varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def packed_field(number: int, payload: bytes) -> bytes:
    """Field `number` as a length-delimited record holding `payload` (its packed values)."""
    return varint((number << 3) | _LENGTH_DELIMITED) + varint(len(payload)) + payload


def fixed_width_payload(values: np.ndarray, wire_dtype: str) -> bytes:
    """Packed `float`/`double` values: the little-endian bytes themselves."""
    return np.ascontiguousarray(values, dtype=np.dtype(wire_dtype)).tobytes()


def one_byte_varint_payload(values: np.ndarray) -> bytes | None:
    """Packed varint values when every one is a single byte (bools; integers in 0..127),
    else None. Negative integers never are: protobuf writes them as ten bytes."""
    flat = np.ascontiguousarray(values).reshape(-1)
    if flat.dtype == np.bool_:
        return flat.view(np.uint8).tobytes()
    if flat.size and (int(flat.min()) < 0 or int(flat.max()) > 0x7F):
        return None
    return flat.astype(np.uint8).tobytes()
