"""The V2 gRPC service `inference.GRPCInferenceService`, checked with plain grpc calls."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.message import Message
from support.models import scale_model, sleepy_model, string_model, two_input_model, write_model
from support.server import FerryProcess

from ferry.protos import message_class

SERVICE = "/inference.GRPCInferenceService/"


def msg(type_name: str, /, **fields) -> Message:
    return message_class(f"inference.{type_name}")(**fields)


class V2Stub:
    """Calls by method name with ferry's own message classes."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel

    def call(self, method: str, request: Message | bytes, response: str, timeout: float = 10):
        rpc = self.channel.unary_unary(SERVICE + method)
        payload = request if isinstance(request, bytes) else request.SerializeToString()
        return message_class(f"inference.{response}").FromString(rpc(payload, timeout=timeout))


@pytest.fixture
def server(model_root: Path, start_server) -> FerryProcess:
    write_model(scale_model(2.0), model_root / "scale", 1)
    write_model(two_input_model(), model_root / "pair", 1)
    write_model(string_model(), model_root / "echo", 1)
    write_model(sleepy_model(iterations=4000), model_root / "sleepy", 1)
    server = start_server(str(model_root), "--enable_model_control")  # repository load/unload
    for model in ("scale", "pair", "echo", "sleepy"):
        server.wait_version(model, 1)
    return server


@pytest.fixture
def stub(server: FerryProcess) -> Iterator[V2Stub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield V2Stub(channel)


def infer_request(model: str, **inputs: np.ndarray) -> Message:
    request = msg("ModelInferRequest", model_name=model)
    for name, array in inputs.items():
        request.inputs.add(name=name, datatype="FP32", shape=array.shape)
        request.raw_input_contents.append(array.astype("<f4").tobytes())
    return request


def infer(stub: V2Stub, request: Message) -> Message:
    return stub.call("ModelInfer", request, "ModelInferResponse")


def assert_status(stub: V2Stub, method: str, request, code: grpc.StatusCode, text: str) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stub.call(method, request, "ServerLiveResponse")
    assert error.value.code() == code, error.value.details()
    assert text in error.value.details()


def assert_still_serving(stub: V2Stub) -> None:
    response = infer(stub, infer_request("scale", x=np.ones((1, 4))))
    assert np.frombuffer(response.raw_output_contents[0], "<f4").tolist() == [2, 2, 2, 2]


def test_health_and_server_metadata(stub: V2Stub) -> None:
    assert stub.call("ServerLive", msg("ServerLiveRequest"), "ServerLiveResponse").live
    assert stub.call("ServerReady", msg("ServerReadyRequest"), "ServerReadyResponse").ready
    metadata = stub.call("ServerMetadata", msg("ServerMetadataRequest"), "ServerMetadataResponse")
    assert metadata.name == "ferry"
    assert "binary_tensor_data" in metadata.extensions
    ready = stub.call("ModelReady", msg("ModelReadyRequest", name="scale"), "ModelReadyResponse")
    assert ready.ready
    versioned = msg("ModelReadyRequest", name="scale", version="1")
    assert stub.call("ModelReady", versioned, "ModelReadyResponse").ready
    missing = msg("ModelReadyRequest", name="scale", version="4")
    assert not stub.call("ModelReady", missing, "ModelReadyResponse").ready


def test_model_metadata_and_config(stub: V2Stub) -> None:
    metadata = stub.call(
        "ModelMetadata", msg("ModelMetadataRequest", name="pair"), "ModelMetadataResponse"
    )
    assert metadata.name == "pair"
    assert list(metadata.versions) == ["1"]
    assert metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("a", "FP32", [-1, 2]),
        ("b", "FP32", [-1, 2]),
    ]
    config = stub.call(
        "ModelConfig", msg("ModelConfigRequest", name="pair", version="1"), "ModelConfigResponse"
    ).config
    assert config.name == "pair"
    assert config.backend == "onnxruntime"
    assert config.max_batch_size == 64
    assert [(i.name, list(i.dims)) for i in config.input] == [("a", [2]), ("b", [2])]
    assert config.HasField("dynamic_batching")
    assert_status(
        stub,
        "ModelMetadata",
        msg("ModelMetadataRequest", name="nope"),
        grpc.StatusCode.NOT_FOUND,
        "nope",
    )


def test_infer_raw_in_raw_out_with_id_and_output_filter(stub: V2Stub) -> None:
    a = np.array([[1, 2], [3, 4]], dtype=np.float32)
    request = infer_request("pair", a=a, b=a)
    request.id = "q-1"
    request.outputs.add(name="prod")

    response = infer(stub, request)

    assert response.model_name == "pair"
    assert response.model_version == "1"
    assert response.id == "q-1"
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("prod", "FP32", [2, 2])
    ]
    product = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(2, 2)
    np.testing.assert_array_equal(product, a * a)


def test_infer_typed_contents_and_bytes(stub: V2Stub) -> None:
    request = msg("ModelInferRequest", model_name="scale", model_version="1")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend([1, 2, 3, 4])

    response = infer(stub, request)

    assert np.frombuffer(response.raw_output_contents[0], "<f4").tolist() == [2, 4, 6, 8]
    text = msg("ModelInferRequest", model_name="echo")
    text.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        [b"ab", b""]
    )
    echoed = infer(stub, text)
    assert echoed.outputs[0].datatype == "BYTES"
    assert echoed.raw_output_contents[0] == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)


