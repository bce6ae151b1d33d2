"""Readiness: a server is ready when its configured models serve (`--ready_when all`, the
default, or `any`), never with no model (except a SageMaker multi-model endpoint), and
`/v2/health/ready`, gRPC ServerReady, grpc.health.v1 Check and SageMaker `/ping` agree.
Real `ferry serve` processes, one good and one broken model, empty folders."""

from __future__ import annotations

from pathlib import Path

import grpc
from support.models import scale_model, write_model
from support.server import FerryProcess, wait_until

from ferry.protos import message_class

FAST_POLL = ["--file_system_poll_wait_seconds", "0.2", "--version_settle_seconds", "0.1"]


def good_and_broken(root: Path) -> Path:
    write_model(scale_model(2.0), root / "good", 1)
    broken = root / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    return root


def server_ready(server: FerryProcess) -> bool:
    """gRPC ServerReady (KServe V2) on the server's gRPC port."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        rpc = channel.unary_unary("/inference.GRPCInferenceService/ServerReady")
        request = message_class("inference.ServerReadyRequest")().SerializeToString()
        answer = rpc(request, timeout=5)
    return message_class("inference.ServerReadyResponse").FromString(answer).ready


def health_check(server: FerryProcess) -> str:
    """grpc.health.v1 Check for the whole server ("" service)."""
    response_class = message_class("grpc.health.v1.HealthCheckResponse")
    with grpc.insecure_channel(server.grpc_target) as channel:
        rpc = channel.unary_unary("/grpc.health.v1.Health/Check")
        request = message_class("grpc.health.v1.HealthCheckRequest")().SerializeToString()
        status = response_class.FromString(rpc(request, timeout=5)).status
    return response_class.ServingStatus.Name(status)


def test_a_broken_model_keeps_the_server_not_ready_and_says_which(
    tmp_path: Path, start_server
) -> None:
    root = good_and_broken(tmp_path / "models")
    server = start_server(str(root), "--enable_grpc_healthcheck_service")
    server.wait_version("good", 1)
    ready = server.get("/v2/health/ready")
    assert ready.status_code == 503
    assert ready.headers["ferry-readiness"] == "models"
    assert "1 of 2 models serve no version: broken" in ready.json()["error"]
    assert server_ready(server) is False
    assert health_check(server) == "NOT_SERVING"
    # The good model still answers requests that name it.
    assert server.predict("good", {"instances": [[1, 1, 1, 1]]}).status_code == 200


def test_ready_when_any_is_ready_with_one_serving_model(tmp_path: Path, start_server) -> None:
    root = good_and_broken(tmp_path / "models")
    server = start_server(str(root), "--ready_when", "any", "--enable_grpc_healthcheck_service")
    assert server.get("/v2/health/ready").status_code == 200
    assert server_ready(server) is True
    assert health_check(server) == "SERVING"


def test_a_server_with_no_model_is_not_ready_until_one_serves(tmp_path: Path, start_server) -> None:
    root = tmp_path / "models"
    root.mkdir()
    server = start_server(str(root), *FAST_POLL)
    ready = server.get("/v2/health/ready")
    assert ready.status_code == 503
    assert "no model is configured" in ready.json()["error"]
    assert server_ready(server) is False
    write_model(scale_model(3.0), root / "late", 1)
    wait_until(lambda: server.get("/v2/health/ready").status_code == 200, 20, message="ready")
    assert server_ready(server) is True


def test_a_model_folder_without_versions_is_not_ready(tmp_path: Path, start_server) -> None:
    write_model(scale_model(2.0), tmp_path / "models" / "good", 1)
    (tmp_path / "models" / "empty").mkdir()
    server = start_server(str(tmp_path / "models"))
    ready = server.get("/v2/health/ready")
    assert ready.status_code == 503 and "empty" in ready.json()["error"]


def test_sagemaker_ping_and_v2_readiness_agree(tmp_path: Path, start_server) -> None:
    model_dir = good_and_broken(tmp_path / "model")
    strict = start_server("--sagemaker", "--sagemaker_model_dir", str(model_dir))
    strict.wait_version("good", 1)
    assert strict.get("/ping").status_code == 503
    assert strict.get("/v2/health/ready").status_code == 503
    lenient = start_server(
        "--sagemaker", "--sagemaker_model_dir", str(model_dir), "--ready_when", "any"
    )
    assert lenient.get("/ping").status_code == 200
    assert lenient.get("/v2/health/ready").status_code == 200


def test_a_multi_model_endpoint_is_ready_with_no_model_loaded(tmp_path: Path, start_server) -> None:
    """As SageMaker's container: models load on request, so /ping is 200 with none, and the
    V2 readiness says the same."""
    models = tmp_path / "mme"
    models.mkdir()
    server = start_server(
        "--sagemaker",
        "--sagemaker_multi_model_dir",
        str(models),
        "--model_cache_dir",
        str(tmp_path / "cache"),
        env={"SAGEMAKER_MULTI_MODEL": "true"},
    )
    assert server.get("/ping").status_code == 200
    assert server.get("/v2/health/ready").status_code == 200
    assert server_ready(server) is True
