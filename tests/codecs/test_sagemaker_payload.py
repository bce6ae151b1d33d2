"""SageMaker payloads as TF Serving bodies, by the SageMaker TF Serving container's rules."""

from __future__ import annotations

import numpy as np
import pytest

from ferry.codecs.float_rows import parse_float_rows
from ferry.codecs.sagemaker_payload import (
    CSV,
    JSON,
    JSON_LINES,
    csv_instances,
    invocation_body,
    to_predict_body,
)
from ferry.codecs.tfserving_json import decode_predict_body
from ferry.errors import InvalidArgument
from ferry.tensor_limits import unlimited
from ferry.tensors import Signature, TensorSpec

WIDTH4 = {
    "serving_default": Signature(
        {"x": TensorSpec("x", np.dtype("float32"), (-1, 4))},
        {"y": TensorSpec("y", np.dtype("float32"), (-1, 1))},
    )
}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"instances": [[1]]}', {"instances": [[1]]}),
        (
            b'{"inputs": {"x": 1}, "signature_name": "s"}',
            {"inputs": {"x": 1}, "signature_name": "s"},
        ),
        (b'{"examples": []}', {"examples": []}),
        (b"[[1, 2], [3, 4]]", {"instances": [[1, 2], [3, 4]]}),
        (b'[{"a": 1}, {"a": 2}]', {"instances": [{"a": 1}, {"a": 2}]}),
        (b"[1, 2]", {"instances": [[1, 2]]}),
        (b"[]", {"instances": [[]]}),
        (b'{"a": 1}', {"instances": [{"a": 1}]}),
        (b"3.5", {"instances": [3.5]}),
        (b'"text"', {"instances": ["text"]}),
        (b'{"a": 1}\n{"a": 2}\n', {"instances": [{"a": 1}, {"a": 2}]}),
        (b"[1, 2]\r\n\r\n[3, 4]", {"instances": [[1, 2], [3, 4]]}),
    ],
)
def test_json_bodies(body: bytes, expected: dict) -> None:
    assert to_predict_body(body, JSON) == expected
    # application/jsonlines follows the same rules in the container.
    assert to_predict_body(body, JSON_LINES) == expected


def test_broken_single_line_json_reports_the_json_error() -> None:
    with pytest.raises(InvalidArgument, match="JSON Parse error"):
        to_predict_body(b'{"instances": [1,', JSON)


def test_broken_json_over_several_lines_reports_the_json_error() -> None:
    with pytest.raises(InvalidArgument, match="JSON Parse error"):
        to_predict_body(b'{"instances":\n [1,', JSON)


def test_empty_json_lines_body_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        to_predict_body(b"\n\n", JSON_LINES)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"1,2,3\n4,5,6\n", [[1, 2, 3], [4, 5, 6]]),
        (b"1.5,-2e3,nan\n", [[1.5, -2000.0, pytest.approx(float("nan"), nan_ok=True)]]),
        (b"7\n8\n", [7, 8]),
        (b'a,b\n"c, d",e\r\n', [["a", "b"], ["c, d", "e"]]),
        (b"\xef\xbb\xbf1,2\n", [[1, 2]]),  # a UTF-8 byte-order mark is not data
        (b"1, 2\n\n3 ,4", [[1, 2], [3, 4]]),
    ],
)
def test_csv_rows_are_instances(body: bytes, expected: list) -> None:
    assert csv_instances(body) == expected
    assert to_predict_body(body, CSV) == {"instances": expected}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"1,2\n3\n", "row 2 has 1 columns but row 1 has 2"),
        (b"1,,2\n", "row 1, column 2 is empty"),
        (b"", "holds no rows"),
        (b"\xff\xfe1", "not UTF-8"),
        (b'"unterminated\n', "CSV: line 1: unexpected end of data"),
        (b'1,"2"x\n', "CSV: line 1: ',' expected after"),
    ],
)
def test_bad_csv_is_refused_with_the_reason(body: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        csv_instances(body)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"instances": [[1, 2.5, -3e-2, 4], [0.1, 0.2, 0.3, 0.4]]}', JSON),
        (b'{"instances": [[1, 2, 3, 4]]}', JSON_LINES),
        (b"[[1, 2, 3, 4], [5, 6, 7, 8]]", JSON),
        (b"1,2,3,4\n5,6,7,8", CSV),
    ],
)
def test_an_invocation_decodes_as_the_containers_rules_say(body: bytes, content_type: str) -> None:
    """Rows taken by the fast path (simdjson's, or the Rust front's) give the arrays the
    general path gives."""
    want = decode_predict_body(to_predict_body(body, content_type), WIDTH4, unlimited())
    for rows in (None, parse_float_rows(body)):
        got = invocation_body(body, content_type, rows).decode(WIDTH4, unlimited())
        assert got.signature_name == want.signature_name
        assert got.format == want.format
        np.testing.assert_array_equal(got.inputs["x"], want.inputs["x"])
        assert got.inputs["x"].dtype == want.inputs["x"].dtype


def test_a_csv_invocation_never_reads_rows_decoded_as_json() -> None:
    """A CSV payload that happens to read as JSON rows is CSV: the rows the Rust front
    decoded from it are ignored, and the CSV reading's error stands."""
    body = b'{"instances": [[1, 2, 3, 4]]}'
    with pytest.raises(InvalidArgument) as general:
        decode_predict_body(to_predict_body(body, CSV), WIDTH4, unlimited())
    with pytest.raises(InvalidArgument) as fast:
        invocation_body(body, CSV, parse_float_rows(body)).decode(WIDTH4, unlimited())
    assert fast.value.message == general.value.message
