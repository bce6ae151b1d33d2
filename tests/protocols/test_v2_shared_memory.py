"""Triton's system shared memory extension over V2 REST and gRPC, driven as Triton's
simple_http_shm_client, simple_grpc_shm_client and simple_grpc_shm_string_client drive
it: regions made with tritonclient.utils.shared_memory, registered, named by inputs and
outputs, read back from the region, unregistered; errors in Triton's words."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from support.models import write_model
from support.server import FerryProcess
from support.triton_repository import simple_model, simple_string_model
from tritonclient.utils import (
    InferenceServerException,
    serialize_byte_tensor,
    serialized_byte_size,
)

BYTE_SIZE = 16 * 4  # one [1, 16] INT32 tensor


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    root = tmp_path_factory.mktemp("models")
    write_model(simple_model(), root / "simple", 1)
    write_model(simple_string_model(), root / "simple_string", 1)
    log = tmp_path_factory.mktemp("logs") / "ferry.log"
    server = FerryProcess([str(root), "--allow_client_shm", "loopback"], log).wait_ready()
    server.wait_version("simple", 1)
    server.wait_version("simple_string", 1)
    yield server
    server.stop()


@pytest.fixture
def regions() -> Iterator[dict]:
    """Input and output regions like the examples' (two tensors each), unique to this
    test process; destroyed afterwards."""
    tag = f"ferry_test_{os.getpid()}"
    handles = {
        "input": shm.create_shared_memory_region("input_data", f"/{tag}_in", BYTE_SIZE * 2),
        "output": shm.create_shared_memory_region("output_data", f"/{tag}_out", BYTE_SIZE * 2),
    }
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    shm.set_shared_memory_region(handles["input"], [a])
    shm.set_shared_memory_region(handles["input"], [b], offset=BYTE_SIZE)
    yield {"tag": tag, "handles": handles, "a": a, "b": b}
    for handle in handles.values():
        shm.destroy_shared_memory_region(handle)


def _register(client, tag: str) -> None:
    client.unregister_system_shared_memory()
    client.unregister_cuda_shared_memory()
    client.register_system_shared_memory("output_data", f"/{tag}_out", BYTE_SIZE * 2)
    client.register_system_shared_memory("input_data", f"/{tag}_in", BYTE_SIZE * 2)


def _check_outputs(results, regions: dict) -> None:
    out = regions["handles"]["output"]
    output0, output1 = results.get_output("OUTPUT0"), results.get_output("OUTPUT1")
    assert output0 is not None and output1 is not None
    # The data is in the region, not in the answer.
    if isinstance(output0, dict):  # HTTP
        assert "data" not in output0 and "binary_data_size" not in output0.get("parameters", {})
        datatype, shape = output0["datatype"], output0["shape"]
    else:
        assert list(results.get_response().raw_output_contents) == [b"", b""]
        datatype, shape = output0.datatype, list(output0.shape)
    assert (datatype, shape) == ("INT32", [1, 16])
    total = shm.get_contents_as_numpy(out, np.int32, [1, 16])
    difference = shm.get_contents_as_numpy(out, np.int32, [1, 16], offset=BYTE_SIZE)
    np.testing.assert_array_equal(total, regions["a"] + regions["b"])
    np.testing.assert_array_equal(difference, regions["a"] - regions["b"])


def test_http_shm_client_flow(server: FerryProcess, regions: dict) -> None:
    client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    _register(client, regions["tag"])
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32")]
    inputs.append(httpclient.InferInput("INPUT1", [1, 16], "INT32"))
    inputs[0].set_shared_memory("input_data", BYTE_SIZE)
    inputs[1].set_shared_memory("input_data", BYTE_SIZE, offset=BYTE_SIZE)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)]
    outputs.append(httpclient.InferRequestedOutput("OUTPUT1", binary_data=True))
    outputs[0].set_shared_memory("output_data", BYTE_SIZE)
    outputs[1].set_shared_memory("output_data", BYTE_SIZE, offset=BYTE_SIZE)
    results = client.infer("simple", inputs, outputs=outputs)
    _check_outputs(results, regions)
    status = client.get_system_shared_memory_status()
    assert sorted(status, key=lambda r: r["name"]) == [
        {"name": "input_data", "key": f"/{regions['tag']}_in", "offset": 0, "byte_size": 128},
        {"name": "output_data", "key": f"/{regions['tag']}_out", "offset": 0, "byte_size": 128},
    ]
    assert client.get_system_shared_memory_status("input_data")[0]["name"] == "input_data"
    assert client.get_cuda_shared_memory_status() == []
    client.unregister_system_shared_memory("input_data")
    assert [r["name"] for r in client.get_system_shared_memory_status()] == ["output_data"]
    client.unregister_system_shared_memory()
    assert client.get_system_shared_memory_status() == []
    client.close()


def test_grpc_shm_client_flow(server: FerryProcess, regions: dict) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_target)
    _register(client, regions["tag"])
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32")]
    inputs.append(grpcclient.InferInput("INPUT1", [1, 16], "INT32"))
    inputs[0].set_shared_memory("input_data", BYTE_SIZE)
    inputs[1].set_shared_memory("input_data", BYTE_SIZE, offset=BYTE_SIZE)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0")]
    outputs.append(grpcclient.InferRequestedOutput("OUTPUT1"))
    outputs[0].set_shared_memory("output_data", BYTE_SIZE)
    outputs[1].set_shared_memory("output_data", BYTE_SIZE, offset=BYTE_SIZE)
    results = client.infer("simple", inputs, outputs=outputs)
    _check_outputs(results, regions)
    status = client.get_system_shared_memory_status(as_json=True)["regions"]
    assert status["input_data"] == {
        "name": "input_data",
        "key": f"/{regions['tag']}_in",
        "byte_size": "128",  # uint64 in protobuf's JSON form
    }
    client.unregister_system_shared_memory()
    assert client.get_system_shared_memory_status(as_json=True) == {}
    client.close()


def test_grpc_mixes_region_and_raw_inputs_and_outputs(server: FerryProcess, regions: dict) -> None:
    """An input in a region takes no raw_input_contents entry; an output not in a region
    comes back as usual."""
    client = grpcclient.InferenceServerClient(server.grpc_target)
    _register(client, regions["tag"])
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32")]
    inputs.append(grpcclient.InferInput("INPUT1", [1, 16], "INT32"))
    inputs[0].set_shared_memory("input_data", BYTE_SIZE)
    inputs[1].set_data_from_numpy(np.full((1, 16), 5, dtype=np.int32))
    outputs = [
        grpcclient.InferRequestedOutput("OUTPUT0"),
        grpcclient.InferRequestedOutput("OUTPUT1"),
    ]
    outputs[1].set_shared_memory("output_data", BYTE_SIZE)
    results = client.infer("simple", inputs, outputs=outputs)
    np.testing.assert_array_equal(results.as_numpy("OUTPUT0"), regions["a"] + 5)
    difference = shm.get_contents_as_numpy(regions["handles"]["output"], np.int32, [1, 16])
    np.testing.assert_array_equal(difference, regions["a"] - 5)
    client.unregister_system_shared_memory()
    client.close()


def test_grpc_shm_string_client_flow(server: FerryProcess) -> None:
    tag = f"ferry_test_{os.getpid()}_str"
    numbers = np.arange(16, dtype=np.int32)
    in0 = serialize_byte_tensor(np.array([str(x).encode() for x in numbers], dtype=object))
    in1 = serialize_byte_tensor(np.array([b"1"] * 16, dtype=object))
    total = np.array([str(x + 1).encode() for x in numbers], dtype=object)
    out_size = serialized_byte_size(serialize_byte_tensor(total))
    sizes = {"in0": serialized_byte_size(in0), "in1": serialized_byte_size(in1), "out": out_size}
    handles = {
        name: shm.create_shared_memory_region(f"{name}_data", f"/{tag}_{name}", size)
        for name, size in sizes.items()
    }
    client = grpcclient.InferenceServerClient(server.grpc_target)
    try:
        shm.set_shared_memory_region(handles["in0"], [in0])
        shm.set_shared_memory_region(handles["in1"], [in1])
        for name, size in sizes.items():
            client.register_system_shared_memory(f"{name}_data", f"/{tag}_{name}", size)
        inputs = [grpcclient.InferInput("INPUT0", [1, 16], "BYTES")]
        inputs.append(grpcclient.InferInput("INPUT1", [1, 16], "BYTES"))
        inputs[0].set_shared_memory("in0_data", sizes["in0"])
        inputs[1].set_shared_memory("in1_data", sizes["in1"])
        outputs = [grpcclient.InferRequestedOutput("OUTPUT0")]
        outputs[0].set_shared_memory("out_data", out_size)
        results = client.infer("simple_string", inputs, outputs=outputs)
        output0 = results.get_output("OUTPUT0")
        got = shm.get_contents_as_numpy(handles["out"], np.object_, list(output0.shape))
        assert got.reshape(-1).tolist() == total.tolist()
    finally:
        client.unregister_system_shared_memory()
        client.close()
        for handle in handles.values():
            shm.destroy_shared_memory_region(handle)


def _error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as error:
        call()
    return error.value


def test_errors_in_tritons_words(server: FerryProcess, regions: dict) -> None:
    http = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
    grpc_client = grpcclient.InferenceServerClient(server.grpc_target)
    _register(http, regions["tag"])
    key = f"/{regions['tag']}_in"
    again = _error(lambda: grpc_client.register_system_shared_memory("input_data", key, 8))
    assert again.message() == "shared memory region 'input_data' already in manager"
    assert again.status() == "StatusCode.ALREADY_EXISTS"
    unknown = _error(lambda: http.get_system_shared_memory_status("nope"))
    assert unknown.message() == "Unable to find system shared memory region: 'nope'"
    assert unknown.status() == "404"
    missing = _error(lambda: http.register_system_shared_memory("gone", "/ferry_no_such", 8))
    assert missing.message() == "Unable to open shared memory region: '/ferry_no_such'"
    cuda = _error(lambda: grpc_client.register_cuda_shared_memory("c", b"\0" * 64, 0, 8))
    assert cuda.message() == "failed to register CUDA shared memory region: 'c', GPUs not supported"
    grpc_client.unregister_cuda_shared_memory()  # nothing registered: succeeds, as in Triton

    def infer(region: str, byte_size: int, offset: int = 0, output_size: int = BYTE_SIZE):
        inputs = [grpcclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        inputs[0].set_shared_memory(region, byte_size, offset)
        inputs[1].set_shared_memory("input_data", BYTE_SIZE, offset=BYTE_SIZE)
        outputs = [grpcclient.InferRequestedOutput("OUTPUT0")]
        outputs[0].set_shared_memory("output_data", output_size)
        return grpc_client.infer("simple", inputs, outputs=outputs)

    assert _error(lambda: infer("zzz", BYTE_SIZE)).message() == (
        "Unable to find shared memory region: 'zzz'"
    )
    assert _error(lambda: infer("input_data", BYTE_SIZE, offset=4096)).message() == (
        "Invalid offset for shared memory region: 'input_data'"
    )
    assert _error(lambda: infer("input_data", BYTE_SIZE * 2, offset=BYTE_SIZE)).message() == (
        "Invalid offset + byte size for shared memory region: 'input_data'"
    )
    assert _error(lambda: infer("input_data", BYTE_SIZE, output_size=8)).message() == (
        "shared memory size specified with the request for output 'OUTPUT0' (8 bytes) "
        "should be at least 64 bytes to hold the results"
    )
    infer("input_data", BYTE_SIZE)  # and the server still answers
    http.unregister_system_shared_memory()
    http.close()
    grpc_client.close()


def test_server_metadata_advertises_the_extension(server: FerryProcess) -> None:
    extensions = requests.get(f"{server.url}/v2", timeout=5).json()["extensions"]
    assert "system_shared_memory" in extensions
    grpc_client = grpcclient.InferenceServerClient(server.grpc_target)
    assert "system_shared_memory" in grpc_client.get_server_metadata().extensions
    grpc_client.close()
