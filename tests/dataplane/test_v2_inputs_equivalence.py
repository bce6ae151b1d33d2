"""The Rust front's V2 infer decoder (rust/src/codec/v2_inputs.rs) against Python's
(`ferry.codecs.v2.decode_rest_request` reading the body with orjson), over generated
bodies: wherever Rust takes a body, Python decodes Rust's reading into the same request
(inputs bit for bit, dtypes, shapes, id) or refuses it with the same error; and the
numeric bodies Triton's and KServe's clients send are taken by Rust."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.dataplane import extension_function
from support.json_numbers import NUMBER_TEXT

from ferry.codecs.v2 import V2_INPUTS_EXTENSION, decode_rest_request, parsed_by_front
from ferry.errors import FerryError


@pytest.fixture(scope="module")
def rust_parse():
    return extension_function("parse_v2_inputs")


space = st.sampled_from(["", " ", "\n"])


@st.composite
def inputs(draw) -> str:
    count = draw(st.integers(0, 6))
    data = "[" + f",{draw(space)}".join(draw(NUMBER_TEXT) for _ in range(count)) + "]"
    if draw(st.integers(0, 9)) == 0:
        data = f"[{data}]"  # nested: Python's alone
    dims = draw(st.sampled_from([[count], [1, count], [count, 1], [], [count + 1], [-1]]))
    shape = "[" + ", ".join(draw(st.sampled_from([str(d), f"{d}.0"])) if d >= 0 else str(d)
                            for d in dims) + "]"  # fmt: skip
    datatype = draw(st.sampled_from(["FP32", "FP32", "FP64", "INT64", "BOOL"]))
    name = draw(st.sampled_from(["x", "input_1", "a b", "esc\\u0061pe"]))
    members = [f'"name": "{name}"', f'"shape": {shape}', f'"datatype": "{datatype}"']
    members.append(f'"data": {data}')
    if draw(st.integers(0, 9)) == 0:
        members.append('"parameters": {}')
    if draw(st.integers(0, 9)) == 0:
        members.pop(draw(st.integers(0, len(members) - 1)))
    order = draw(st.permutations(members))
    return "{" + ",".join(order) + "}"


@st.composite
def bodies(draw) -> bytes:
    parts = [draw(inputs()) for _ in range(draw(st.integers(1, 3)))]
    if draw(st.integers(0, 9)) == 0:
        parts = parts[:1] * 2  # the same name twice: Python refuses it
    members = [f'"inputs": [{",".join(parts)}]']
    if draw(st.booleans()):
        members.append(draw(st.sampled_from(['"id": "req-1"', '"id": 5', '"id": ""'])))
    if draw(st.integers(0, 9)) == 0:
        members.append('"outputs": [{"name": "y"}]')
    if draw(st.integers(0, 3)) == 0:
        members.append(
            '"parameters": '
            + draw(
                st.sampled_from(
                    [
                        '{"binary_data_output": true}',
                        '{"timeout": 5000, "tag": "t"}',
                        '{"sequence_id": 3}',
                        '{"binary_data_output": false, "timeout": -1}',
                        "{}",
                        '{"timeout": 1.5}',
                        '{"timeout": - 15}',  # not JSON (the fuzzer found Rust took it)
                        '{"timeout": -0}',
                    ]
                )
            )
        )
    return ("{" + ",".join(draw(st.permutations(members))) + "}").encode()


def _python(body: bytes, parsed: dict | None = None):
    """The request Python decodes (inputs, id) or the error it gives."""
    try:
        request = decode_rest_request(body, None, parsed=parsed)
    except FerryError as exc:
        return type(exc), exc.message
    return (
        request.inputs,
        request.id,
        request.parameters,
        request.binary_output_default,
        request.timeout_seconds,
    )


def _same(rust_side, python_side) -> None:
    assert type(rust_side) is type(python_side)
    if isinstance(python_side[0], dict):
        r_inputs, p_inputs = rust_side[0], python_side[0]
        assert list(r_inputs) == list(p_inputs)
        for name, array in p_inputs.items():
            assert r_inputs[name].dtype == array.dtype
            assert r_inputs[name].shape == array.shape
            assert r_inputs[name].tobytes() == array.tobytes()
        assert rust_side[1:] == python_side[1:]
    else:
        assert rust_side == python_side


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies())
def test_rust_reads_a_body_as_python_reads_it(rust_parse, body: bytes) -> None:
    decoded = rust_parse(body)
    if decoded is None:
        return
    parsed = parsed_by_front({"extensions": {V2_INPUTS_EXTENSION: decoded}})
    _same(_python(body, parsed), _python(body))


@pytest.mark.parametrize(
    "request_",
    [
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": list(range(6))}]},
        {
            "id": "42",
            "inputs": [
                {"name": "a", "shape": [1, 2], "datatype": "FP64", "data": [0.1, -2.5e-7]},
                {"name": "b", "shape": [2], "datatype": "FP32", "data": [1e10, 3.4028235e38]},
            ],
        },
    ],
)
def test_the_clients_bodies_are_taken(rust_parse, request_: dict) -> None:
    for body in (json.dumps(request_).encode(), json.dumps(request_, indent=1).encode()):
        decoded = rust_parse(body)
        assert decoded is not None, body
        parsed = parsed_by_front({"extensions": {V2_INPUTS_EXTENSION: decoded}})
        _same(_python(body, parsed), _python(body))


def test_the_tritonclient_body_is_taken(rust_parse) -> None:
    tritonclient_http = pytest.importorskip("tritonclient.http")
    infer_input = tritonclient_http.InferInput("x", [2, 4], "FP32")
    infer_input.set_data_from_numpy(np.arange(8, dtype=np.float32).reshape(2, 4) / 3, False)
    body, header_length = tritonclient_http.InferenceServerClient.generate_request_body(
        [infer_input]
    )
    assert header_length is None
    decoded = rust_parse(body)
    assert decoded is not None, body
    parsed = parsed_by_front({"extensions": {V2_INPUTS_EXTENSION: decoded}})
    _same(_python(body, parsed), _python(body))
