"""The simdjson fast path for numeric row bodies gives exactly the general path's arrays,
and every other body is left to the general path (which keeps its errors)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from ferry.codecs.float_rows import parse_float_rows
from ferry.codecs.tfserving_json import decode_float_rows, decode_predict_body, parse_json
from ferry.errors import InvalidArgument
from ferry.tensors import Signature, TensorSpec


def signature(dtype: str = "float32", width: int = 4, inputs: int = 1) -> dict[str, Signature]:
    specs = {f"x{i}": TensorSpec(f"x{i}", np.dtype(dtype), (-1, width)) for i in range(inputs)}
    outputs = {"y": TensorSpec("y", np.dtype(dtype), (-1, 1))}
    return {"serving_default": Signature(specs, outputs)}


def general(body: bytes, signatures: dict[str, Signature]) -> dict[str, np.ndarray]:
    return decode_predict_body(parse_json(body), signatures).inputs


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize(("rows", "width"), [(1, 784), (3, 4), (64, 16)])
def test_numeric_rows_equal_the_general_path_bit_for_bit(dtype: str, rows: int, width: int) -> None:
    rng = np.random.default_rng(rows * width)
    values = rng.standard_normal((rows, width)) * 10.0 ** rng.integers(-3, 4, (rows, width))
    # float32 reprs (as clients send them), float64 reprs, integers and exponents.
    for array in (values.astype(np.float32), values, np.rint(values)):
        body = orjson.dumps({"instances": array}, option=orjson.OPT_SERIALIZE_NUMPY)
        signatures = signature(dtype, width)

        fast = decode_float_rows(parse_float_rows(body), signatures)

        expected = general(body, signatures)
        assert fast is not None and fast.format == "row"
        assert fast.inputs["x0"].dtype == expected["x0"].dtype
        assert fast.inputs["x0"].tobytes() == expected["x0"].tobytes()


def test_the_signature_name_is_taken_from_the_body() -> None:
    body = b'{"signature_name": "other", "instances": [[1, 2.5e-3, -0.0, 4]]}'
    signatures = {"other": signature()["serving_default"]}

    decoded = decode_float_rows(parse_float_rows(body), signatures)

    assert decoded is not None and decoded.signature_name == "other"
    assert decoded.inputs["x0"].tolist() == [[1.0, 0.0024999999441206455, -0.0, 4.0]]


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1.0, "2.5", 3.0, 4.0]]}',  # a numeric string: TF Serving refuses it
        b'{"instances": [[1.0, true, 3.0, 4.0]]}',
        b'{"instances": [[1.0, null, 3.0, 4.0]]}',
        b'{"instances": [[1.0, [2.0], 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]]}',  # nested
        b'{"instances": [[1.0, 2.0], [3.0]]}',  # ragged
        b'{"instances": [[1.0, 2.0, 3.0], [4.0, 5.0]]}',
        b'{"instances": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0, 8.0]]}',  # ragged, 2 x 4 values
        b'{"instances": []}',
        b'{"instances": [[]]}',
        b'{"instances": [1.0, 2.0]}',  # scalars per instance
        b'{"instances": [{"x0": [1.0, 2.0, 3.0, 4.0]}]}',  # named instances
        b'{"inputs": [[1.0, 2.0, 3.0, 4.0]]}',  # columnar
        b'{"instances": [[1.0, 2.0, 3.0, 4.0]], "inputs": [[1.0]]}',
        b'{"instances": [[1.0, 2.0, 3.0, 4.0]], "instances": [[5.0, 6.0, 7.0, 8.0]]}',
        b'{"signature_name": 3, "instances": [[1.0, 2.0, 3.0, 4.0]]}',
        b'{"signature_name": "a[b", "instances": [[1.0, 2.0, 3.0, 4.0]]}',
        b'{"instances": [[NaN, 2.0, 3.0, 4.0]]}',  # TF Serving's NaN token: RapidJSON path
        b'{"instances": [[1e400, 2.0, 3.0, 4.0]]}',
        b'{"instances": [[1.0 2.0]]}',  # malformed
        b"[[1.0, 2.0, 3.0, 4.0]]",
        b"",
    ],
)
def test_other_bodies_are_left_to_the_general_path(body: bytes) -> None:
    assert parse_float_rows(body) is None


def test_signatures_the_fast_path_cannot_serve_fall_back() -> None:
    rows = parse_float_rows(b'{"instances": [[1.0, 2.0, 3.0, 4.0]]}')
    assert rows is not None

    assert decode_float_rows(rows, signature("int64")) is None  # fractions must be refused
    assert decode_float_rows(rows, signature(inputs=2)) is None
    assert decode_float_rows(rows, {"other": signature()["serving_default"]}) is None


def test_a_wrong_width_gets_the_general_paths_error() -> None:
    body = b'{"instances": [[1.0, 2.0, 3.0]]}'
    signatures = signature(width=4)

    with pytest.raises(InvalidArgument) as fast_error:
        decode_float_rows(parse_float_rows(body), signatures)
    with pytest.raises(InvalidArgument) as general_error:
        general(body, signatures)

    assert str(fast_error.value) == str(general_error.value)
