"""Tensor conversion and signature checks: what a request must look like before it is queued.

Every refusal is an InvalidArgument whose message names the offending input, so a client
can tell which tensor to fix.
"""

from __future__ import annotations

import numpy as np
import pytest

from ferry.errors import InvalidArgument, StatusCode
from ferry.tensors import (
    STRING_DTYPE,
    Signature,
    TensorSpec,
    convert_array,
    numpy_dtype,
    tf_dtype_name,
)

FLOAT = np.dtype(np.float32)
INT = np.dtype(np.int32)
BOOL = np.dtype(np.bool_)


# -- convert_array: accepted values -----------------------------------------------------


def test_nested_numbers_become_an_array_of_the_requested_dtype() -> None:
    array = convert_array([[1, 2.5], [3, -4]], FLOAT, "x")

    assert array.dtype == FLOAT
    np.testing.assert_array_equal(array, np.array([[1, 2.5], [3, -4]], dtype=np.float32))


def test_whole_floats_are_accepted_for_integer_inputs() -> None:
    array = convert_array([1.0, -2.0, 3], INT, "ids")

    assert array.dtype == INT
    np.testing.assert_array_equal(array, np.array([1, -2, 3], dtype=np.int32))


def test_true_and_false_are_accepted_for_bool_inputs() -> None:
    array = convert_array([[True, False]], BOOL, "mask")

    assert array.dtype == BOOL
    np.testing.assert_array_equal(array, np.array([[True, False]]))


def test_strings_become_an_object_array_of_bytes() -> None:
    array = convert_array([["a", b"\x00\xff"], ["\u00e9", ""]], STRING_DTYPE, "text")

    assert array.dtype == STRING_DTYPE
    assert array.shape == (2, 2)
    assert array.tolist() == [[b"a", b"\x00\xff"], ["\u00e9".encode(), b""]]


def test_empty_lists_are_accepted() -> None:
    assert convert_array([], FLOAT, "x").shape == (0,)


# -- convert_array: refusals --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "dtype", "message"),
    [
        ([[1, 2], [3]], FLOAT, "ragged"),
        ([[1, 2], 3], FLOAT, "ragged"),
        (["a", "b"], FLOAT, "holds strings but the model expects DT_FLOAT"),
        ([1, "2"], FLOAT, "holds strings"),
        ([1.5, 2], INT, "non-integer numbers but the model expects DT_INT32"),
        ([float("nan")], INT, "non-integer"),
        ([float("inf")], np.dtype(np.int64), "non-integer"),
        ([1, 0], BOOL, "must hold true/false values"),
        ([0.5], BOOL, "must hold true/false values"),
        ([True, False], FLOAT, "true/false values but the model expects DT_FLOAT"),
        ([[True], [False]], INT, "true/false values but the model expects DT_INT32"),
        ([1, 2], STRING_DTYPE, "must hold strings"),
        ([["a"], ["b", "c"]], STRING_DTYPE, "ragged|found list"),
    ],
    ids=[
        "ragged-rows",
        "list-and-scalar",
        "strings-for-float",
        "mixed-string",
        "fraction-for-int",
        "nan-for-int",
        "inf-for-int",
        "numbers-for-bool",
        "fraction-for-bool",
        "bools-for-float",
        "bools-for-int",
        "numbers-for-string",
        "ragged-strings",
    ],
)
def test_convert_array_refuses_values_that_do_not_fit(
    value: object, dtype: np.dtype, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        convert_array(value, dtype, "the_input")

    assert "'the_input'" in caught.value.message
    assert caught.value.code is StatusCode.INVALID_ARGUMENT


# -- Signature.check_inputs ---------------------------------------------------------------


@pytest.fixture
def signature() -> Signature:
    return Signature(
        inputs={
            "image": TensorSpec("image", FLOAT, (-1, 2, 3)),
            "ids": TensorSpec("ids", INT, (-1,)),
            "anything": TensorSpec("anything", FLOAT, None),
        },
        outputs={"scores": TensorSpec("scores", FLOAT, (-1, 10))},
    )


def good_inputs() -> dict[str, np.ndarray]:
    return {
        "image": np.zeros((4, 2, 3), np.float32),
        "ids": np.zeros(4, np.int32),
        "anything": np.zeros((7, 1, 1, 1), np.float32),
    }


def test_well_shaped_inputs_pass_whatever_the_batch_size(signature: Signature) -> None:
    signature.check_inputs(good_inputs())
    signature.check_inputs({**good_inputs(), "image": np.zeros((1, 2, 3), np.float32)})


def test_an_input_with_the_wrong_rank_is_refused(signature: Signature) -> None:
    inputs = {**good_inputs(), "image": np.zeros((4, 6), np.float32)}

    with pytest.raises(InvalidArgument, match=r"'image' has rank 2 .* expects rank 3"):
        signature.check_inputs(inputs)


def test_an_input_with_a_wrong_fixed_dimension_is_refused(signature: Signature) -> None:
    inputs = {**good_inputs(), "image": np.zeros((4, 2, 4), np.float32)}

    with pytest.raises(
        InvalidArgument, match=r"'image' has shape \[4, 2, 4\].*dimension 2 must be 3"
    ):
        signature.check_inputs(inputs)


def test_a_missing_input_is_named(signature: Signature) -> None:
    inputs = good_inputs()
    del inputs["ids"]

    with pytest.raises(InvalidArgument, match=r"Missing input\(s\) \['ids'\]"):
        signature.check_inputs(inputs)


def test_an_unknown_input_is_named(signature: Signature) -> None:
    inputs = {**good_inputs(), "extra": np.zeros(4, np.float32)}

    with pytest.raises(InvalidArgument, match=r"Unknown input\(s\) \['extra'\]"):
        signature.check_inputs(inputs)


def test_a_signature_is_batchable_only_when_every_tensor_has_a_free_dimension_0() -> None:
    batch_major = TensorSpec("x", FLOAT, (-1, 3))

    assert Signature({"x": batch_major}, {"y": batch_major}).batchable
    assert not Signature({"x": TensorSpec("x", FLOAT, (2, 3))}, {"y": batch_major}).batchable
    assert not Signature({"x": batch_major}, {"y": TensorSpec("y", FLOAT, ())}).batchable
    assert not Signature({"x": TensorSpec("x", FLOAT, None)}, {"y": batch_major}).batchable


# -- dtype names ---------------------------------------------------------------------------


def test_tf_dtype_names_round_trip() -> None:
    for dtype in (np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_, object):
        assert numpy_dtype(tf_dtype_name(np.dtype(dtype))) == np.dtype(dtype)
    assert tf_dtype_name(np.dtype(np.float32)) == "DT_FLOAT"
    assert tf_dtype_name(np.dtype(np.complex64)) == "DT_INVALID"


def test_an_unknown_tf_dtype_name_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="DT_RESOURCE"):
        numpy_dtype("DT_RESOURCE")
