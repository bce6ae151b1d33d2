"""NVIDIA's official `tritonclient` (HTTP and gRPC, sync and aio) against a real ferry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpclient_aio
from support.models import scale_model, string_model, two_input_model, write_model
from support.server import FerryProcess
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> FerryProcess:
    root = tmp_path_factory.mktemp("models")
    write_model(scale_model(2.0), root / "scale", 1)
    write_model(two_input_model(), root / "pair", 1)
    write_model(string_model(), root / "echo", 1)
    log = tmp_path_factory.mktemp("logs") / "ferry.log"
    server = FerryProcess([str(root), "--enable_model_control"], log).wait_ready()
    for model in ("scale", "pair", "echo"):
        server.wait_version(model, 1)
    yield server
    server.stop()


def http_client(server: FerryProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")


def grpc_client(server: FerryProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(url=server.grpc_target)


A = np.array([[1, 2], [3, 4]], dtype=np.float32)
B = np.array([[10, 20], [30, 40]], dtype=np.float32)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer(server: FerryProcess, binary: bool) -> None:
    client = http_client(server)
    a = httpclient.InferInput("a", list(A.shape), "FP32")
    a.set_data_from_numpy(A, binary_data=binary)
    b = httpclient.InferInput("b", list(B.shape), "FP32")
    b.set_data_from_numpy(B, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("sum", binary_data=binary),
        httpclient.InferRequestedOutput("prod", binary_data=binary),
    ]

    result = client.infer("pair", [a, b], outputs=outputs, request_id="r1")

    np.testing.assert_array_equal(result.as_numpy("sum"), A + B)
    np.testing.assert_array_equal(result.as_numpy("prod"), A * B)
    assert result.get_response()["id"] == "r1"
    assert result.get_response()["model_version"] == "1"


def test_http_default_call_gets_every_output_binary(server: FerryProcess) -> None:
    client = http_client(server)
    x = httpclient.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))

    result = client.infer("scale", [x])  # no outputs named: the client asks for binary

    np.testing.assert_array_equal(result.as_numpy("y"), np.full((1, 4), 2, dtype=np.float32))
    assert result.get_output("y")["parameters"]["binary_data_size"] == 16


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_bytes(server: FerryProcess, binary: bool) -> None:
    client = http_client(server)
    text = np.array([b"hello", "é".encode()], dtype=object)
    t = httpclient.InferInput("text", [2], "BYTES")
    t.set_data_from_numpy(text, binary_data=binary)

    result = client.infer(
        "echo", [t], outputs=[httpclient.InferRequestedOutput("text_bytes", binary_data=binary)]
    )

    # tritonclient (against Triton too) gives JSON BYTES back as str, binary ones as bytes.
    expected = list(text) if binary else [item.decode() for item in text]
    assert list(result.as_numpy("text_bytes")) == expected


def test_http_metadata_config_health_and_stats(server: FerryProcess) -> None:
    client = http_client(server)

    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("scale")
    assert not client.is_model_ready("nope")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("scale")
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    config = client.get_model_config("scale")
    assert config["max_batch_size"] > 0
    assert config["input"][0]["dims"] == [4]
    stats = client.get_inference_statistics("scale")
    assert stats["model_stats"][0]["name"] == "scale"
    with pytest.raises(InferenceServerException, match="nope"):
        client.get_model_metadata("nope")


def test_http_repository(server: FerryProcess) -> None:
    client = http_client(server)

    client.unload_model("echo")
    assert not client.is_model_ready("echo")
    client.load_model("echo")
    assert client.is_model_ready("echo")
    index = client.get_model_repository_index()
    assert {"name": "echo", "version": "1", "state": "READY", "reason": ""} in index


def test_http_error_is_raised_with_the_servers_message(server: FerryProcess) -> None:
    client = http_client(server)
    x = httpclient.InferInput("x", [1, 3], "FP32")
    x.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))

    with pytest.raises(InferenceServerException, match=r"Expected \[-1,4\], got \[1,3\]"):
        client.infer("scale", [x])


@pytest.mark.parametrize("typed_contents", [False, True], ids=["raw", "contents"])
def test_grpc_infer(server: FerryProcess, typed_contents: bool) -> None:
    client = grpc_client(server)
    a = grpcclient.InferInput("a", list(A.shape), "FP32")
    a.set_data_from_numpy(A)
    b = grpcclient.InferInput("b", list(B.shape), "FP32")
    b.set_data_from_numpy(B)
    if typed_contents:
        # tritonclient sends raw contents; move the data into typed contents by hand.
        for tensor, array in ((a, A), (b, B)):
            tensor._raw_content = None
            tensor._input.contents.fp32_contents[:] = array.reshape(-1).tolist()

    result = client.infer(
        "pair",
        [a, b],
        outputs=[grpcclient.InferRequestedOutput("sum")],
        request_id="g1",
        client_timeout=10,
    )

    np.testing.assert_array_equal(result.as_numpy("sum"), A + B)
    assert result.as_numpy("prod") is None
    assert result.get_response().id == "g1"


def test_grpc_bytes_and_metadata(server: FerryProcess) -> None:
    client = grpc_client(server)
    text = np.array([b"hi", b"there"], dtype=object)
    t = grpcclient.InferInput("text", [2], "BYTES")
    t.set_data_from_numpy(text)

    result = client.infer("echo", [t])

    assert list(result.as_numpy("text_bytes")) == list(text)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("echo")
    assert not client.is_model_ready("nope")
    assert "statistics" in client.get_server_metadata().extensions
    metadata = client.get_model_metadata("scale")
    assert metadata.platform == "onnxruntime_onnx"
    assert list(metadata.inputs[0].shape) == [-1, 4]
    config = client.get_model_config("scale").config
    assert config.input[0].data_type == 11  # TYPE_FP32
    assert list(config.input[0].dims) == [4]
    stats = client.get_inference_statistics("echo")
    assert stats.model_stats[0].inference_stats.success.count >= 1


def test_grpc_repository_and_errors(server: FerryProcess) -> None:
    client = grpc_client(server)

    client.unload_model("scale")
    assert not client.is_model_ready("scale")
    client.load_model("scale")
    assert client.is_model_ready("scale")
    names = {m.name for m in client.get_model_repository_index().models}
    assert names == {"scale", "pair", "echo"}
    x = grpcclient.InferInput("x", [1, 4], "FP64")
    x.set_data_from_numpy(np.ones((1, 4), dtype=np.float64))
    with pytest.raises(InferenceServerException, match="FP64") as error:
        client.infer("scale", [x])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_metadata("nope")
    assert missing.value.status() == "StatusCode.NOT_FOUND"


def test_aio_clients(server: FerryProcess) -> None:
    x_data = np.arange(8, dtype=np.float32).reshape(2, 4)

    async def run() -> tuple[np.ndarray, np.ndarray]:
        http = httpclient_aio.InferenceServerClient(url=f"127.0.0.1:{server.port}")
        grpc = grpcclient_aio.InferenceServerClient(url=server.grpc_target)
        try:
            assert await http.is_server_ready()
            assert await grpc.is_server_ready()
            hx = httpclient_aio.InferInput("x", [2, 4], "FP32")
            hx.set_data_from_numpy(x_data)
            gx = grpcclient_aio.InferInput("x", [2, 4], "FP32")
            gx.set_data_from_numpy(x_data)
            by_http, by_grpc = await asyncio.gather(
                http.infer("scale", [hx]), grpc.infer("scale", [gx])
            )
            return by_http.as_numpy("y"), by_grpc.as_numpy("y")
        finally:
            await http.close()
            await grpc.close()

    by_http, by_grpc = asyncio.run(run())

    np.testing.assert_array_equal(by_http, x_data * 2)
    np.testing.assert_array_equal(by_grpc, x_data * 2)


def test_tritonclient_messages_parse_as_ferrys(tmp_path: Path) -> None:
    """Wire compatibility without a server: tritonclient's encoding of every message kind
    ferry reads parses into ferry's classes with the same fields."""
    from tritonclient.grpc import service_pb2

    from ferry.protos import message_class

    request = service_pb2.ModelInferRequest(model_name="m", model_version="3", id="i")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    tensor.parameters["p"].int64_param = 5
    tensor.contents.fp32_contents.extend([1.0, 2.0])
    request.outputs.add(name="y").parameters["binary_data"].bool_param = True
    request.raw_input_contents.append(b"\x00\x01")
    request.parameters["timeout"].int64_param = 7

    ours = message_class("inference.ModelInferRequest").FromString(request.SerializeToString())

    assert ours.model_name == "m"
    assert ours.model_version == "3"
    assert ours.inputs[0].name == "x"
    assert list(ours.inputs[0].shape) == [1, 2]
    assert list(ours.inputs[0].contents.fp32_contents) == [1.0, 2.0]
    assert ours.inputs[0].parameters["p"].int64_param == 5
    assert ours.outputs[0].parameters["binary_data"].bool_param
    assert list(ours.raw_input_contents) == [b"\x00\x01"]
    assert ours.parameters["timeout"].int64_param == 7


