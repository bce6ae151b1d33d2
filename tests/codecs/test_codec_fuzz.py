"""Generated bodies and messages through every codec: each input either decodes or raises
a FerryError (which the protocols turn into their own error form), never another
exception (a 500), and what decodes stays within the request's tensor budget.

Derandomized and without an example database, so every run (and CI) tries the same
inputs; a few hundred examples per codec keep the whole file to seconds.
"""

from __future__ import annotations

import json
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferry.codecs.sagemaker_payload import CSV, JSON, JSON_LINES, to_predict_body
from ferry.codecs.tensor_proto import decode_tensor, tensor_proto_class
from ferry.codecs.tf_example import examples_from_json
from ferry.codecs.tfserving_json import PredictBody, decode_predict_body, parse_json
from ferry.codecs.v2 import array_from_raw, decode_rest_request
from ferry.errors import FerryError
from ferry.tensor_limits import MAX_RANK, TensorBudget
from ferry.tensors import STRING_DTYPE, Signature, TensorSpec

LIMIT = 4096  # bytes of decoded tensors per request: small, so generated shapes cross it
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Dimensions around every edge: zero, small, the limit, int64's and beyond, negative.
DIMS = st.one_of(
    st.integers(0, 8),
    st.sampled_from([-1, 2**20, 2**31, 2**62 + 1, 2**63 - 1, 2**63, 2**64]),
    st.integers(-(2**70), 2**70),
)
SHAPES = st.lists(DIMS, max_size=MAX_RANK + 3)
V2_TYPES = st.sampled_from(
    ["BOOL", "UINT8", "INT8", "INT32", "INT64", "UINT64", "FP16", "FP32", "FP64", "BYTES", "X"]
)
KEYS = st.sampled_from(["b64", "x", "a", "instances", "inputs"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(KEYS, inner, max_size=3),
    ),
    max_leaves=40,
)


def decoded_bytes(arrays) -> int:
    """What the budget charges: elements times item size (a reference for strings)."""
    return sum(a.size * (8 if a.dtype == STRING_DTYPE else a.dtype.itemsize) for a in arrays)


def signatures() -> dict[str, Signature]:
    def sig(**inputs) -> Signature:
        return Signature(
            {n: TensorSpec(n, np.dtype(d), s) for n, (d, s) in inputs.items()},
            {"y": TensorSpec("y", np.dtype(np.float32), (-1,))},
        )

    return {
        "serving_default": sig(x=(np.float32, (-1, 4))),
        "ints": sig(i=(np.int64, (-1, 3))),
        "strings": sig(s=(STRING_DTYPE, None)),
        "pair": sig(a=(np.float32, (-1, 2)), b=(np.float64, None)),
        "bools": sig(t=(np.bool_, None)),
    }


SIGNATURES = signatures()


# -- V2 ----------------------------------------------------------------------------------------


@st.composite
def v2_bodies(draw) -> tuple[bytes, int | None]:
    inputs = []
    for index in range(draw(st.integers(0, 3))):
        item: dict = {"name": draw(st.sampled_from(["x", "y", str(index)]))}
        if draw(st.booleans()):
            item["datatype"] = draw(V2_TYPES)
        if draw(st.booleans()):
            item["shape"] = draw(SHAPES)
        if draw(st.booleans()):
            item["data"] = draw(JSON_VALUES)
        else:
            item["parameters"] = {"binary_data_size": draw(st.integers(-2, 64))}
        inputs.append(item)
    header = json.dumps({"inputs": inputs}).encode()
    binary = draw(st.binary(max_size=64))
    length = draw(st.one_of(st.none(), st.just(len(header)), st.integers(-1, 200)))
    return header + binary, length


@FUZZ
@given(v2_bodies())
def test_v2_rest_bodies_decode_or_refuse_within_the_budget(case: tuple[bytes, int | None]) -> None:
    body, header_length = case
    try:
        request = decode_rest_request(body, header_length, TensorBudget(LIMIT))
    except FerryError:
        return
    assert decoded_bytes(request.inputs.values()) <= LIMIT


@FUZZ
@given(V2_TYPES, SHAPES, st.binary(max_size=128))
def test_v2_binary_tensors_decode_or_refuse(datatype: str, shape: list, raw: bytes) -> None:
    if any(d < 0 for d in shape):
        return  # the transports refuse these before (checked_shape)
    try:
        array = array_from_raw("x", datatype, tuple(shape), raw, TensorBudget(LIMIT))
    except FerryError:
        return
    assert decoded_bytes([array]) <= LIMIT and list(array.shape) == shape


