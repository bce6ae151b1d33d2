"""TF Serving's JSON tensor format: request bodies to checked numpy inputs, outputs to bytes.

Request bodies follow TF Serving's REST API: the row format (`instances`) and the columnar
format (`inputs`), `{"b64": ...}` for binary strings, and the NaN/Infinity tokens. Responses
answer row requests with `predictions` and columnar ones with `outputs`.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np
import pytest

from ferry.codecs.tfserving_json import (
    COLUMNAR,
    ROW,
    decode_predict_body,
    encode_predict_response,
    parse_json,
)
from ferry.errors import InvalidArgument
from ferry.tensors import STRING_DTYPE, Signature, TensorSpec

FLOAT = np.dtype(np.float32)
INT = np.dtype(np.int64)


def spec(name: str, dtype: np.dtype, shape: tuple[int, ...]) -> TensorSpec:
    return TensorSpec(name, dtype, shape)


SINGLE = Signature(
    inputs={"x": spec("x", FLOAT, (-1, 3))},
    outputs={"y": spec("y", FLOAT, (-1,))},
)
NAMED = Signature(
    inputs={
        "image": spec("image", FLOAT, (-1, 2)),
        "label": spec("label", STRING_DTYPE, (-1,)),
        "count": spec("count", INT, (-1,)),
    },
    outputs={"y": spec("y", FLOAT, (-1,))},
)
TEXT = Signature(
    inputs={"text": spec("text", STRING_DTYPE, (-1,))},
    outputs={"y": spec("y", FLOAT, (-1,))},
)
SIGNATURES = {"serving_default": SINGLE, "named": NAMED, "text": TEXT}


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode("ascii")}


def decode(body: dict[str, Any], signature_name: str | None = None) -> Any:
    if signature_name is not None:
        body = {"signature_name": signature_name, **body}
    return decode_predict_body(body, SIGNATURES)


# -- row format ----------------------------------------------------------------------------


def test_row_format_with_a_single_input_stacks_instances_as_rows() -> None:
    decoded = decode({"instances": [[1, 2, 3], [4.5, 5, 6]]})

    assert decoded.format == ROW
    assert decoded.signature_name == "serving_default"
    assert list(decoded.inputs) == ["x"]
    assert decoded.inputs["x"].dtype == FLOAT
    np.testing.assert_array_equal(decoded.inputs["x"], [[1, 2, 3], [4.5, 5, 6]])


def test_row_format_with_named_inputs_gathers_each_input_across_instances() -> None:
    decoded = decode(
        {
            "instances": [
                {"image": [1, 2], "label": "cat", "count": 3},
                {"image": [3, 4], "label": b64(b"\x00\xff"), "count": 4},
            ]
        },
        "named",
    )

    assert decoded.format == ROW
    np.testing.assert_array_equal(decoded.inputs["image"], [[1, 2], [3, 4]])
    assert decoded.inputs["image"].dtype == FLOAT
    assert decoded.inputs["label"].dtype == STRING_DTYPE
    assert decoded.inputs["label"].tolist() == [b"cat", b"\x00\xff"]
    assert decoded.inputs["count"].dtype == INT
    assert decoded.inputs["count"].tolist() == [3, 4]


def test_row_format_decodes_b64_values_of_a_string_input() -> None:
    decoded = decode({"instances": [b64(b"\x89PNG"), "plain", b64(b"")]}, "text")

    assert decoded.inputs["text"].tolist() == [b"\x89PNG", b"plain", b""]


def test_invalid_b64_data_is_refused_in_tf_servings_words() -> None:
    with pytest.raises(InvalidArgument) as undecodable:
        decode({"instances": ["a", {"b64": "not base64!"}]}, "text")
    with pytest.raises(InvalidArgument) as not_a_string:
        decode({"inputs": [{"b64": 1}]}, "text")

    assert undecodable.value.message.startswith(
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        "Unable to base64 decode"
    )
    assert not_a_string.value.message == (
        'JSON Value: {\n    "b64": 1\n} not formatted correctly for base64 data'
    )


def test_b64_without_padding_is_read_as_tf_serving_reads_it() -> None:
    assert decode({"instances": [{"b64": "YWI"}]}, "text").inputs["text"].tolist() == [b"ab"]


@pytest.mark.parametrize(
    ("body", "signature_name", "message"),
    [
        (
            {"instances": ["x", "y"]},
            None,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "x" Type: String is not of expected type: float',
        ),
        (
            {"instances": [[1, 2, 3], [4, None, 6]]},
            None,
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON Value: null Type: Null is not of expected type: float",
        ),
        (
            {"instances": [{"image": [1, 2], "label": "a", "count": 1.5}]},
            "named",
            "Failed to process element: 0 key: count of 'instances' list. Error: "
            "INVALID_ARGUMENT: JSON Value: 1.5 Type: Number is not of expected type: int64",
        ),
        (
            {"inputs": {"image": [[1, 2]], "label": [7], "count": [1]}},
            "named",
            "JSON Value: 7 Type: Number is not of expected type: string",
        ),
    ],
    ids=["string-for-float", "null-for-float", "fraction-for-int64", "number-for-string"],
)
def test_a_value_of_the_wrong_type_gets_tf_servings_type_error(
    body: dict, signature_name: str | None, message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode(body, signature_name)

    assert caught.value.message.startswith(message)


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        (
            [{"image": [1, 2], "label": "a", "count": 1}, {"image": [1, 2], "count": 1}],
            r"^Failed to process element: 1 of 'instances' list\. JSON object: \{(?s:.*)\} keys "
            r"must be equal to: count,image,label \(missing: label\)$",
        ),
        (
            [{"image": [1, 2], "label": "a", "count": 1, "extra": 0}],
            r"^Failed to process element: 0 key: extra of 'instances' list\. Error: "
            r"INVALID_ARGUMENT: JSON object: does not have named input: extra$",
        ),
        (
            [{"image": [1, 2], "label": "a", "count": 1}, [1, 2]],
            r"^Expecting object but got list at item 1 of input list$",
        ),
        (
            [[1, 2]],
            r"^instances is a plain list, but expecting list of objects as multiple input "
            r"tensors required as per tensorinfo_map \(the model's inputs: count, image, label\)",
        ),
        (
            [],
            r"^JSON Value: \{\n    \"signature_name\": \"named\",\n    \"instances\": \[\]\n\} "
            r"No values in 'instances' array$",
        ),
    ],
    ids=["missing-key", "unknown-key", "mixed-forms", "bare-list-for-named-inputs", "empty"],
)
def test_row_instances_must_match_the_signatures_inputs(instances: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        decode({"instances": instances}, "named")


def test_decoded_inputs_are_checked_against_the_signature() -> None:
    with pytest.raises(InvalidArgument, match=r"'x' has shape \[1, 2\]"):
        decode({"instances": [[1, 2]]})


# -- columnar format -------------------------------------------------------------------------


def test_columnar_format_with_a_bare_value_feeds_the_single_input() -> None:
    decoded = decode({"inputs": [[1, 2, 3]]})

    assert decoded.format == COLUMNAR
    np.testing.assert_array_equal(decoded.inputs["x"], [[1, 2, 3]])


def test_columnar_format_with_named_inputs_takes_each_tensor_whole() -> None:
    decoded = decode(
        {"inputs": {"image": [[1, 2]], "label": [b64(b"\x01"), "b"], "count": [7, 8, 9]}},
        "named",
    )

    assert decoded.format == COLUMNAR
    np.testing.assert_array_equal(decoded.inputs["image"], [[1, 2]])
    assert decoded.inputs["label"].tolist() == [b"\x01", b"b"]
    assert decoded.inputs["count"].tolist() == [7, 8, 9]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"image": [[1, 2]], "count": [1]}, r"^Missing named input: label in 'inputs' object\.$"),
        (
            {"image": [[1, 2]], "label": ["a"], "count": [1], "x": [1]},
            r"Unknown input\(s\) \['x'\]",
        ),
        (
            [[1, 2]],
            r"^inputs is a plain value/list, but expecting an object as multiple input tensors "
            r"required as per tensorinfo_map",
        ),
    ],
    ids=["missing", "unknown", "bare-value-for-named-inputs"],
)
def test_columnar_inputs_must_match_the_signatures_inputs(inputs: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        decode({"inputs": inputs}, "named")


# -- body shape and signature choice -----------------------------------------------------------


def test_a_body_with_both_instances_and_inputs_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]})

    assert caught.value.message == (
        'JSON Value: {\n    "instances": [[1, 2, 3]],\n    "inputs": [[1, 2, 3]]\n} Not '
        "formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
    )


def test_instances_that_are_not_a_list_are_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode({"instances": 1.0})

    assert caught.value.message == (
        "JSON Value: {\n    \"instances\": 1.0\n} Expecting 'instances' to be an list/array"
    )


def test_a_body_with_neither_instances_nor_inputs_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="Missing 'inputs' or 'instances' key"):
        decode({"signature_name": "serving_default"})


def test_signature_name_selects_the_signature_used_to_decode() -> None:
    decoded = decode({"instances": ["a", "b"]}, "text")

    assert decoded.signature_name == "text"
    assert decoded.inputs["text"].tolist() == [b"a", b"b"]


def test_an_unknown_signature_name_is_refused() -> None:
    with pytest.raises(InvalidArgument, match='Serving signature name: "nope" not found'):
        decode({"instances": [[1, 2, 3]]}, "nope")


def test_a_non_string_signature_name_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_predict_body({"signature_name": 3, "instances": [[1, 2, 3]]}, SIGNATURES)

    assert caught.value.message == (
        'JSON Value: {\n    "signature_name": 3,\n    "instances": [[1, 2, 3]]\n} not '
        "formatted correctly. 'signature_name' key must be a string value."
    )


def test_a_body_that_is_not_a_json_object_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_predict_body([[1, 2, 3]], SIGNATURES)

    assert caught.value.message == "JSON Value: [[1, 2, 3]] Is not object"


def test_a_long_body_is_shown_cut_short_in_a_message() -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_predict_body({"instances": [[1, 2, 3]] * 100_000, "inputs": []}, SIGNATURES)

    assert len(caught.value.message) < 400


# -- parse_json ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b'{"instances": [1,', b"", b"{'single': 'quotes'}", b"\xff\xfe"], ids=repr
)
def test_malformed_json_is_a_json_parse_error(body: bytes) -> None:
    with pytest.raises(InvalidArgument, match=r"^JSON Parse error"):
        parse_json(body)


def test_nan_and_infinity_tokens_are_accepted() -> None:
    body = parse_json(b'{"instances": [[NaN, Infinity, -Infinity]]}')

    decoded = decode(body)
    values = decoded.inputs["x"][0]
    assert math.isnan(values[0])
    assert values[1] == np.inf
    assert values[2] == -np.inf


def test_strict_json_is_parsed_as_is() -> None:
    assert parse_json(b'{"inputs": [1, 2.5, "a", null, true]}') == {
        "inputs": [1, 2.5, "a", None, True]
    }


# -- responses -------------------------------------------------------------------------------


def encode(outputs: dict[str, np.ndarray], request_format: str) -> Any:
    return json.loads(encode_predict_response(outputs, request_format))


def test_a_row_request_with_one_output_gets_a_list_of_predictions() -> None:
    body = encode({"y": np.array([[1.5, 2], [3, 4]], np.float32)}, ROW)

    assert body == {"predictions": [[1.5, 2.0], [3.0, 4.0]]}


def test_a_row_request_with_several_outputs_gets_one_object_per_row() -> None:
    outputs = {
        "scores": np.array([[0.5, 0.25], [1, 0]], np.float32),
        "classes": np.array([1, 0], np.int64),
    }

    body = encode(outputs, ROW)

    assert body == {
        "predictions": [
            {"scores": [0.5, 0.25], "classes": 1},
            {"scores": [1.0, 0.0], "classes": 0},
        ]
    }


def test_a_row_response_refuses_outputs_with_different_batch_sizes() -> None:
    outputs = {"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)}

    with pytest.raises(InvalidArgument, match="inconsistent batch size"):
        encode_predict_response(outputs, ROW)


def test_a_columnar_request_with_one_output_gets_the_bare_tensor() -> None:
    body = encode({"y": np.array([[1, 2]], np.int32)}, COLUMNAR)

    assert body == {"outputs": [[1, 2]]}


def test_a_columnar_request_with_several_outputs_gets_them_by_name() -> None:
    outputs = {"a": np.array([0.5], np.float32), "b": np.array([[1, 2, 3]], np.int64)}

    body = encode(outputs, COLUMNAR)

    assert body == {"outputs": {"a": [0.5], "b": [[1, 2, 3]]}}


FLOAT32_VALUES = np.array(
    [0.1, 1 / 3, 2 / 3, 1e-8, -2.5e-30, 3.4028235e38, 1.1754944e-38, 16777217, 123456.789],
    dtype=np.float32,
)


@pytest.mark.parametrize("request_format", [ROW, COLUMNAR])
@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "with-nan"])
def test_float32_outputs_round_trip_exactly(request_format: str, with_nan: bool) -> None:
    """Also through the token writer used when NaN is present."""
    values = np.concatenate(
        [FLOAT32_VALUES, np.random.default_rng(0).standard_normal(50).astype(np.float32)]
    )
    outputs = {"y": values}
    if with_nan:
        outputs["z"] = np.full(values.shape, np.nan, np.float32)

    body = encode(outputs, request_format)

    if request_format == ROW:
        decoded = [row["y"] for row in body["predictions"]] if with_nan else body["predictions"]
    else:
        decoded = body["outputs"]["y"] if with_nan else body["outputs"]
    np.testing.assert_array_equal(np.array(decoded, np.float32), values, strict=False)


@pytest.mark.parametrize("with_nan", [False, True], ids=["finite", "with-nan"])
def test_whole_floats_keep_a_decimal_point(with_nan: bool) -> None:
    values = [1.0, -2.0, 0.0, 1024.0] + ([math.nan] if with_nan else [])

    raw = encode_predict_response({"y": np.array(values, np.float32)}, COLUMNAR)

    assert raw.replace(b" ", b"").startswith(b'{"outputs":[1.0,-2.0,0.0,1024.0')


@pytest.mark.parametrize(
    ("outputs", "request_format"),
    [
        ({"y": np.array([np.nan, 1, np.inf, -np.inf], np.float32)}, ROW),
        ({"y": np.array([np.nan, 1, np.inf, -np.inf], np.float32)}, COLUMNAR),
        ({"y": np.array([[np.nan, np.inf, -np.inf]], np.float64)}, ROW),
        (
            {
                "y": np.array([np.nan, 1, np.inf, -np.inf], np.float32),
                "z": np.array([1, 2, 3, 4], np.float32),
            },
            ROW,
        ),
        (
            {
                "y": np.array([np.nan, 1, np.inf, -np.inf], np.float32),
                "z": np.array([1, 2, 3, 4], np.float32),
            },
            COLUMNAR,
        ),
        (
            {
                "y": np.array([[np.nan], [1], [np.inf], [-np.inf]], np.float32),
                "z": np.array([1, 2, 3, 4], np.int32),
            },
            ROW,
        ),
    ],
    ids=[
        "row-one-output",
        "columnar-one-output",
        "row-float64-2d",
        "row-several-1d-outputs",
        "columnar-several-outputs",
        "row-several-2d-outputs",
    ],
)
def test_non_finite_floats_are_written_as_bare_nan_and_infinity_tokens(
    outputs: dict[str, np.ndarray], request_format: str
) -> None:
    raw = encode_predict_response(outputs, request_format)

    assert b"null" not in raw
    assert b"NaN" in raw
    assert b"-Infinity" in raw
    assert raw.count(b"Infinity") == 2
    assert b'"NaN"' not in raw  # a token, not a string


def test_string_outputs_are_text_unless_named_with_the_bytes_suffix() -> None:
    outputs = {
        "label": np.array([b"cat", "d\u00f6g".encode()], dtype=object),
        "image_bytes": np.array([b"\x00\xff", b""], dtype=object),
    }

    body = encode(outputs, COLUMNAR)

    assert body == {
        "outputs": {
            "label": ["cat", "d\u00f6g"],
            "image_bytes": [{"b64": "AP8="}, {"b64": ""}],
        }
    }


def test_string_outputs_with_the_bytes_suffix_are_b64_in_row_format_too() -> None:
    body = encode({"raw_bytes": np.array([[b"\x01\x02"]], dtype=object)}, ROW)

    assert body == {"predictions": [[{"b64": base64.b64encode(b"\x01\x02").decode()}]]}