def test_every_ferry_inference_field_has_tritons_number_and_type() -> None:
    """ferry's `inference` protos are a subset of Triton's: same names, numbers, types."""
    from google.protobuf.descriptor import Descriptor
    from tritonclient.grpc import service_pb2

    from ferry.protos import pool

    theirs_pool = service_pb2.DESCRIPTOR.pool
    ours_file = pool().FindFileByName("inference/grpc_predict_v2.proto")
    config_file = pool().FindFileByName("inference/model_config.proto")

    def compare(ours: Descriptor) -> int:
        theirs = theirs_pool.FindMessageTypeByName(ours.full_name)
        checked = 0
        for field in ours.fields:
            match = theirs.fields_by_name[field.name]
            assert (field.number, field.type, field.is_repeated) == (
                match.number,
                match.type,
                match.is_repeated,
            ), f"{ours.full_name}.{field.name}"
            checked += 1
        return checked + sum(compare(nested) for nested in ours.nested_types)

    messages = [*ours_file.message_types_by_name.values()]
    messages += [*config_file.message_types_by_name.values()]
    assert sum(compare(message) for message in messages) > 100
    ours_service = ours_file.services_by_name["GRPCInferenceService"]
    theirs_service = theirs_pool.FindServiceByName("inference.GRPCInferenceService")
    for method in ours_service.methods:
        match = theirs_service.methods_by_name[method.name]
        assert method.input_type.full_name == match.input_type.full_name
        assert method.output_type.full_name == match.output_type.full_name
    their_types = theirs_pool.FindEnumTypeByName("inference.DataType").values_by_name
    for value in config_file.enum_types_by_name["DataType"].values:
        assert their_types[value.name].number == value.number
