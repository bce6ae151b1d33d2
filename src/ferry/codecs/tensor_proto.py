"""TensorFlow's TensorProto: the tensor of TF Serving's gRPC API, to numpy and back.

Inputs are accepted in every form TF clients send: raw bytes in `tensor_content`
(what `tf.make_tensor_proto` writes for numeric arrays; for DT_STRING, TensorFlow's
length-prefixed string list) or the typed `*_val` field of the dtype, where a single
value stands for a tensor filled with it. Outputs are written as TF Serving writes them
(`Tensor::AsProtoField`): in the dtype's typed field, which TF Serving's own clients
read (`mnist_client.py` reads `.float_val`); or, with TF Serving's
`--enable_serialization_as_tensor_content`, as `tensor_content` (`AsProtoTensorContent`,
strings included). Every error is an InvalidArgument that names the tensor, so a client
learns which of its inputs was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

import numpy as np
from google.protobuf.message import Message

from ferry import tfserving_messages
from ferry.codecs.aligned import aligned
from ferry.codecs.packed_fields import (
    fixed_width_payload,
    one_byte_varint_payload,
    packed_field,
    varint,
)
from ferry.errors import InternalError, InvalidArgument
from ferry.protos import message_class, pool
from ferry.tensor_limits import TensorBudget, checked_dims, unlimited
from ferry.tensors import STRING_DTYPE, Signature, numpy_dtype, tf_dtype_name

# The `*_val` field that holds values of each dtype ferry serves (TF's choice of field:
# the small integer types share int_val, DT_HALF travels as bit patterns in half_val).
_VALUE_FIELD: dict[np.dtype, str] = {
    np.dtype(np.float32): "float_val",
    np.dtype(np.float64): "double_val",
    np.dtype(np.float16): "half_val",
    np.dtype(np.int8): "int_val",
    np.dtype(np.int16): "int_val",
    np.dtype(np.int32): "int_val",
    np.dtype(np.uint8): "int_val",
    np.dtype(np.uint16): "int_val",
    np.dtype(np.int64): "int64_val",
    np.dtype(np.uint32): "uint32_val",
    np.dtype(np.uint64): "uint64_val",
    np.dtype(np.bool_): "bool_val",
    STRING_DTYPE: "string_val",
}
# How each value field's numbers arrive before conversion to the tensor's dtype.
_FIELD_DTYPE: dict[str, np.dtype] = {
    "float_val": np.dtype(np.float32),
    "double_val": np.dtype(np.float64),
    "half_val": np.dtype(np.int32),
    "int_val": np.dtype(np.int32),
    "int64_val": np.dtype(np.int64),
    "uint32_val": np.dtype(np.uint32),
    "uint64_val": np.dtype(np.uint64),
    "bool_val": np.dtype(np.bool_),
}


def tensor_proto_class() -> type[Message]:
    """`tensorflow.TensorProto` from ferry's private descriptor pool."""
    return message_class("tensorflow.TensorProto")


@cache
def _enum_names() -> dict[int, str]:
    enum = pool().FindEnumTypeByName("tensorflow.DataType")
    return {value.number: value.name for value in enum.values}


@cache
def _enum_numbers() -> dict[str, int]:
    return {name: number for number, name in _enum_names().items()}


def dtype_enum(dtype: np.dtype) -> int:
    """The `tensorflow.DataType` number of a numpy dtype (0, DT_INVALID, when TF has none)."""
    return _enum_numbers().get(tf_dtype_name(dtype), 0)


def numpy_dtype_of(enum_value: int, name: str) -> np.dtype:
    """The numpy dtype for a `tensorflow.DataType` number; InvalidArgument naming the tensor
    when ferry does not serve that type."""
    tf_name = _enum_names().get(enum_value, f"DataType {enum_value}")
    if enum_value == 0:
        raise InvalidArgument(f"Input '{name}': dtype is not set (DT_INVALID)")
    try:
        return numpy_dtype(tf_name)
    except InvalidArgument:
        raise InvalidArgument(f"Input '{name}' has unsupported data type {tf_name}") from None


def decode_tensor(
    proto: Message,
    name: str,
    expected: np.dtype | None = None,
    budget: TensorBudget | None = None,
) -> np.ndarray:
    """A TensorProto as a numpy array (object array of bytes for DT_STRING).

    `expected` is the signature's dtype: a tensor of another dtype is refused rather than
    converted, as TF Serving does. The tensor is charged to `budget` (None: no byte
    limit) before it is built, so a one-value fill cannot outgrow the request's
    `--max_tensor_bytes`. The array may be a read-only view of the message's bytes;
    callers must not write to it.
    """
    dtype = numpy_dtype_of(proto.dtype, name)
    if expected is not None and dtype != expected:
        raise InvalidArgument(
            f"Input '{name}' has dtype {tf_dtype_name(dtype)} but the model expects "
            f"{tf_dtype_name(expected)}"
        )
    shape = _shape_of(proto, name)
    size = (budget if budget is not None else unlimited()).admit(name, shape, dtype.itemsize)
    if proto.tensor_content:
        return aligned(_from_content(proto.tensor_content, dtype, shape, size, name))
    return aligned(_from_values(proto, dtype, shape, size, name))


