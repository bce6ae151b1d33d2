"""Every protocol hands the runtime 64-byte-aligned arrays, so the same float32 input
gives the same bits over V2 REST (binary and JSON), V2 gRPC and TF Serving gRPC.

Why it matters: onnxruntime's vectorised kernels start an unaligned buffer with a
scalar prologue, which changes the order of the additions. The model here sums 100,003
float32 values (ReduceSum); on this repository's test machines the sum of the same
values read at a 4-byte offset differs from the sum at a 64-byte one in the last bits
(`test_the_model_is_alignment_sensitive`). V2 REST binary inputs sit right after the
JSON header, at any offset: before the fix, the binary request here (JSON header of
odd length) answered different bits than the JSON request.
"""

from __future__ import annotations

import grpc
import numpy as np
import onnxruntime as ort
import orjson
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper, numpy_helper
from support.models import _model, write_model
from support.server import FerryProcess

from ferry.codecs.aligned import ALIGNMENT, aligned_view
from ferry.codecs.tensor_proto import decode_tensor, encode_tensor
from ferry.codecs.v2 import array_from_raw, decode_rest_request
from ferry.protos import message_class

WIDTH = 100_003
VALUES = np.random.default_rng(7).standard_normal((1, WIDTH)).astype(np.float32)


def sum_model():
    """y[n] = sum(x[n, :]) over float32[N, WIDTH]."""
    return _model(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )


def at_offset(array: np.ndarray, offset: int) -> np.ndarray:
    """A read-only view of `array`'s bytes starting `offset` bytes past a 64-byte line."""
    raw = np.empty(array.nbytes + 2 * ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT + offset
    raw[start : start + array.nbytes] = np.frombuffer(array.tobytes(), dtype=np.uint8)
    return raw[start : start + array.nbytes].view(array.dtype).reshape(array.shape)


# -- the codecs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 1, 3, 4, 16, 33, 60])
def test_binary_tensors_are_aligned_whatever_their_offset(offset: int) -> None:
    buffer = memoryview(at_offset(VALUES, offset).view(np.uint8).reshape(-1))

    for array in (
        aligned_view(buffer, np.dtype(np.float32), VALUES.shape),
        array_from_raw("x", "FP32", VALUES.shape, buffer),
    ):
        assert array.ctypes.data % ALIGNMENT == 0
        assert array.tobytes() == VALUES.tobytes()


def test_an_aligned_buffer_is_not_copied() -> None:
    source = at_offset(VALUES, 0)

    view = aligned_view(memoryview(source.view(np.uint8).reshape(-1)), np.float32, VALUES.shape)

    assert view.ctypes.data == source.ctypes.data


def test_rest_binary_after_an_odd_header_and_tensor_content_are_aligned() -> None:
    x = {"name": "x", "datatype": "FP32", "shape": list(VALUES.shape)}
    header = orjson.dumps({"inputs": [{**x, "parameters": {"binary_data_size": VALUES.nbytes}}]})
    header += b" " * (1 - len(header) % 2)  # odd length: the data starts at an odd address
    request = decode_rest_request(header + VALUES.tobytes(), len(header))
    proto = message_class("tensorflow.TensorProto")()
    encode_tensor(VALUES, "x", into=proto, tensor_content=True)

    for array in (request.inputs["x"], decode_tensor(proto, "x")):
        assert array.ctypes.data % ALIGNMENT == 0
        assert array.tobytes() == VALUES.tobytes()


def test_the_model_is_alignment_sensitive() -> None:
    """The premise, measured on this machine: the runtime's answer depends on where the
    input starts. Skipped on CPUs whose kernels give the same bits at any offset."""
    session = ort.InferenceSession(
        sum_model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    answers = {
        offset: session.run(None, {"x": at_offset(VALUES, offset)})[0].tobytes()
        for offset in (0, 4, 8, 12)
    }
    if len(set(answers.values())) == 1:
        pytest.skip("this CPU's kernels sum the same bits at any alignment")
    assert answers[4] != answers[0]  # a float32 input 4 bytes off a cache line


# -- a real server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> FerryProcess:
    root = tmp_path_factory.mktemp("models")
    write_model(sum_model(), root / "total", 1)
    log = tmp_path_factory.mktemp("logs") / "ferry.log"
    server = FerryProcess([str(root)], log).wait_ready()
    server.wait_version("total", 1)
    yield server
    server.stop()


def v2_rest_binary(server: FerryProcess) -> bytes:
    x = {"name": "x", "datatype": "FP32", "shape": list(VALUES.shape)}
    header = orjson.dumps(
        {
            "inputs": [{**x, "parameters": {"binary_data_size": VALUES.nbytes}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    )
    header += b" " * (1 - len(header) % 2)  # odd: the input starts at an odd offset
    response = server.post(
        "/v2/models/total/infer",
        data=header + VALUES.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    return response.content[length:]


def v2_rest_json(server: FerryProcess) -> bytes:
    x = {"name": "x", "datatype": "FP32", "shape": list(VALUES.shape), "data": VALUES.tolist()}
    body = {"inputs": [x], "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    response = server.post("/v2/models/total/infer", data=orjson.dumps(body))
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    return response.content[length:]


def v2_grpc(server: FerryProcess) -> bytes:
    x = grpcclient.InferInput("x", list(VALUES.shape), "FP32")
    x.set_data_from_numpy(VALUES)
    result = grpcclient.InferenceServerClient(server.grpc_target).infer("total", [x])
    return result.as_numpy("y").astype("<f4").tobytes()


def tf_grpc(server: FerryProcess) -> bytes:
    request = message_class("tensorflow.serving.PredictRequest")()
    request.model_spec.name = "total"
    encode_tensor(VALUES, "x", into=request.inputs["x"], tensor_content=True)
    response_class = message_class("tensorflow.serving.PredictResponse")
    with grpc.insecure_channel(server.grpc_target) as channel:
        rpc = channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        response = rpc(request, timeout=30)
    return decode_tensor(response.outputs["y"], "y").astype("<f4").tobytes()


def test_every_protocol_gives_the_same_bits(server: FerryProcess) -> None:
    session = ort.InferenceSession(
        sum_model().SerializeToString(), providers=["CPUExecutionProvider"]
    )
    expected = session.run(None, {"x": at_offset(VALUES, 0)})[0].astype("<f4").tobytes()

    answers = {
        "v2 rest binary": v2_rest_binary(server),
        "v2 rest json": v2_rest_json(server),
        "v2 grpc": v2_grpc(server),
        "tf grpc": tf_grpc(server),
    }

    assert answers == dict.fromkeys(answers, expected)
