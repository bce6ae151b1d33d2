"""V2 errors in Triton's words and codes, as tritonclient (HTTP and gRPC, sync and aio)
and plain HTTP see them. The texts are Triton's (core model_lifecycle.cc,
model_repository_manager.cc, infer_request.cc; server common.cc, http_server.cc,
grpc/infer_handler.cc): clients and Triton's own tests match on them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpclient_aio
from support.models import scale_model, two_input_model, write_model
from support.server import FerryProcess
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

UNKNOWN = "Request for unknown model: 'nope' is not found"
ONES = np.ones((1, 4), dtype=np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> FerryProcess:
    root = tmp_path_factory.mktemp("models")
    write_model(scale_model(1.0), root / "scale", 1)
    write_model(scale_model(2.0), root / "scale", 2)  # the latest policy serves 2 only
    write_model(two_input_model(), root / "pair", 1)
    write_model(scale_model(3.0), root / "spare", 1)  # unloaded by one test
    log = tmp_path_factory.mktemp("logs") / "ferry.log"
    server = FerryProcess([str(root), "--enable_model_control"], log).wait_ready()
    for model, version in (("scale", 2), ("pair", 1), ("spare", 1)):
        server.wait_version(model, version)
    yield server
    server.stop()


def http(server: FerryProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")


def grpc_(server: FerryProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(url=server.grpc_target)


def http_x(array: np.ndarray = ONES, name: str = "x", datatype: str = "FP32", binary=True):
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def grpc_x(array: np.ndarray = ONES, name: str = "x", datatype: str = "FP32"):
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def raised(call: Callable[[], object]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as error:
        call()
    return error.value


# -- unknown models and versions ---------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer_on_an_unknown_model(server: FerryProcess, binary: bool) -> None:
    error = raised(lambda: http(server).infer("nope", [http_x(binary=binary)]))

    assert error.message() == UNKNOWN
    assert error.status() == "404"


def test_grpc_infer_on_an_unknown_model(server: FerryProcess) -> None:
    error = raised(lambda: grpc_(server).infer("nope", [grpc_x()]))

    assert error.message() == UNKNOWN
    assert error.status() == "StatusCode.NOT_FOUND"


def test_unknown_model_comes_before_a_bad_body(server: FerryProcess) -> None:
    """Triton looks the model up before it parses the body, so a client sending junk to a
    missing model learns that the model is missing."""
    response = server.post("/v2/models/nope/infer", data=b"{not json")

    assert (response.status_code, response.json()) == (404, {"error": UNKNOWN})


def test_unknown_version_over_both_protocols(server: FerryProcess) -> None:
    text = "Request for unknown model: 'scale' version 1 is not found"  # on disk, not served
    http_error = raised(lambda: http(server).infer("scale", [http_x()], model_version="1"))
    grpc_error = raised(lambda: grpc_(server).infer("scale", [grpc_x()], model_version="1"))

    assert (http_error.message(), http_error.status()) == (text, "404")
    assert (grpc_error.message(), grpc_error.status()) == (text, "StatusCode.NOT_FOUND")


def test_metadata_and_config_of_an_unknown_model(server: FerryProcess) -> None:
    for call in (
        lambda: http(server).get_model_metadata("nope"),
        lambda: http(server).get_model_config("nope"),
    ):
        error = raised(call)
        assert (error.message(), error.status()) == (UNKNOWN, "404")
    for call in (
        lambda: grpc_(server).get_model_metadata("nope"),
        lambda: grpc_(server).get_model_config("nope"),
    ):
        error = raised(call)
        assert (error.message(), error.status()) == (UNKNOWN, "StatusCode.NOT_FOUND")
    versioned = raised(lambda: http(server).get_model_metadata("scale", "9"))
    assert versioned.message() == "Request for unknown model: 'scale' version 9 is not found"


def test_ready_of_an_unknown_model(server: FerryProcess) -> None:
    response = server.get("/v2/models/nope/ready")

    assert (response.status_code, response.json()) == (400, {"error": "Model version not ready"})
    assert not http(server).is_model_ready("nope")
    assert not grpc_(server).is_model_ready("nope")
    assert not grpc_(server).is_model_ready("scale", "1")


def test_aio_clients_get_tritons_words(server: FerryProcess) -> None:
    async def both() -> tuple[InferenceServerException, InferenceServerException]:
        async with httpclient_aio.InferenceServerClient(url=f"127.0.0.1:{server.port}") as h:
            x = httpclient_aio.InferInput("x", [1, 4], "FP32")
            x.set_data_from_numpy(ONES)
            with pytest.raises(InferenceServerException) as http_error:
                await h.infer("nope", [x])
        async with grpcclient_aio.InferenceServerClient(url=server.grpc_target) as g:
            with pytest.raises(InferenceServerException) as grpc_error:
                await g.infer("nope", [grpc_x()])
        return http_error.value, grpc_error.value

    http_error, grpc_error = asyncio.run(both())

    assert (http_error.message(), http_error.status()) == (UNKNOWN, "404")
    assert (grpc_error.message(), grpc_error.status()) == (UNKNOWN, "StatusCode.NOT_FOUND")


def test_a_model_unloaded_has_no_available_versions(server: FerryProcess) -> None:
    http(server).unload_model("spare")
    try:
        error = raised(lambda: http(server).infer("spare", [http_x()]))
        assert error.message() == "Request for unknown model: 'spare' has no available versions"
        assert error.status() == "404"
    finally:
        http(server).load_model("spare")
    assert http(server).infer("spare", [http_x()]).as_numpy("y").tolist() == [[3, 3, 3, 3]]


# -- version strings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "text"),
    [
        (
            "abc",
            "failed to get model version from specified version string 'abc' (details: stol), "
            "version should be an integral value > 0",
        ),
        ("-1", "invalid model version specified '-1' , version should be an integral value > 0"),
    ],
)
def test_grpc_invalid_version_strings(server: FerryProcess, version: str, text: str) -> None:
    for call in (
        lambda: grpc_(server).infer("scale", [grpc_x()], model_version=version),
        lambda: grpc_(server).get_model_metadata("scale", version),
    ):
        error = raised(call)
        assert (error.message(), error.status()) == (text, "StatusCode.INVALID_ARGUMENT")


def test_rest_version_that_is_not_a_number_is_not_a_route(server: FerryProcess) -> None:
    for response in (
        server.get("/v2/models/scale/versions/abc"),
        server.post("/v2/models/scale/versions/abc/infer", json={}),
    ):
        assert (response.status_code, response.json()) == (404, {"error": "Not Found"})


# -- inputs ------------------------------------------------------------------------------------


def test_wrong_input_count(server: FerryProcess) -> None:
    text = (
        "[request id: <id_unknown>] expected 2 inputs but got 1 inputs for model 'pair'. Got "
        "input(s) ['a'], but missing required input(s) ['b']. Please provide all required "
        "input(s)."
    )
    pair = np.ones((1, 2), dtype=np.float32)
    http_error = raised(lambda: http(server).infer("pair", [http_x(pair, "a")]))
    grpc_error = raised(lambda: grpc_(server).infer("pair", [grpc_x(pair, "a")]))

    assert (http_error.message(), http_error.status()) == (text, "400")
    assert (grpc_error.message(), grpc_error.status()) == (text, "StatusCode.INVALID_ARGUMENT")


def test_unknown_input_name_datatype_and_shape(server: FerryProcess) -> None:
    client = http(server)

    name = raised(lambda: client.infer("scale", [http_x(name="z")]))
    datatype = raised(
        lambda: client.infer(
            "scale", [http_x(ONES.astype(np.float64), datatype="FP64")], request_id="r7"
        )
    )
    shape = raised(lambda: client.infer("scale", [http_x(np.ones((1, 3), np.float32))]))

    assert name.message() == "unexpected inference input 'z' for model 'scale'"
    assert datatype.message() == (
        "[request id: r7] inference input 'x' data-type is 'FP64', but model 'scale' expects 'FP32'"
    )
    assert shape.message().startswith(
        "[request id: <id_unknown>] unexpected shape for input 'x' for model 'scale'. "
        "Expected [-1,4], got [1,3]. NOTE: Setting a non-zero max_batch_size"
    )
    assert {e.status() for e in (name, datatype, shape)} == {"400"}


def test_unknown_output(server: FerryProcess) -> None:
    wanted = [grpcclient.InferRequestedOutput("nope")]

    error = raised(lambda: grpc_(server).infer("scale", [grpc_x()], outputs=wanted))

    assert error.message() == "unexpected inference output 'nope' for model 'scale'"


def raw_request(**fields) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="pair")
    for name in ("a", "b"):
        request.inputs.add(name=name, datatype="FP32", shape=[1, 2])
    for key, value in fields.items():
        setattr(request, key, value)
    return request


def grpc_call(server: FerryProcess, request: service_pb2.ModelInferRequest):
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.ModelInfer(request, timeout=10)
    return error.value.code().name, error.value.details()


def test_grpc_raw_contents_mixed_with_typed_contents(server: FerryProcess) -> None:
    request = raw_request()
    request.raw_input_contents.append(np.ones(2, "<f4").tobytes())
    request.raw_input_contents.append(np.ones(2, "<f4").tobytes())
    request.inputs[1].contents.fp32_contents.extend([1.0, 2.0])

    assert grpc_call(server, request) == (
        "INVALID_ARGUMENT",
        "contents field must not be specified when using raw_input_contents for 'b' for "
        "model 'pair'",
    )


def test_grpc_input_without_data(server: FerryProcess) -> None:
    one_raw = raw_request()
    one_raw.raw_input_contents.append(np.ones(2, "<f4").tobytes())

    assert grpc_call(server, one_raw) == (
        "INVALID_ARGUMENT",
        "unable to find data for input tensor 'b' for model 'pair' in request.",
    )
    assert grpc_call(server, raw_request())[1] == (
        "unable to find data for input tensor 'a' for model 'pair' in request."
    )


def test_rest_binary_data_missing_and_of_the_wrong_size(server: FerryProcess) -> None:
    def post(size: int, data: bytes, with_length: bool = True):
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "FP32",
                        "shape": [1, 4],
                        "parameters": {"binary_data_size": size},
                    }
                ]
            }
        )
        headers = {"Inference-Header-Content-Length": str(len(header))} if with_length else {}
        return server.post("/v2/models/scale/infer", data=header + data, headers=headers)

    missing = post(16, b"\x00" * 4)
    wrong = post(12, b"\x00" * 12)
    no_length = post(16, b"", with_length=False)

    assert (missing.status_code, missing.json()["error"]) == (
        400,
        "unexpected size for input 'x', expecting 12 additional bytes for model 'scale'",
    )
    assert (wrong.status_code, wrong.json()["error"]) == (
        400,
        "[request id: <id_unknown>] input byte size mismatch for input 'x' for model "
        "'scale'. Expected 16, got 12",
    )
    assert no_length.json()["error"] == (
        "must specify valid 'Infer-Header-Content-Length' in request header and "
        "'binary_data_size' when passing inputs in binary data format"
    )


# -- model repository --------------------------------------------------------------------------


def test_load_of_an_unknown_model(server: FerryProcess) -> None:
    text = "failed to load 'nope', failed to poll from model repository"
    http_error = raised(lambda: http(server).load_model("nope"))
    grpc_error = raised(lambda: grpc_(server).load_model("nope"))

    assert (http_error.message(), http_error.status()) == (text, "500")
    assert (grpc_error.message(), grpc_error.status()) == (text, "StatusCode.INTERNAL")


def test_unload_of_an_unknown_model_does_nothing(server: FerryProcess) -> None:
    http(server).unload_model("nope")  # Triton: no error
    grpc_(server).unload_model("nope")

    assert http(server).infer("scale", [http_x()]).as_numpy("y").tolist() == [[2, 2, 2, 2]]


def test_the_path_under_v2_that_is_no_route(server: FerryProcess) -> None:
    response = server.post("/v2/nothing/here")

    assert (response.status_code, response.json()) == (404, {"error": "Not Found"})