@FUZZ
@given(st.lists(st.binary(max_size=6), max_size=6), st.integers(0, 8))
def test_v2_bytes_elements_round_trip_or_refuse(elements: list[bytes], claimed: int) -> None:
    raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    try:
        array = array_from_raw("t", "BYTES", (claimed,), raw, TensorBudget(LIMIT))
    except FerryError:
        assert claimed != len(elements)
        return
    assert array.tolist() == elements


# -- TensorProto --------------------------------------------------------------------------------


@st.composite
def tensor_protos(draw):
    message = tensor_proto_class()(dtype=draw(st.integers(0, 30)))
    for size in draw(st.lists(st.integers(-(2**63), 2**63 - 1) | DIMS.filter(_int64), max_size=70)):
        message.tensor_shape.dim.add(size=size)
    message.tensor_shape.unknown_rank = draw(st.booleans()) and draw(st.booleans())
    which = draw(st.sampled_from(["content", "float", "int", "int64", "string", "bool", "half"]))
    count = draw(st.integers(0, 4))
    if which == "content":
        message.tensor_content = draw(st.binary(max_size=64))
    elif which == "float":
        message.float_val.extend(draw(st.lists(st.floats(width=32), max_size=count)))
    elif which == "int":
        message.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=count)))
    elif which == "int64":
        message.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=count)))
    elif which == "string":
        message.string_val.extend(draw(st.lists(st.binary(max_size=4), max_size=count)))
    elif which == "bool":
        message.bool_val.extend(draw(st.lists(st.booleans(), max_size=count)))
    else:
        message.half_val.extend(draw(st.lists(st.integers(-5, 70_000), max_size=count)))
    return message


def _int64(size: int) -> bool:
    return -(2**63) <= size < 2**63


@FUZZ
@given(tensor_protos())
def test_tensor_protos_decode_or_refuse_within_the_budget(message) -> None:
    try:
        array = decode_tensor(message, "x", budget=TensorBudget(LIMIT))
    except FerryError:
        return
    assert decoded_bytes([array]) <= LIMIT
    assert list(array.shape) == [d.size for d in message.tensor_shape.dim]


# -- TF Serving JSON and SageMaker payloads ------------------------------------------------------


@st.composite
def predict_bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["value", "instances", "inputs", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=80))
    value = draw(JSON_VALUES)
    if kind != "value":
        value = {kind: value}
        if draw(st.booleans()):
            value["signature_name"] = draw(st.sampled_from([*SIGNATURES, "nope", 3]))
    return json.dumps(value).encode()  # NaN and Infinity as TF Serving's tokens


@FUZZ
@given(predict_bodies())
def test_tf_serving_json_bodies_decode_or_refuse_within_the_budget(raw: bytes) -> None:
    try:
        decoded = PredictBody(raw).decode(SIGNATURES, TensorBudget(LIMIT))
    except FerryError:
        return
    assert decoded_bytes(decoded.inputs.values()) <= LIMIT


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_any_bytes_parse_or_raise_a_json_parse_error(raw: bytes) -> None:
    try:
        parse_json(raw)
    except FerryError as exc:
        assert exc.message.startswith("JSON Parse error")


CSV_TEXT = st.lists(
    st.lists(st.sampled_from(["1", "2.5", "-3", "x", '"q"', "", " ", "1e999", "nan"]), max_size=5),
    max_size=6,
).map(lambda rows: "\n".join(",".join(row) for row in rows).encode())


@FUZZ
@given(
    st.sampled_from([JSON, JSON_LINES, CSV]),
    predict_bodies() | CSV_TEXT | st.lists(predict_bodies(), max_size=3).map(b"\n".join),
)
def test_sagemaker_payloads_decode_or_refuse_within_the_budget(content_type: str, raw: bytes):
    try:
        body = to_predict_body(raw, content_type)
        decoded = decode_predict_body(body, SIGNATURES, TensorBudget(LIMIT))
    except FerryError:
        return
    assert decoded_bytes(decoded.inputs.values()) <= LIMIT


@FUZZ
@given(JSON_VALUES, st.integers(0, 3))
def test_tf_example_bodies_serialize_or_refuse_within_the_budget(context, copies: int) -> None:
    body = {"context": context, "examples": [{"f": [1.5]}] * copies}
    budget = TensorBudget(LIMIT)
    try:
        examples = examples_from_json(body, budget)
    except FerryError:
        return
    assert sum(len(e) for e in examples) <= LIMIT