def _shape_of(proto: Message, name: str) -> tuple[int, ...]:
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise InvalidArgument(f"Input '{name}': a tensor's shape must be known (unknown_rank)")
    return checked_dims([dim.size for dim in shape.dim], name)


def _from_content(
    content: bytes, dtype: np.dtype, shape: tuple[int, ...], size: int, name: str
) -> np.ndarray:
    if dtype == STRING_DTYPE:
        return _strings_from_content(content, shape, size, name)
    expected_bytes = size * dtype.itemsize
    if len(content) != expected_bytes:
        raise InvalidArgument(
            f"Input '{name}': tensor_content has {len(content)} bytes but shape "
            f"{list(shape)} of {tf_dtype_name(dtype)} needs {expected_bytes}"
        )
    # The wire format is little-endian; on a little-endian host this is a zero-copy view.
    array = np.frombuffer(content, dtype=dtype.newbyteorder("<")).reshape(shape)
    return array if array.dtype == dtype else array.astype(dtype)


def _strings_from_content(
    content: bytes, shape: tuple[int, ...], size: int, name: str
) -> np.ndarray:
    """A DT_STRING tensor from TensorFlow's string list (`size` varint lengths, then the
    bytes), as TF Serving reads it. Every string costs at least one byte, so a shape larger
    than the content is refused before any work. The lengths are read by numpy, a million
    at a time: a Python loop took 1.2 s for 4 M strings (string_val: 0.2 s)."""
    invalid = InvalidArgument(
        f"Input '{name}': tensor_content is not a list of {size} strings (DT_STRING)"
    )
    if size > len(content):
        raise invalid
    read = _string_lengths(np.frombuffer(content, dtype=np.uint8), size)
    if read is None:
        raise invalid
    lengths, start = read
    if start + int(lengths.sum(dtype=np.int64)) != len(content):
        raise invalid
    flat = np.empty(size, dtype=object)
    for first in range(0, size, _STRING_CHUNK):
        stops = start + np.cumsum(lengths[first : first + _STRING_CHUNK], dtype=np.int64)
        begins = np.concatenate(([start], stops[:-1])).tolist()
        flat[first : first + len(stops)] = [
            content[begin:stop] for begin, stop in zip(begins, stops.tolist(), strict=True)
        ]
        start = int(stops[-1])
    return flat.reshape(shape)


# Strings decoded per numpy step: bounds the temporaries (about 100 MB at worst).
_STRING_CHUNK = 1 << 20
_VARINT32_BYTES = 5


def _string_lengths(raw: np.ndarray, size: int) -> tuple[np.ndarray, int] | None:
    """The first `size` varint32 values of `raw` and the bytes they take (None when `raw`
    does not start with that many)."""
    lengths = np.empty(size, dtype=np.int64)
    position = 0
    for first in range(0, size, _STRING_CHUNK):
        count = min(_STRING_CHUNK, size - first)
        window = raw[position : position + count * _VARINT32_BYTES]
        ends = np.flatnonzero(window < 0x80)[:count]  # the last byte of each varint
        if ends.size < count:
            return None
        starts = np.concatenate(([0], ends[:-1] + 1))
        widths = ends - starts + 1
        if int(widths.max()) == 1:  # every length below 128: the bytes are the lengths
            lengths[first : first + count] = window[:count]
        else:
            if int(widths.max()) > _VARINT32_BYTES:
                return None
            span = int(ends[-1]) + 1
            owner = np.repeat(np.arange(count), widths)
            shifts = 7 * (np.arange(span) - np.repeat(starts, widths))
            groups = (window[:span].astype(np.int64) & 0x7F) << shifts
            values = np.bincount(owner, weights=groups, minlength=count)  # exact: < 2**53
            if values.max() > 2**31 - 1:
                return None
            lengths[first : first + count] = values
        position += int(ends[-1]) + 1
    return lengths, position