@pytest.mark.parametrize(
    ("build", "text"),
    [
        (
            lambda: infer_request("scale", x=np.ones((1, 3))),
            "Expected [-1,4], got [1,3].",
        ),
        (lambda: infer_request("scale", z=np.ones((1, 4))), "unexpected inference input 'z'"),
        (
            lambda: _with_datatype(infer_request("scale", x=np.ones((1, 4))), "FP64"),
            "input byte size mismatch for input 'x' for model 'scale'. Expected 32, got 16",
        ),
        (
            lambda: _typed("scale", "FP64", fp64_contents=[1.0] * 4),
            "inference input 'x' data-type is 'FP64', but model 'scale' expects 'FP32'",
        ),
        (lambda: _typed("scale", "FP32", fp32_contents=[1.0] * 3), "has 3 elements"),
        (lambda: _typed("scale", "FP32", int_contents=[1] * 4), "contents are in 'int_contents'"),
        (lambda: _typed("scale", "FLOAT", fp32_contents=[1.0] * 4), "Unsupported datatype"),
        (lambda: _raw_count_mismatch(), "raw_input_contents has 2 entries"),
        (lambda: infer_request("scale", x=np.ones((1, 4))).SerializeToString()[:-3], "valid"),
        (lambda: b"\xff\xff\xff", "not a valid ModelInferRequest"),
    ],
    ids=[
        "shape",
        "missing",
        "raw-size",
        "dtype",
        "count",
        "wrong-field",
        "datatype",
        "raw-count",
        "truncated",
        "corrupt",
    ],
)
def test_bad_requests_are_invalid_argument(stub: V2Stub, build, text: str) -> None:
    assert_status(stub, "ModelInfer", build(), grpc.StatusCode.INVALID_ARGUMENT, text)
    assert_still_serving(stub)


def _with_datatype(request: Message, datatype: str) -> Message:
    request.inputs[0].datatype = datatype
    return request


def _typed(model: str, datatype: str, **contents) -> Message:
    request = msg("ModelInferRequest", model_name=model)
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[1, 4])
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return request


def _raw_count_mismatch() -> Message:
    request = infer_request("scale", x=np.ones((1, 4)))
    request.raw_input_contents.append(b"")
    return request


def test_unknown_model_is_not_found(stub: V2Stub) -> None:
    assert_status(
        stub,
        "ModelInfer",
        infer_request("nope", x=np.ones((1, 4))),
        grpc.StatusCode.NOT_FOUND,
        "nope",
    )
    assert_status(
        stub,
        "ModelInfer",
        _with_version(infer_request("scale", x=np.ones((1, 4))), "x1"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "version",
    )


def _with_version(request: Message, version: str) -> Message:
    request.model_version = version
    return request


def test_client_deadline_is_honoured(stub: V2Stub) -> None:
    slow = infer_request("sleepy", x=np.ones((1, 4)))
    busy = stub.channel.unary_unary(SERVICE + "ModelInfer").future(
        slow.SerializeToString(), timeout=30
    )
    time.sleep(0.1)  # let the first request start running
    # This one queues behind the running request and cannot finish in 50 ms.
    with pytest.raises(grpc.RpcError) as error:
        stub.call("ModelInfer", slow, "ModelInferResponse", timeout=0.05)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    busy.result()

    # The server gave up on it too (a server ignoring the deadline would have run it).
    stats = stub.call(
        "ModelStatistics", msg("ModelStatisticsRequest", name="sleepy"), "ModelStatisticsResponse"
    ).model_stats[0]
    assert stats.inference_stats.success.count == 1
    assert stats.inference_stats.fail.count == 1
    assert stats.execution_count == 1
    assert_still_serving(stub)


def test_statistics_and_repository(stub: V2Stub) -> None:
    for _ in range(2):
        infer(stub, infer_request("scale", x=np.ones((3, 4))))

    stats = stub.call(
        "ModelStatistics",
        msg("ModelStatisticsRequest", name="scale", version="1"),
        "ModelStatisticsResponse",
    ).model_stats
    assert len(stats) == 1
    assert stats[0].inference_stats.success.count == 2
    assert stats[0].inference_count == 6
    assert stats[0].execution_count == 2
    everything = stub.call(
        "ModelStatistics", msg("ModelStatisticsRequest"), "ModelStatisticsResponse"
    ).model_stats
    assert {s.name for s in everything} == {"scale", "pair", "echo", "sleepy"}

    stub.call(
        "RepositoryModelUnload",
        msg("RepositoryModelUnloadRequest", model_name="pair"),
        "RepositoryModelUnloadResponse",
        timeout=30,
    )
    index = stub.call(
        "RepositoryIndex", msg("RepositoryIndexRequest"), "RepositoryIndexResponse"
    ).models
    assert ("pair", "", "UNAVAILABLE") in {(m.name, m.version, m.state) for m in index}
    assert_status(
        stub,
        "ModelInfer",
        infer_request("pair", a=np.ones((1, 2)), b=np.ones((1, 2))),
        grpc.StatusCode.NOT_FOUND,
        "pair",
    )
    stub.call(
        "RepositoryModelLoad",
        msg("RepositoryModelLoadRequest", model_name="pair"),
        "RepositoryModelLoadResponse",
        timeout=60,
    )
    ready = msg("RepositoryIndexRequest", ready=True)
    index = stub.call("RepositoryIndex", ready, "RepositoryIndexResponse").models
    assert ("pair", "1", "READY") in {(m.name, m.version, m.state) for m in index}
    assert_status(
        stub,
        "RepositoryModelLoad",
        msg("RepositoryModelLoadRequest", model_name="nope"),
        grpc.StatusCode.INTERNAL,  # Triton's code and words
        "failed to load 'nope', failed to poll from model repository",
    )
