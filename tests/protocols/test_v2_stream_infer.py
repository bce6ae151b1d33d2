"""gRPC ModelStreamInfer, as tritonclient's stream examples and perf_analyzer --streaming
use it: one answer per request, in request order, errors in the stream without ending
it, and at most --grpc_max_in_flight_per_stream requests of a stream in flight."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aio_grpcclient
from support.models import sleepy_model, write_model
from support.server import FerryProcess
from support.triton_repository import simple_model

from ferry.protos import message_class

IN_FLIGHT = 2
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> FerryProcess:
    root = tmp_path_factory.mktemp("models")
    write_model(simple_model(), root / "simple", 1)
    write_model(sleepy_model(iterations=3000), root / "sleepy", 1)
    log = tmp_path_factory.mktemp("logs") / "ferry.log"
    server = FerryProcess(
        [str(root), "--grpc_max_in_flight_per_stream", str(IN_FLIGHT)], log
    ).wait_ready()
    server.wait_version("simple", 1)
    server.wait_version("sleepy", 1)
    yield server
    server.stop()


def simple_inputs(offset: int) -> tuple[list[grpcclient.InferInput], np.ndarray, np.ndarray]:
    a = np.arange(16, dtype=np.int32).reshape(1, 16) + offset
    b = np.ones((1, 16), dtype=np.int32)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32")]
    inputs.append(grpcclient.InferInput("INPUT1", [1, 16], "INT32"))
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs, a, b


def test_sync_stream_answers_each_request_in_order_with_its_id(server: FerryProcess) -> None:
    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_target)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        expected = {}
        for index in range(6):
            inputs, a, b = simple_inputs(index * 100)
            client.async_stream_infer("simple", inputs, request_id=f"req-{index}")
            expected[f"req-{index}"] = (a + b, a - b)
        got = [answers.get(timeout=20) for _ in range(6)]
    finally:
        client.stop_stream()
        client.close()
    assert [error for _, error in got] == [None] * 6
    ids = [result.get_response().id for result, _ in got]
    assert ids == [f"req-{index}" for index in range(6)]
    for result, _ in got:
        total, difference = expected[result.get_response().id]
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), total)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), difference)


def test_a_failed_request_is_an_error_in_the_stream_which_stays_open(
    server: FerryProcess,
) -> None:
    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_target)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        inputs, a, b = simple_inputs(0)
        client.async_stream_infer("nope", inputs, request_id="unknown")
        client.async_stream_infer("simple", inputs, request_id="sequence", sequence_id=7)
        client.async_stream_infer("simple", inputs, request_id="good")
        got = [answers.get(timeout=20) for _ in range(3)]
    finally:
        client.stop_stream()
        client.close()
    (_, unknown), (_, sequence), (good, good_error) = got
    assert unknown is not None and "nope" in unknown.message()
    assert sequence is not None
    assert sequence.message().startswith(
        "Sequence batching is not supported by ferry: the request sets sequence_id, but"
    )
    assert good_error is None
    assert good.get_response().id == "good"
    np.testing.assert_array_equal(good.as_numpy("OUTPUT0"), a + b)


def test_aio_stream_infer(server: FerryProcess) -> None:
    async def run() -> list:
        client = aio_grpcclient.InferenceServerClient(server.grpc_target)

        async def requests_():
            for index in range(4):
                inputs, _, _ = simple_inputs(index)
                yield {"model_name": "simple", "inputs": inputs, "request_id": str(index)}

        try:
            answers = []
            async for result, error in client.stream_infer(requests_(), stream_timeout=20):
                answers.append((result, error))
            return answers
        finally:
            await client.close()

    answers = asyncio.run(run())
    assert [error for _, error in answers] == [None] * 4
    assert [result.get_response().id for result, _ in answers] == ["0", "1", "2", "3"]
    for index, (result, _) in enumerate(answers):
        expected = np.arange(16, dtype=np.int32).reshape(1, 16) + index + 1
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), expected)


def _request(model: str, request_id: str, array: np.ndarray, name: str, datatype: str):
    request = message_class("inference.ModelInferRequest")(model_name=model, id=request_id)
    request.inputs.add(name=name, datatype=datatype, shape=array.shape)
    request.raw_input_contents.append(array.tobytes())
    return request.SerializeToString()


def _simple_request(request_id: str) -> bytes:
    request = message_class("inference.ModelInferRequest")(model_name="simple", id=request_id)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        request.raw_input_contents.append(np.ones((1, 16), "<i4").tobytes())
    return request.SerializeToString()


def test_a_slow_request_is_answered_before_a_fast_one_sent_after_it(
    server: FerryProcess,
) -> None:
    """Triton's order for non-decoupled models: answers in the order of the requests."""
    sleepy = _request("sleepy", "slow", np.ones((1, 4), "<f4"), "x", "FP32")
    answer = message_class("inference.ModelStreamInferResponse")
    with grpc.insecure_channel(server.grpc_target) as channel:
        stream = channel.stream_stream(STREAM)
        replies = stream(iter([sleepy, _simple_request("fast")]), timeout=30)
        ids = [answer.FromString(reply).infer_response.id for reply in replies]
    assert ids == ["slow", "fast"]


def _in_flight(server: FerryProcess) -> float:
    text = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('ferry_requests_in_flight{model="sleepy"}'):
            return float(line.split()[-1])
    return 0.0


def test_a_stream_has_at_most_the_flags_number_of_requests_in_flight(
    server: FerryProcess,
) -> None:
    """With 8 slow requests sent at once, the server reads only IN_FLIGHT of them ahead."""
    sleepy = [_request("sleepy", str(i), np.ones((1, 4), "<f4"), "x", "FP32") for i in range(8)]
    answer = message_class("inference.ModelStreamInferResponse")
    seen: list[float] = []
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            seen.append(_in_flight(server))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with grpc.insecure_channel(server.grpc_target) as channel:
            replies = channel.stream_stream(STREAM)(iter(sleepy), timeout=60)
            answers = [answer.FromString(reply) for reply in replies]
    finally:
        done.set()
        watcher.join()
    assert [a.infer_response.id for a in answers] == [str(i) for i in range(8)]
    assert all(not a.error_message for a in answers)
    assert max(seen) >= 1  # the watcher saw the work
    assert max(seen) <= IN_FLIGHT


def test_the_stream_ends_ok_after_the_client_half_closes(server: FerryProcess) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        replies = channel.stream_stream(STREAM)(iter([]), timeout=10)
        assert list(replies) == []
        assert replies.code() == grpc.StatusCode.OK


def test_a_corrupt_message_is_an_error_answer(server: FerryProcess, tmp_path: Path) -> None:
    answer = message_class("inference.ModelStreamInferResponse")
    with grpc.insecure_channel(server.grpc_target) as channel:
        replies = channel.stream_stream(STREAM)(iter([b"\xff\xff", _simple_request("ok")]))
        got = [answer.FromString(reply) for reply in replies]
    assert got[0].error_message.startswith("Could not parse ModelInferRequest")
    assert got[1].infer_response.id == "ok" and not got[1].error_message
