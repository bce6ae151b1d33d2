"""gRPC Predict outputs in TF Serving's two forms, from a real ferry process.

TF Serving writes each output with `Tensor::AsProtoField`: the dtype's typed field
(float_val; int_val for int8/int16/int32/uint8/uint16; half_val as bit patterns;
string_val ...), which its own clients read (`mnist_client.py`: `.float_val`). With
`--enable_serialization_as_tensor_content` it writes `AsProtoTensorContent` instead:
every dtype in tensor_content, strings as TensorFlow's length-prefixed list. A model of
casts gives one output of every dtype ferry serves, so each field is checked.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper
from support.models import _model, write_model
from support.server import FerryProcess

from ferry.client import Client
from ferry.codecs.tensor_proto import encode_tensor
from ferry.protos import message_class

# Output name -> ONNX type of the Cast from the float input `x` (signed and float types)
# or `u` (unsigned types: a float cast to them out of their range is undefined).
SIGNED = {
    "f16": TensorProto.FLOAT16,
    "f64": TensorProto.DOUBLE,
    "i8": TensorProto.INT8,
    "i16": TensorProto.INT16,
    "i32": TensorProto.INT32,
    "i64": TensorProto.INT64,
    "b": TensorProto.BOOL,
    "s": TensorProto.STRING,
}
UNSIGNED = {
    "u8": TensorProto.UINT8,
    "u16": TensorProto.UINT16,
    "u32": TensorProto.UINT32,
    "u64": TensorProto.UINT64,
}
X = np.array([-2.0, 0.0, 1.5, 100.0], np.float32)
U = np.array([0.0, 1.0, 200.0, 255.0], np.float32)  # in range of every unsigned type


def casts_model():
    """f32 = x, and one Cast of x (or u) per dtype: every output dtype in one request."""
    nodes = [helper.make_node("Identity", ["x"], ["f32"])]
    nodes += [helper.make_node("Cast", ["x"], [name], to=t) for name, t in SIGNED.items()]
    nodes += [helper.make_node("Cast", ["u"], [name], to=t) for name, t in UNSIGNED.items()]
    outputs = {"f32": TensorProto.FLOAT, **SIGNED, **UNSIGNED}
    return _model(
        nodes,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N"]) for n in ("x", "u")],
        [helper.make_tensor_value_info(n, t, ["N"]) for n, t in outputs.items()],
    )


def serve(model_root: Path, start_server, *flags: str) -> FerryProcess:
    write_model(casts_model(), model_root / "casts", 1)
    server = start_server(str(model_root), *flags)
    server.wait_version("casts", 1)
    return server


def predict(server: FerryProcess):
    request = message_class("tensorflow.serving.PredictRequest")()
    request.model_spec.name = "casts"
    encode_tensor(X, "x", into=request.inputs["x"], tensor_content=True)
    encode_tensor(U, "u", into=request.inputs["u"], tensor_content=True)
    with grpc.insecure_channel(server.grpc_target) as channel:
        rpc = channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=message_class("tensorflow.serving.PredictResponse").FromString,
        )
        return rpc(request, timeout=10)


def expected_outputs() -> dict[str, np.ndarray]:
    signed = {"f16": np.float16, "f64": np.float64, "i8": np.int8, "i16": np.int16}
    signed |= {"i32": np.int32, "i64": np.int64, "b": np.bool_}
    unsigned = {"u8": np.uint8, "u16": np.uint16, "u32": np.uint32, "u64": np.uint64}
    return {
        "f32": X,
        **{name: X.astype(dtype) for name, dtype in signed.items()},
        **{name: U.astype(dtype) for name, dtype in unsigned.items()},
        "s": np.array([b"-2", b"0", b"1.5", b"100"], dtype=object),
    }


def test_outputs_fill_tf_servings_typed_field_for_each_dtype(model_root, start_server) -> None:
    server = serve(model_root, start_server)

    outputs = predict(server).outputs

    assert all(not proto.tensor_content for proto in outputs.values())
    assert list(outputs["f32"].float_val) == [-2.0, 0.0, 1.5, 100.0]
    assert list(outputs["f64"].double_val) == [-2.0, 0.0, 1.5, 100.0]
    # DT_HALF as the 16-bit patterns, in half_val (not float_val).
    assert list(outputs["f16"].half_val) == X.astype(np.float16).view(np.uint16).tolist()
    # The small integer types share int_val, as in TensorFlow's AsProtoField.
    for name in ("i8", "i16", "i32"):
        assert list(outputs[name].int_val) == [-2, 0, 1, 100], name
    for name in ("u8", "u16"):
        assert list(outputs[name].int_val) == [0, 1, 200, 255], name
    assert list(outputs["i64"].int64_val) == [-2, 0, 1, 100]
    assert list(outputs["u32"].uint32_val) == [0, 1, 200, 255]
    assert list(outputs["u64"].uint64_val) == [0, 1, 200, 255]
    assert list(outputs["b"].bool_val) == [True, False, True, True]
    assert list(outputs["s"].string_val) == [b"-2", b"0", b"1.5", b"100"]
    assert [d.size for d in outputs["f32"].tensor_shape.dim] == [4]


def test_enable_serialization_as_tensor_content_writes_every_output_as_content(
    model_root, start_server
) -> None:
    server = serve(model_root, start_server, "--enable_serialization_as_tensor_content=true")

    outputs = predict(server).outputs

    assert outputs["f32"].tensor_content == X.astype("<f4").tobytes()
    assert outputs["f16"].tensor_content == X.astype("<f2").tobytes()
    assert outputs["u16"].tensor_content == U.astype("<u2").tobytes()
    # Strings too, as TensorFlow's string list: the varint lengths, then the bytes.
    assert outputs["s"].tensor_content == b"\x02\x01\x03\x03" + b"-2" + b"0" + b"1.5" + b"100"
    for name, proto in outputs.items():
        fields = [f.name for f, _ in proto.ListFields()]
        assert sorted(fields) == ["dtype", "tensor_content", "tensor_shape"], name


@pytest.mark.parametrize("flags", [(), ("--enable_serialization_as_tensor_content",)])
def test_ferry_client_reads_both_forms(model_root, start_server, flags) -> None:
    server = serve(model_root, start_server, *flags)

    with Client(f"grpc://{server.grpc_target}") as client:
        outputs = client.predict("casts", {"x": X, "u": U})

    for name, expected in expected_outputs().items():
        assert outputs[name].dtype == expected.dtype, name
        assert outputs[name].tolist() == expected.tolist(), name
