"""Every codec sizes a tensor from its shape before it exists (ferry.tensor_limits), and
request JSON is read by one bounded parser (ferry.codecs.json_parser)."""

from __future__ import annotations

import json
import struct
import time

import numpy as np
import pytest

from ferry.codecs.json_parser import parse_json
from ferry.codecs.tensor_proto import decode_inputs, decode_tensor, tensor_proto_class
from ferry.codecs.tf_example import examples_from_input, examples_from_json
from ferry.codecs.tfserving_json import PredictBody, decode_predict_body, dumps
from ferry.codecs.v2 import array_from_raw, array_from_values, decode_rest_request
from ferry.errors import InvalidArgument
from ferry.protos import message_class
from ferry.tensor_limits import (
    MAX_RANK,
    TENSOR_BYTES_PER_REQUEST_BYTE,
    RequestLimits,
    TensorBudget,
)
from ferry.tensors import STRING_DTYPE, Signature, TensorSpec

KIB = 1024


def signatures(dtype=np.float32, width: int = 4, names=("x",)) -> dict[str, Signature]:
    spec = {n: TensorSpec(n, np.dtype(dtype), (-1, width)) for n in names}
    return {"serving_default": Signature(spec, {"y": TensorSpec("y", np.dtype(dtype), (-1,))})}


def tensor(dtype: int, shape: list[int], **fields):
    message = tensor_proto_class()(dtype=dtype, **fields)
    for size in shape:
        message.tensor_shape.dim.add(size=size)
    return message


# -- the budget itself ---------------------------------------------------------------------


def test_the_default_tensor_limit_is_four_times_the_request_limit() -> None:
    assert RequestLimits(1000).max_tensor_bytes == TENSOR_BYTES_PER_REQUEST_BYTE * 1000 == 4000
    assert RequestLimits(1000, 123).max_tensor_bytes == 123


def test_a_tensor_is_sized_with_python_ints_so_no_product_overflows() -> None:
    budget = TensorBudget(KIB)
    with pytest.raises(InvalidArgument, match=rf"would take {(2**62 + 1) * 784 * 4} bytes"):
        budget.admit("x", [2**62 + 1, 784], 4)
    assert budget.spent == 0


def test_admit_returns_the_element_count_and_charges_the_bytes() -> None:
    budget = TensorBudget(KIB)
    assert budget.admit("x", [2, 3], 4) == 6
    assert budget.spent == 24


def test_a_tensor_exactly_at_the_limit_passes_and_one_byte_more_does_not() -> None:
    assert TensorBudget(16).admit("x", [4], 4) == 4
    with pytest.raises(InvalidArgument, match=r"Input 'x' of shape \[5\] would take 20 bytes"):
        TensorBudget(16).admit("x", [5], 4)


