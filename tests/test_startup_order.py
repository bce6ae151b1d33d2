"""Start-up as TF Serving's: the ports open only after every configured model's first load
was tried, so a client that waits for the port (TF Serving's own test harness does) finds
the models loaded instead of NOT_FOUND.

The first load is held back by `--version_settle_seconds` (a new version folder must stay
unchanged that long before it loads), which gives every test a window of known length in
which the ports must refuse connections.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from support.models import scale_model, write_model
from support.server import FerryProcess, wait_until

from ferry.codecs.tensor_proto import decode_tensor, encode_tensor
from ferry.protos import message_class

SETTLE = "2"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _grpc_predict(target: str, model: str, rows: list[list[float]], timeout: float = 5.0):
    request = message_class("tensorflow.serving.PredictRequest")()
    request.model_spec.name = model
    encode_tensor(np.asarray(rows, dtype=np.float32), "x", into=request.inputs["x"])
    with grpc.insecure_channel(target) as channel:
        rpc = channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=message_class("tensorflow.serving.PredictResponse").FromString,
        )
        return rpc(request, timeout=timeout)


def _refusals_until_open(server: FerryProcess, ports: list[int], limit: float = 30.0) -> int:
    """Poll `ports` until all accept; returns how many polls found one of them closed."""
    refused = 0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log()
        if all(_port_open(port) for port in ports):
            return refused
        refused += 1
        time.sleep(0.02)
    raise AssertionError(f"ports {ports} never opened:\n{server.log()}")


def test_ports_open_after_the_first_load_and_then_serve_at_once(
    tmp_path: Path, start_server
) -> None:
    write_model(scale_model(2.0), tmp_path / "m", 1)
    server = start_server(
        "--model_name=m",
        f"--model_base_path={tmp_path / 'm'}",
        "--version_settle_seconds",
        SETTLE,
        ready=False,
    )

    refusals = _refusals_until_open(server, [server.grpc_port, server.port])
    # The first calls on the open ports are served: no NOT_FOUND window.
    answer = _grpc_predict(server.grpc_target, "m", [[1, 2, 3, 4]])
    response = server.predict("m", {"instances": [[1, 1, 1, 1]]})

    assert decode_tensor(answer.outputs["y"], "y").tolist() == [[2.0, 4.0, 6.0, 8.0]]
    assert response.status_code == 200
    assert response.json() == {"predictions": [[2.0, 2.0, 2.0, 2.0]]}
    assert refusals > 0  # the settle window passed with the ports closed
    log = server.log()
    assert log.index("first load of every configured model tried") < log.index("gRPC APIs on")
    assert "1 model(s) available" in log


def test_a_model_that_fails_its_first_load_does_not_stop_start_up(
    tmp_path: Path, start_server
) -> None:
    """TF Serving exits ("N model(s) did not become available"); ferry serves the other
    models and keeps the failure in the broken model's status."""
    write_model(scale_model(3.0), tmp_path / "models" / "good", 1)
    (tmp_path / "models" / "broken" / "1").mkdir(parents=True)
    (tmp_path / "models" / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    server = start_server(str(tmp_path / "models"))

    assert server.predict("good", {"instances": [[1, 1, 1, 1]]}).json() == {
        "predictions": [[3.0, 3.0, 3.0, 3.0]]
    }
    status = server.get("/v1/models/broken").json()["model_version_status"][0]
    assert status["state"] == "END"
    assert status["status"]["error_code"] != "OK"
    assert "1 model(s) available; not available: broken (" in server.log()


def test_sigterm_during_the_first_loads_exits_cleanly_without_opening_ports(
    tmp_path: Path, start_server
) -> None:
    write_model(scale_model(2.0), tmp_path / "m", 1)
    server = start_server(
        "--model_name=m",
        f"--model_base_path={tmp_path / 'm'}",
        "--version_settle_seconds",
        "20",
        ready=False,
    )
    wait_until(lambda: "ports open when each was tried" in server.log(), 30, message="start")

    started = time.monotonic()
    assert server.stop(signal.SIGTERM, timeout=10) == 0

    assert time.monotonic() - started < 10
    assert "stopping before the first loads finished" in server.log()
    assert "gRPC APIs on" not in server.log()


def test_sagemaker_ping_answers_200_from_its_first_answer(tmp_path: Path, start_server) -> None:
    """SageMaker polls /ping from container start and waits through refused connections
    (as through 503s) until its start-up timeout: the late port keeps that contract, and
    the first /ping it gets is the 200 that lets traffic in."""
    model_dir = tmp_path / "model"
    write_model(scale_model(3.0), model_dir / "alpha", 1)
    server = start_server(
        "--sagemaker",
        "--sagemaker_model_dir",
        str(model_dir),
        "--version_settle_seconds",
        SETTLE,
        ready=False,
    )
    answers: list[int] = []
    refused = 0
    deadline = time.monotonic() + 30
    while not answers and time.monotonic() < deadline:
        assert server.process.poll() is None, server.log()
        try:
            answers.append(requests.get(f"{server.url}/ping", timeout=2).status_code)
        except requests.ConnectionError:
            refused += 1
            time.sleep(0.05)

    assert answers == [200]
    assert refused > 0
    invocation = server.post(
        "/invocations", data=b"[1, 1, 1, 1]", headers={"Content-Type": "application/json"}
    )
    assert invocation.json() == {"predictions": [[3.0, 3.0, 3.0, 3.0]]}


@pytest.mark.tensorflow
@pytest.mark.compat
def test_tensorflow_serving_harness_finds_the_model_loaded(tmp_path: Path, start_server) -> None:
    """TF Serving's test harness (`tensorflow_model_server_test_base.py`): start with its
    flags, probe the gRPC port with a Predict for `intentionally_missing_model` until the
    error names a Servable, then Predict on the model: it must answer, not NOT_FOUND."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    write_model(scale_model(2.0), tmp_path / "default", 1)
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text('prometheus_config {\n  enable: true\n  path: "/metrics"\n}\n')
    socket_path = tmp_path / "tf-serving.sock"
    server = start_server(
        "--rest_api_timeout_in_ms=5000",
        f"--grpc_socket_path={socket_path}",
        "--model_name=default",
        f"--model_base_path={tmp_path / 'default'}",
        "--prefer_tflite_model=true",
        f"--monitoring_config_file={monitoring}",
        "--grpc_channel_arguments=grpc.so_reuseaddr=1",
        "--version_settle_seconds",
        SETTLE,
        ready=False,
    )

    def call(target: str, model: str) -> predict_pb2.PredictResponse:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        if model != "intentionally_missing_model":
            request.inputs["x"].CopyFrom(
                tf.make_tensor_proto(np.array([[1, 2, 3, 4]], dtype=np.float32))
            )
        with grpc.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            return stub.Predict(request, 5.0)

    details = ""
    deadline = time.monotonic() + 30
    while "Servable" not in details and time.monotonic() < deadline:
        assert server.process.poll() is None, server.log()
        try:
            call(server.grpc_target, "intentionally_missing_model")
        except grpc.RpcError as error:
            details = error.details() or ""
        time.sleep(0.1)

    assert "Servable" in details
    for target in (server.grpc_target, f"unix:{socket_path}"):
        answer = call(target, "default")
        assert tf.make_ndarray(answer.outputs["y"]).tolist() == [[2.0, 4.0, 6.0, 8.0]]
    # The monitoring config placed the Prometheus endpoint.
    assert server.get("/metrics").status_code == 200
    assert server.get("/monitoring/prometheus/metrics").status_code == 404
