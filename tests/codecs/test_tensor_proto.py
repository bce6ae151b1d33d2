"""TensorProto <-> numpy: every dtype ferry serves, both input forms, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from ferry.codecs.tensor_proto import (
    decode_inputs,
    decode_tensor,
    encode_tensor,
    tensor_proto_class,
)
from ferry.errors import InternalError, InvalidArgument
from ferry.tensors import Signature, TensorSpec

# TF DataType numbers (tensorflow/core/framework/types.proto).
DT = {
    "float32": 1, "float64": 2, "int32": 3, "uint8": 4, "int16": 5, "int8": 6, "object": 7,
    "int64": 9, "bool": 10, "uint16": 17, "float16": 19, "uint32": 22, "uint64": 23,
}  # fmt: skip
NUMERIC = [d for d in DT if d != "object"]


def proto(dtype: int, shape: list[int], **fields):
    message = tensor_proto_class()(dtype=dtype, **fields)
    for size in shape:
        message.tensor_shape.dim.add(size=size)
    return message


def sample(dtype: str) -> np.ndarray:
    if dtype == "bool":
        return np.array([[True, False, True], [False, False, True]])
    info = np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.iinfo(dtype)
    return np.array([[info.min, 0, 1], [2, 3, info.max]], dtype=dtype)


@pytest.mark.parametrize("dtype", NUMERIC)
def test_numeric_arrays_round_trip_through_tensor_content(dtype: str) -> None:
    array = sample(dtype)

    encoded = encode_tensor(array, "x", tensor_content=True)
    decoded = decode_tensor(type(encoded).FromString(encoded.SerializeToString()), "x")

    assert encoded.dtype == DT[dtype]
    assert encoded.tensor_content == array.astype(array.dtype.newbyteorder("<")).tobytes()
    assert [d.size for d in encoded.tensor_shape.dim] == [2, 3]
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


@pytest.mark.parametrize("dtype", NUMERIC)
def test_outputs_are_written_in_tf_servings_typed_field_by_default(dtype: str) -> None:
    """Byte for byte what protobuf writes when the field is filled value by value, which
    is what TF Serving's `Tensor::AsProtoField` produces."""
    array = sample(dtype)
    expected = proto(DT[dtype], [2, 3], **_values(dtype, array))

    encoded = encode_tensor(array, "x")

    assert not encoded.tensor_content
    assert encoded.SerializeToString() == expected.SerializeToString()
    np.testing.assert_array_equal(decode_tensor(encoded, "x"), array)


def test_typed_fields_hold_negative_and_64_bit_extremes() -> None:
    values = np.array([-(2**63), -1, 0, 127, 128, 2**63 - 1], dtype=np.int64)
    halves = np.array([-0.0, 65504.0, np.inf], dtype=np.float16)

    assert list(encode_tensor(values, "x").int64_val) == values.tolist()
    assert list(encode_tensor(np.array([-128, 127], np.int8), "x").int_val) == [-128, 127]
    assert list(encode_tensor(halves, "x").half_val) == halves.view(np.uint16).tolist()
    assert list(encode_tensor(np.array([[True], [False]]), "x").bool_val) == [True, False]


def test_empty_and_scalar_outputs_in_typed_fields() -> None:
    empty = encode_tensor(np.zeros((0, 4), np.float32), "e")
    scalar = encode_tensor(np.float64(2.5), "s")

    assert [d.size for d in empty.tensor_shape.dim] == [0, 4] and len(empty.float_val) == 0
    assert list(scalar.double_val) == [2.5] and scalar.tensor_shape.dim == []


def test_strings_in_tensor_content_form_are_tensorflows_string_list() -> None:
    """TF's encoding: every length as a varint, then the bytes; read back as TF does."""
    strings = np.array([b"ab", b"", b"x" * 200], dtype=object)

    encoded = encode_tensor(strings, "s", tensor_content=True)

    assert encoded.tensor_content == b"\x02\x00\xc8\x01" + b"ab" + b"x" * 200
    assert not encoded.string_val
    assert decode_tensor(encoded, "s").tolist() == strings.tolist()


def _values(dtype: str, array: np.ndarray) -> dict:
    """The typed field TF clients fill for `dtype` (what tf.make_tensor_proto writes)."""
    flat = array.reshape(-1)
    if dtype == "float16":
        return {"half_val": flat.view(np.uint16).astype(int).tolist()}
    field = {
        "float32": "float_val", "float64": "double_val", "int64": "int64_val",
        "bool": "bool_val", "uint32": "uint32_val", "uint64": "uint64_val",
    }.get(dtype, "int_val")  # fmt: skip
    return {field: flat.tolist()}


@pytest.mark.parametrize("dtype", NUMERIC)
def test_numeric_arrays_decode_from_their_typed_value_field(dtype: str) -> None:
    array = sample(dtype)

    decoded = decode_tensor(proto(DT[dtype], [2, 3], **_values(dtype, array)), "x")

    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