def test_the_request_total_is_bounded_too() -> None:
    budget = TensorBudget(100)
    budget.admit("a", [15], 4)
    with pytest.raises(InvalidArgument, match=r"inputs would take 120 bytes decoded together"):
        budget.admit("b", [15], 4)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([1] * (MAX_RANK + 1), "65 dimensions; a tensor may have at most 64"),
        ([2, -1], r"negative dimension in shape \[2, -1\]"),
        ([0, 2**63], "more than any tensor can have"),
        ([0, 2**62, 2**62], "more than any tensor can have"),
    ],
)
def test_shapes_no_array_can_have_are_refused(shape: list[int], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        TensorBudget(KIB).admit("x", shape, 4)


def test_empty_tensors_of_representable_shapes_pass() -> None:
    assert TensorBudget(KIB).admit("x", [0, 2**40], 4) == 0
    assert TensorBudget(KIB).admit("x", [1] * MAX_RANK, 4) == 1


def test_the_rank_error_does_not_echo_a_huge_shape() -> None:
    with pytest.raises(InvalidArgument) as error:
        TensorBudget(KIB).admit("x", [1] * 1_000_000, 4)
    assert len(error.value.message) < 200


# -- TensorProto ---------------------------------------------------------------------------


def test_a_one_value_fill_is_refused_before_it_is_filled() -> None:
    fill = tensor(1, [2**20, 784], float_val=[0.5])
    started = time.monotonic()
    with pytest.raises(InvalidArgument, match=r"\[1048576, 784\] would take 3288334336 bytes"):
        decode_tensor(fill, "x", budget=RequestLimits().budget())
    assert time.monotonic() - started < 0.1


def test_a_fill_within_the_limit_still_fills() -> None:
    decoded = decode_tensor(tensor(1, [2, 3], float_val=[0.5]), "x", budget=TensorBudget(24))
    assert decoded.tolist() == [[0.5] * 3] * 2


def test_a_string_fill_is_charged_a_reference_per_element() -> None:
    fill = tensor(7, [1000], string_val=[b"a"])
    with pytest.raises(InvalidArgument, match="8000 bytes"):
        decode_tensor(fill, "s", budget=TensorBudget(7999))
    assert decode_tensor(fill, "s", budget=TensorBudget(8000)).shape == (1000,)


def test_tensor_content_with_an_overflowing_shape_is_invalid_not_internal() -> None:
    content = tensor(1, [2**62 + 1, 784], tensor_content=b"\x00" * 4)
    with pytest.raises(InvalidArgument, match="--max_tensor_bytes"):
        decode_tensor(content, "x", budget=RequestLimits().budget())


def test_decode_inputs_bounds_the_sum_over_a_requests_tensors() -> None:
    signature = signatures(width=2, names=("a", "b"))["serving_default"]
    inputs = {name: tensor(1, [4, 2], float_val=[1.0]) for name in ("a", "b")}
    assert decode_inputs(inputs, signature, TensorBudget(64))["b"].shape == (4, 2)
    with pytest.raises(InvalidArgument, match="inputs would take 64 bytes decoded together"):
        decode_inputs(inputs, signature, TensorBudget(63))


# -- V2 --------------------------------------------------------------------------------------


def test_a_bytes_count_beyond_what_the_data_can_hold_is_refused_before_allocating() -> None:
    with pytest.raises(InvalidArgument, match=r"claims 16777216 BYTES elements .* at most 0"):
        array_from_raw("t", "BYTES", (2**24,), b"", RequestLimits().budget())


def test_bytes_elements_are_still_read_when_the_data_holds_them() -> None:
    raw = struct.pack("<I", 1) + b"a" + struct.pack("<I", 0)
    assert array_from_raw("t", "BYTES", (2,), raw, TensorBudget(16)).tolist() == [b"a", b""]


def test_v2_json_and_binary_tensors_share_the_requests_budget() -> None:
    header = json.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [2], "data": [1, 2]},
                {
                    "name": "b",
                    "datatype": "FP32",
                    "shape": [2],
                    "parameters": {"binary_data_size": 8},
                },
            ]
        }
    ).encode()
    body = header + np.ones(2, "<f4").tobytes()
    assert decode_rest_request(body, len(header), TensorBudget(16)).inputs["b"].tolist() == [1, 1]
    with pytest.raises(InvalidArgument, match="together"):
        decode_rest_request(body, len(header), TensorBudget(15))


def test_v2_shapes_beyond_int64_are_refused_as_invalid() -> None:
    with pytest.raises(InvalidArgument, match="more than any tensor can have"):
        array_from_values("x", "FP32", (0, 2**63), [], TensorBudget(KIB))
    with pytest.raises(InvalidArgument, match="would take"):
        array_from_values("x", "FP32", (2**70,), [1.0], TensorBudget(KIB))


# -- TF Serving JSON ---------------------------------------------------------------------------


def test_json_rows_are_charged_at_the_models_dtype() -> None:
    body = {"instances": [[1, 2, 3, 4]] * 4}  # 16 numbers: 128 bytes as float64
    assert decode_predict_body(body, signatures(np.float64), TensorBudget(128)).inputs["x"].size
    with pytest.raises(InvalidArgument, match="128 bytes"):
        decode_predict_body(body, signatures(np.float64), TensorBudget(127))


def test_the_simdjson_rows_path_is_bounded_like_the_general_one() -> None:
    raw = b'{"instances": [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]}'
    assert PredictBody(raw).decode(signatures(), TensorBudget(32)).inputs["x"].shape == (2, 4)
    with pytest.raises(InvalidArgument, match=r"Input 'x' of shape \[2, 4\] would take 32"):
        PredictBody(raw).decode(signatures(), TensorBudget(31))


def test_string_rows_nested_deeper_than_any_rank_are_refused() -> None:
    strings = {
        "serving_default": Signature(
            {"s": TensorSpec("s", STRING_DTYPE, None)}, {"y": TensorSpec("y", STRING_DTYPE, None)}
        )
    }
    body = parse_json(b'{"instances": ' + b"[" * 900 + b'"a"' + b"]" * 900 + b"}")
    with pytest.raises(InvalidArgument, match="nested deeper than 64 levels"):
        decode_predict_body(body, strings, TensorBudget(KIB))