def _from_values(
    proto: Message, dtype: np.dtype, shape: tuple[int, ...], size: int, name: str
) -> np.ndarray:
    field = _VALUE_FIELD[dtype]
    values = getattr(proto, field)
    count = len(values)
    if count != size and not (count == 1 and size > 0):
        raise InvalidArgument(
            f"Input '{name}': {tf_dtype_name(dtype)} tensor of shape {list(shape)} needs "
            f"{size} values (or 1 to fill it) in {field} or tensor_content; found {count}"
        )
    if dtype == STRING_DTYPE:
        flat = np.empty(count, dtype=object)
        flat[:] = list(values)
    else:
        flat = _numbers(values, field, dtype, name)
    if count == 1 and size != 1:
        return np.full(shape, flat[0], dtype=dtype)
    return flat.reshape(shape)


def _numbers(values, field: str, dtype: np.dtype, name: str) -> np.ndarray:
    raw = np.array(values, dtype=_FIELD_DTYPE[field])
    if field == "half_val":
        # Each int32 holds the 16 bits of one IEEE half-precision value.
        if raw.size and (raw.min() < 0 or raw.max() > 0xFFFF):
            raise InvalidArgument(f"Input '{name}': half_val entries must be 16-bit patterns")
        return raw.astype(np.uint16).view(np.float16)
    if raw.dtype != dtype and raw.size:
        limits = np.iinfo(dtype)
        if raw.min() < limits.min or raw.max() > limits.max:
            raise InvalidArgument(
                f"Input '{name}': a value in {field} is out of range for {tf_dtype_name(dtype)}"
            )
    return raw.astype(dtype, copy=False)


def decode_inputs(
    tensors: Mapping[str, Message], signature: Signature, budget: TensorBudget | None = None
) -> dict[str, np.ndarray]:
    """Decode a request's input map against a signature and check it (names first, in
    TF Serving's words; then dtypes and shapes), each tensor charged to `budget` (None:
    no byte limit) before it is built."""
    if tensors.keys() != signature.inputs.keys():  # the alias table only for the error
        mismatch = tfserving_messages.input_names_mismatch(
            tensors.keys(),
            {alias: spec.reported_name for alias, spec in signature.inputs.items()},
        )
        if mismatch is not None:
            raise mismatch
    inputs = {
        name: decode_tensor(proto, name, signature.inputs[name].dtype, budget)
        for name, proto in tensors.items()
    }
    signature.check_inputs(inputs)
    return inputs


def encode_tensor(
    array: np.ndarray, name: str, into: Message | None = None, *, tensor_content: bool = False
) -> Message:
    """Write `array` into a TensorProto (`into`, or a new one) as TF Serving does.

    By default in the dtype's typed field (`_VALUE_FIELD`: float_val, int_val for the
    small integer types, half_val as bit patterns, string_val, ...). With
    `tensor_content`, numbers as their little-endian bytes and strings as TensorFlow's
    string list (every length as a varint, then the bytes), TF Serving's
    `--enable_serialization_as_tensor_content` form. Raises InternalError for a dtype TF
    has no type for."""
    proto = into if into is not None else tensor_proto_class()()
    array = np.asarray(array)
    is_text = array.dtype == STRING_DTYPE or array.dtype.kind in "SU"
    enum_value = _enum_numbers()["DT_STRING"] if is_text else dtype_enum(array.dtype)
    if enum_value == 0:
        raise InternalError(f"Output '{name}' has dtype {array.dtype}, which TF cannot carry")
    proto.dtype = enum_value
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if is_text:
        strings = [
            item.encode() if isinstance(item, str) else bytes(item) for item in array.reshape(-1)
        ]
        if tensor_content:
            proto.tensor_content = _string_list(strings)
        else:
            proto.string_val.extend(strings)
    elif tensor_content:
        little = array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)
        proto.tensor_content = little.tobytes()
    elif array.size:
        _fill_typed_field(proto, array)
    return proto


def _fill_typed_field(proto: Message, array: np.ndarray) -> None:
    """Put `array`'s values in its dtype's `*_val` field, the fastest way measured
    (ferry.codecs.packed_fields): a packed field built by numpy and parsed by protobuf
    where it can be, protobuf's `extend` from a list otherwise."""
    field = _VALUE_FIELD[array.dtype]
    if field == "float_val":
        payload: bytes | None = fixed_width_payload(array, "<f4")
    elif field == "double_val":
        payload = fixed_width_payload(array, "<f8")
    else:
        values = array.astype("<f2", copy=False).view("<u2") if field == "half_val" else array
        payload = one_byte_varint_payload(values)
        if payload is None:
            getattr(proto, field).extend(values.reshape(-1).tolist())
            return
    proto.MergeFromString(packed_field(_field_number(field), payload))


@cache
def _field_number(field: str) -> int:
    return tensor_proto_class().DESCRIPTOR.fields_by_name[field].number


def _string_list(strings: list[bytes]) -> bytes:
    """TensorFlow's encoding of a DT_STRING tensor in tensor_content."""
    return b"".join([varint(len(item)) for item in strings] + strings)