def test_half_values_are_bit_patterns() -> None:
    bits = np.array([1.5, -2.0, 65504.0], dtype=np.float16).view(np.uint16)

    decoded = decode_tensor(proto(19, [3], half_val=bits.astype(int).tolist()), "h")

    assert decoded.tolist() == [1.5, -2.0, 65504.0]


def test_a_single_value_fills_the_whole_shape() -> None:
    decoded = decode_tensor(proto(1, [2, 3], float_val=[0.5]), "x")

    assert decoded.shape == (2, 3)
    assert (decoded == 0.5).all()


def test_strings_decode_from_string_val_as_bytes_and_encode_back() -> None:
    decoded = decode_tensor(proto(7, [2], string_val=[b"a\xff", b"bc"]), "s")
    encoded = encode_tensor(np.array(["é", b"x"], dtype=object), "s")

    assert decoded.dtype == object and decoded.tolist() == [b"a\xff", b"bc"]
    assert encoded.dtype == 7 and list(encoded.string_val) == ["é".encode(), b"x"]
    assert not encoded.tensor_content


def test_scalars_and_empty_tensors() -> None:
    assert decode_tensor(proto(9, [], int64_val=[7]), "s").tolist() == 7
    assert decode_tensor(proto(1, [0, 4]), "e").shape == (0, 4)
    assert encode_tensor(np.float32(3.0), "s").tensor_shape.dim == []


@pytest.mark.parametrize(
    ("message", "expected", "error"),
    [
        (
            lambda: proto(1, [2, 2], float_val=[1.0, 2.0, 3.0]),
            None,
            "Input 'x': DT_FLOAT tensor of shape [2, 2] needs 4 values (or 1 to fill it) in "
            "float_val or tensor_content; found 3",
        ),
        (lambda: proto(1, [2, 2], int_val=[1, 2, 3, 4]), None, "found 0"),
        (
            lambda: proto(1, [2], tensor_content=b"\x00" * 7),
            None,
            "Input 'x': tensor_content has 7 bytes but shape [2] of DT_FLOAT needs 8",
        ),
        (lambda: proto(0, [1], float_val=[1.0]), None, "Input 'x': dtype is not set"),
        (
            lambda: proto(14, [1], half_val=[1]),
            None,
            "Input 'x' has unsupported data type DT_BFLOAT16",
        ),
        (lambda: proto(77, [1]), None, "Input 'x' has unsupported data type DataType 77"),
        (
            lambda: proto(2, [1], double_val=[1.0]),
            np.dtype(np.float32),
            "Input 'x' has dtype DT_DOUBLE but the model expects DT_FLOAT",
        ),
        (
            lambda: proto(6, [1], int_val=[300]),
            None,
            "Input 'x': a value in int_val is out of range for DT_INT8",
        ),
        (lambda: proto(19, [1], half_val=[70000]), None, "16-bit patterns"),
        (lambda: proto(7, [1], tensor_content=b"ab"), None, "is not a list of 1 strings"),
        (lambda: proto(7, [3], tensor_content=b"\x00\x00"), None, "not a list of 3 strings"),
        (lambda: proto(7, [1], tensor_content=b"\xff" * 6), None, "not a list of 1 strings"),
        (lambda: proto(1, [-1], float_val=[1.0]), None, "negative dimension"),
    ],
)
def test_malformed_tensors_are_invalid_arguments_naming_the_input(message, expected, error) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_tensor(message(), "x", expected)

    assert error in caught.value.message


def test_decode_inputs_checks_names_dtypes_and_shapes_against_the_signature() -> None:
    signature = Signature(
        inputs={"x": TensorSpec("x", np.dtype(np.float32), (-1, 2))},
        outputs={"y": TensorSpec("y", np.dtype(np.float32), (-1, 2))},
    )
    good = {"x": encode_tensor(np.ones((3, 2), np.float32), "x")}

    assert decode_inputs(good, signature)["x"].shape == (3, 2)
    with pytest.raises(InvalidArgument) as renamed:
        decode_inputs({"z": good["x"]}, signature)
    with pytest.raises(InvalidArgument) as missing:
        decode_inputs({}, signature)
    with pytest.raises(InvalidArgument) as extra:
        decode_inputs({"x": good["x"], "z": good["x"]}, signature)
    with pytest.raises(InvalidArgument, match=r"Input 'x' has shape \[3, 3\]"):
        decode_inputs({"x": encode_tensor(np.ones((3, 3), np.float32), "x")}, signature)

    # TF Serving's words: its count check (predict_util.cc), then TF's per-alias check.
    assert renamed.value.message == (
        "Signature input alias: x(feed name: x) not found in request and no default value "
        "provided. Inputs expected to be in the request {z}, or default input alias set: "
    )
    assert missing.value.message == (
        "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. "
        "Missing but required: {x}."
    )
    assert extra.value.message == (
        "input size does not match signature: 2!=1 len({x,z}) != len({x}). Sent extra: {z}. "
        "Missing but required: {}."
    )


def test_outputs_of_a_dtype_tf_lacks_are_an_internal_error() -> None:
    with pytest.raises(InternalError, match="complex64"):
        encode_tensor(np.ones(2, np.complex64), "c")
