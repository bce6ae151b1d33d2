"""MultiInference cannot multiply one request into many model runs or much memory: a
request naming one signature 200,000 times is refused at the second task, before any
run, and a large context merged into many examples is refused by --max_tensor_bytes
before a copy is made; a good client stays served throughout."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.models import scale_model, write_model
from support.security import GoodClient, RssWatch
from support.server import FerryProcess

from ferry.protos import message_class

CLASSIFY = "tensorflow/serving/classify"
ATTACKED = "examples"


def classify_shaped_model() -> onnx.ModelProto:
    """`inputs` (serialized tf.Examples, STRING[N]) -> `scores` FLOAT[N, 1] of 0.5: the
    shape TF Serving's Classify wants, whatever the examples hold."""
    nodes = [
        helper.make_node("Shape", ["inputs"], ["rows"]),
        helper.make_node("Concat", ["rows", "one"], ["shape"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["scores"],
            value=helper.make_tensor("half", TensorProto.FLOAT, [1], [0.5]),
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "classify_shaped",
        [helper.make_tensor_value_info("inputs", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    root = tmp_path_factory.mktemp("multi") / "models"
    write_model(classify_shaped_model(), root / ATTACKED, 1)
    write_model(scale_model(2.0), root / "good", 1)
    log_path = tmp_path_factory.mktemp("log") / "ferry.log"
    process = FerryProcess([str(root), "--file_system_poll_wait_seconds", "0"], log_path)
    try:
        process.wait_ready(timeout=60)
        process.wait_version(ATTACKED, 1)
        process.wait_version("good", 1)
        yield process
    finally:
        process.stop()


def executions(server: FerryProcess) -> int:
    stats = server.get(f"/v2/models/{ATTACKED}/stats").json()["model_stats"]
    return sum(entry["execution_count"] for entry in stats)


def multi_inference(server: FerryProcess, request) -> grpc.RpcError | None:
    response_class = message_class("tensorflow.serving.MultiInferenceResponse")
    with grpc.insecure_channel(
        server.grpc_target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    ) as channel:
        call = channel.unary_unary(
            "/tensorflow.serving.PredictionService/MultiInference",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        try:
            call(request, timeout=10)
        except grpc.RpcError as error:
            return error
    return None


def good_client(server: FerryProcess) -> GoodClient:
    return GoodClient(f"{server.url}/v1/models/good:predict", {"instances": [[1.0] * 4]})


def test_the_same_signature_many_times_is_refused_before_any_run(server: FerryProcess) -> None:
    request = message_class("tensorflow.serving.MultiInferenceRequest")()
    for _ in range(200_000):
        task = request.tasks.add()
        task.model_spec.name = ATTACKED
        task.method_name = CLASSIFY
    request.input.example_list.examples.add()
    before = executions(server)

    with good_client(server) as client:
        started = time.monotonic()
        error = multi_inference(server, request)
        elapsed = time.monotonic() - started
        time.sleep(0.3)

    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Duplicate evaluation of signature: serving_default"
    assert elapsed < 5, f"the refusal took {elapsed:.1f}s"
    assert executions(server) == before, "a task of the refused request ran"
    client.assert_served()


def test_a_context_merged_into_many_examples_is_refused_before_copying(
    server: FerryProcess,
) -> None:
    request = message_class("tensorflow.serving.MultiInferenceRequest")()
    task = request.tasks.add()
    task.model_spec.name = ATTACKED
    task.method_name = CLASSIFY
    with_context = request.input.example_list_with_context
    with_context.context.features.feature["blob"].bytes_list.value.append(b"\x00" * 2**20)
    for _ in range(4000):  # 4000 copies of a 1 MiB context: 4 GiB if merged
        with_context.examples.add()
    before = executions(server)

    with good_client(server) as client, RssWatch(server.pid) as rss:
        error = multi_inference(server, request)
        time.sleep(0.3)

    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("4000 tf.Examples with the ")
    assert error.details().endswith("bytes (--max_tensor_bytes)")
    assert executions(server) == before
    rss.assert_bounded()
    client.assert_served()


def test_a_good_multi_inference_request_runs_each_task(server: FerryProcess) -> None:
    """The control: the same model answers a well-formed request."""
    request = message_class("tensorflow.serving.MultiInferenceRequest")()
    task = request.tasks.add()
    task.model_spec.name = ATTACKED
    task.method_name = CLASSIFY
    request.input.example_list.examples.add()
    before = executions(server)

    assert multi_inference(server, request) is None
    assert executions(server) == before + 1