# -- tf.Example ---------------------------------------------------------------------------------


def test_a_large_context_repeated_in_many_examples_is_charged_before_it_is_copied() -> None:
    body = {"context": {"blob": "x" * 10_000}, "examples": [{}] * 1000}
    with pytest.raises(InvalidArgument, match=r"1000 tf\.Examples with the \d+-byte context"):
        examples_from_json(body, TensorBudget(1_000_000))
    assert len(examples_from_json(body, TensorBudget(20_000_000))) == 1000


def test_an_integer_feature_beyond_int64_is_a_bad_request_not_a_500() -> None:
    # Found by tests/codecs/test_codec_fuzz.py.
    with pytest.raises(InvalidArgument, match="does not fit int64"):
        examples_from_json({"examples": [{"f": 2**63}]}, TensorBudget(KIB))


def test_grpc_example_lists_with_context_are_charged_the_same_way() -> None:
    message = message_class("tensorflow.serving.Input")()
    with_context = message.example_list_with_context
    with_context.context.features.feature["blob"].bytes_list.value.append(b"x" * 10_000)
    for _ in range(100):
        with_context.examples.add()
    with pytest.raises(InvalidArgument, match=r"100 tf\.Examples"):
        examples_from_input(message, TensorBudget(100_000))
    assert len(examples_from_input(message, TensorBudget(2_000_000))) == 100


# -- the JSON parser -----------------------------------------------------------------------------


def test_nan_and_infinity_tokens_parse_as_floats() -> None:
    value = parse_json(b'{"instances": [[NaN, Infinity, -Infinity, 1.5, 2]]}')
    row = value["instances"][0]
    assert np.isnan(row[0]) and row[1:4] == [float("inf"), float("-inf"), 1.5]
    assert row[4] == 2 and isinstance(row[4], int)


def test_deep_nesting_is_a_quick_400_with_or_without_nan() -> None:
    deep = b"[" * 1_000_000 + b"]" * 1_000_000
    for body in (deep, b"[NaN, " + deep + b"]"):
        started = time.monotonic()
        with pytest.raises(InvalidArgument, match=r"^JSON Parse error: .*nested too deeply"):
            parse_json(body)
        assert time.monotonic() - started < 0.5


def test_parse_errors_are_worded_as_tf_serving_words_them() -> None:
    with pytest.raises(InvalidArgument, match=r"^JSON Parse error: Invalid value\. at offset: 2$"):
        parse_json(b"[nan]")
    with pytest.raises(
        InvalidArgument,
        match=r"^JSON Parse error: Number too big to be stored in double\. at offset: 6$",
    ):
        parse_json(b"[NaN, 1" + b"0" * 100_000 + b"]")


def test_a_large_body_with_one_nan_parses_in_well_under_a_second() -> None:
    values = np.random.default_rng(0).random((1000, 784))
    values[0, 0] = np.nan
    body = json.dumps({"instances": values.tolist()}).encode()  # about 16 MB
    started = time.monotonic()
    parsed = parse_json(body)
    assert time.monotonic() - started < 0.5
    assert np.isnan(parsed["instances"][0][0]) and parsed["instances"][999][783] == values[999, 783]


# -- writing non-finite outputs ------------------------------------------------------------------


def test_non_finite_outputs_are_written_as_tokens_in_place() -> None:
    array = np.array([[np.nan, 1.0], [np.inf, -np.inf]], dtype=np.float32)
    assert dumps({"outputs": array}) == b'{"outputs":[[NaN,1.0],[Infinity,-Infinity]]}'
    rows = [{"a": np.float32(np.nan), "b": array[1]}]
    assert dumps({"predictions": rows}) == b'{"predictions":[{"a":NaN,"b":[Infinity,-Infinity]}]}'


def test_an_output_named_null_keeps_its_name_when_values_are_non_finite() -> None:
    body = {"outputs": {"null": np.array([np.nan]), "nullable": ["null"]}}
    assert dumps(body) == b'{"outputs":{"null":[NaN],"nullable":["null"]}}'


def test_many_non_finite_outputs_are_written_quickly() -> None:
    array = np.full((3000, 784), np.nan, dtype=np.float32)
    started = time.monotonic()
    encoded = dumps({"predictions": array})
    assert time.monotonic() - started < 1.0
    assert encoded.count(b"NaN") == array.size
