"""SageMaker payloads as TF Serving bodies, by the SageMaker TF Serving container's rules."""

from __future__ import annotations

import pytest

from ferry.codecs.sagemaker_payload import (
    CSV,
    JSON,
    JSON_LINES,
    csv_instances,
    to_predict_body,
)
from ferry.errors import InvalidArgument


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
