"""The V2 codec: JSON and binary tensor data to numpy and back, and its refusals."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from ferry.codecs.v2 import (
    array_from_raw,
    array_from_values,
    check_against,
    config_datatype,
    decode_rest_request,
    encode_rest_response,
    raw_bytes,
    v2_datatype,
)
from ferry.errors import InvalidArgument
from ferry.tensors import Signature, TensorSpec


def binary_body(header: dict, *chunks: bytes) -> tuple[bytes, int]:
    json_part = orjson.dumps(header)
    return json_part + b"".join(chunks), len(json_part)


def test_nested_and_flat_json_data_give_the_same_array() -> None:
    nested = array_from_values("x", "FP32", (2, 2), [[1, 2], [3, 4]])
    flat = array_from_values("x", "FP32", (2, 2), [1, 2, 3, 4])

    assert nested.dtype == np.float32
    np.testing.assert_array_equal(nested, flat)
    np.testing.assert_array_equal(nested, [[1, 2], [3, 4]])


def test_json_element_count_must_match_the_shape() -> None:
    with pytest.raises(InvalidArgument, match="has 3 elements in 'data' but shape \\[2, 2\\]"):
        array_from_values("x", "FP32", (2, 2), [1, 2, 3])


def test_json_refuses_strings_for_numbers_and_fractions_for_integers() -> None:
    with pytest.raises(InvalidArgument, match="must hold FP32 numbers"):
        array_from_values("x", "FP32", (1,), ["a"])
    with pytest.raises(InvalidArgument, match="non-integer"):
        array_from_values("ids", "INT64", (1,), [1.5])
    with pytest.raises(InvalidArgument, match="Unsupported datatype 'FLOAT'"):
        array_from_values("x", "FLOAT", (1,), [1])


def test_json_bytes_become_utf8_bytes_objects() -> None:
    array = array_from_values("t", "BYTES", (2,), ["hé", "b"])

    assert array.dtype == object
    assert list(array) == ["hé".encode(), b"b"]


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([[1, -2]], dtype=np.int64),
        np.array([1, 2], dtype=np.uint16),
        np.array([0.5, 1.5], dtype=np.float16),
        np.array([True, False, True]),
        np.array([b"", b"abc", "é".encode()], dtype=object),
    ],
    ids=lambda a: str(a.dtype),
)
def test_binary_round_trip(array: np.ndarray) -> None:
    datatype = v2_datatype(array.dtype)

    decoded = array_from_raw("t", datatype, array.shape, raw_bytes(array))

    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


def test_binary_layout_is_little_endian_and_bytes_are_length_prefixed() -> None:
    assert raw_bytes(np.array([1], dtype=np.int32)) == b"\x01\x00\x00\x00"
    assert raw_bytes(np.array([True, False])) == b"\x01\x00"
    assert raw_bytes(np.array([b"ab", b""], dtype=object)) == (
        struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)
    )


def test_binary_size_must_fit_the_shape() -> None:
    with pytest.raises(InvalidArgument) as error:
        array_from_raw("x", "FP32", (2, 2), b"\x00" * 12, None, "m", "r1")
    assert error.value.message == (  # Triton's words
        "[request id: r1] input byte size mismatch for input 'x' for model 'm'. Expected 16, got 12"
    )
    with pytest.raises(InvalidArgument, match="claims 9 bytes"):
        array_from_raw("t", "BYTES", (1,), struct.pack("<I", 9) + b"abc")
    with pytest.raises(InvalidArgument, match="beyond its 1 elements"):
        array_from_raw("t", "BYTES", (1,), struct.pack("<I", 1) + b"ab")


def test_rest_request_with_binary_and_json_inputs() -> None:
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    body, length = binary_body(
        {
            "id": "req-1",
            "inputs": [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [2, 2],
                    "parameters": {"binary_data_size": 16},
                },
                {"name": "b", "datatype": "FP32", "shape": [2, 2], "data": [1, 1, 1, 1]},
            ],
            "outputs": [{"name": "sum", "parameters": {"binary_data": True}}, {"name": "prod"}],
        },
        x.tobytes(),
    )

    request = decode_rest_request(body, length)

    np.testing.assert_array_equal(request.inputs["a"], x)
    np.testing.assert_array_equal(request.inputs["b"], np.ones((2, 2), dtype=np.float32))
    assert request.id == "req-1"
    assert request.outputs == {"sum": True, "prod": False}


def test_rest_binary_sizes_must_add_up_to_the_binary_part() -> None:
    header = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}
        ]
    }
    too_much, length = binary_body(header, b"\x00" * 8)
    with pytest.raises(InvalidArgument, match=r"^unexpected additional input data for model 'm'$"):
        decode_rest_request(too_much, length, model="m")
    too_little, length = binary_body(header, b"\x00" * 2)
    with pytest.raises(
        InvalidArgument, match=r"^unexpected size for input 'a', expecting 2 additional bytes"
    ):
        decode_rest_request(too_little, length, model="m")
    with pytest.raises(InvalidArgument, match=r"inference header size should be in range \(0, "):
        decode_rest_request(too_little, 999)


def test_rest_request_structure_errors_name_the_problem() -> None:
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        decode_rest_request(b"{", None)
    with pytest.raises(InvalidArgument, match="non-empty 'inputs'"):
        decode_rest_request(b'{"inputs": []}', None)
    with pytest.raises(InvalidArgument, match="needs a 'shape'"):
        decode_rest_request(b'{"inputs": [{"name": "a", "datatype": "FP32", "data": [1]}]}', None)
    with pytest.raises(InvalidArgument, match="neither 'data' nor binary_data_size"):
        decode_rest_request(b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1]}]}', None)


def test_response_is_json_unless_binary_is_asked_for() -> None:
    outputs = {"y": np.array([[1.5, 2.0]], dtype=np.float32)}
    plain = decode_rest_request(
        b'{"id": "7", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}',
        None,
    )

    body, length = encode_rest_response("m", 3, outputs, plain)

    assert length is None
    assert orjson.loads(body) == {
        "model_name": "m",
        "model_version": "3",
        "id": "7",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.0]}],
    }

    binary = decode_rest_request(
        b'{"parameters": {"binary_data_output": true}, '
        b'"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}',
        None,
    )
    body, length = encode_rest_response("m", 3, outputs, binary)

    header = orjson.loads(body[:length])
    assert header["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}
    ]
    np.testing.assert_array_equal(np.frombuffer(body[length:], dtype="<f4"), [1.5, 2.0])


def test_datatype_must_match_the_model() -> None:
    signature = Signature(
        {"x": TensorSpec("x", np.dtype(np.float32), (-1, 2))},
        {"y": TensorSpec("y", np.dtype(np.float32), (-1, 2))},
    )
    # Triton's words (core infer_request.cc / model.cc).
    with pytest.raises(
        InvalidArgument, match="inference input 'x' data-type is 'FP64', but model 'm' expects"
    ):
        check_against(signature, {"x": np.zeros((1, 2), dtype=np.float64)}, "m")
    with pytest.raises(InvalidArgument, match=r"Expected \[-1,2\], got \[1,3\]. NOTE"):
        check_against(signature, {"x": np.zeros((1, 3), dtype=np.float32)}, "m")
    with pytest.raises(InvalidArgument, match="expected 1 inputs but got 0 inputs for model 'm'"):
        check_against(signature, {}, "m")
    with pytest.raises(InvalidArgument, match=r"^unexpected inference input 'z' for model 'm'$"):
        check_against(signature, {"z": np.zeros((1, 2), dtype=np.float32)}, "m")


def test_config_datatypes_are_tritons_names() -> None:
    assert config_datatype(np.dtype(np.float32)) == "TYPE_FP32"
    assert config_datatype(np.dtype(object)) == "TYPE_STRING"
    assert config_datatype(np.dtype(np.bool_)) == "TYPE_BOOL"
