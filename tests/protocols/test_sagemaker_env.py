"""The SageMaker TensorFlow Serving container's environment on `ferry serve --sagemaker`
(`ferry.sagemaker_env`), checked as the container's own local tests check it
(`test_tfs_batching.py`, `test_nginx_config.py`: the parameters appear in the start-up
log) and with the container's validation (its `serve.py` messages), plus the smaller
differences of SageMaker mode: the 6 MB request limit and the `/tfs/` proxy path.

ONNX models, so no TensorFlow import; each server is a real `ferry serve` process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.models import scale_model, write_model
from support.server import FerryProcess, free_port

BATCHING_ENV = {
    "SAGEMAKER_TFS_ENABLE_BATCHING": "true",
    "SAGEMAKER_TFS_MAX_BATCH_SIZE": "16",
    "SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS": "500",
    "SAGEMAKER_TFS_NUM_BATCH_THREADS": "100",
    "SAGEMAKER_TFS_MAX_ENQUEUED_BATCHES": "1",
    "SAGEMAKER_TFS_NGINX_LOGLEVEL": "info",
}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("opt-ml-model")
    write_model(scale_model(2.0), root / "scale", 1)
    write_model(scale_model(3.0), root / "triple", 1)
    return root


def serve(model_dir: Path, log: Path, env: dict[str, str], *args: str) -> FerryProcess:
    return FerryProcess(
        ["--sagemaker", "--sagemaker_model_dir", str(model_dir), *args],
        log,
        env=env,
        port_env="SAGEMAKER_BIND_TO_PORT",
    )


@pytest.fixture(scope="module")
def batching_server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FerryProcess]:
    """test_tfs_batching.py's `docker run` (its safe port range moved to a free port)."""
    low = free_port()
    env = {
        **BATCHING_ENV,
        "SAGEMAKER_SAFE_PORT_RANGE": f"{low}-{low + 999}",
        "SAGEMAKER_GUNICORN_WORKERS": "4",
        "SAGEMAKER_NOT_A_SETTING": "1",
        "SAGEMAKER_TFS_DEFAULT_MODEL_NAME": "triple",
        "SAGEMAKER_TFS_INTRA_OP_PARALLELISM": "2",
        "SAGEMAKER_NGINX_PROXY_READ_TIMEOUT_SECONDS": "63",
    }
    process = serve(model_dir, tmp_path_factory.mktemp("logs") / "ferry.log", env)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def start_fails(model_dir: Path, env: dict[str, str], *args: str) -> str:
    """`ferry serve --sagemaker` that must stop at start-up: its output."""
    command = [sys.executable, "-m", "ferry.cli", "serve", "--sagemaker"]
    command += ["--sagemaker_model_dir", str(model_dir), "--host", "127.0.0.1", *args]
    command += ["--rest_api_port", str(free_port()), "--port", str(free_port())]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**_clean_env(), **env}
    )
    assert done.returncode != 0, done.stderr
    return done.stderr


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SAGEMAKER_")}


# -- test_tfs_batching.py and test_nginx_config.py: what the start-up log says ---------------


def test_batching_parameters_appear_in_the_log_once_each(batching_server: FerryProcess) -> None:
    log = batching_server.log()
    for line in (
        "max_batch_size { value: 16 }",
        "batch_timeout_micros { value: 500 }",
        "num_batch_threads { value: 100 }",
        "max_enqueued_batches { value: 1 }",
    ):
        assert log.count(line) == 1, line


def test_the_batching_server_serves_with_them(batching_server: FerryProcess) -> None:
    rows = [[1.0, 2.0, 3.0, 4.0]] * 20  # more rows than max_batch_size: split and rejoined
    response = batching_server.post(
        "/invocations", data=json.dumps(rows), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    # SAGEMAKER_TFS_DEFAULT_MODEL_NAME=triple answers without tfs-model-name.
    assert response.json() == {"predictions": [[3.0, 6.0, 9.0, 12.0]] * 20}


def test_each_variable_read_is_logged_and_others_warned_about_once(
    batching_server: FerryProcess,
) -> None:
    log = batching_server.log()
    for name in (
        "SAGEMAKER_TFS_ENABLE_BATCHING=true",
        "SAGEMAKER_SAFE_PORT_RANGE=",
        "SAGEMAKER_TFS_DEFAULT_MODEL_NAME=triple",
        "SAGEMAKER_TFS_INTRA_OP_PARALLELISM=2",
        "SAGEMAKER_BIND_TO_PORT=",
    ):
        assert log.count(name) == 1, name
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert sum("SAGEMAKER_NOT_A_SETTING is not a variable ferry reads" in w for w in warnings) == 1
    assert sum("SAGEMAKER_GUNICORN_WORKERS=4 ignored" in w for w in warnings) == 1
    assert sum("SAGEMAKER_TFS_NGINX_LOGLEVEL=info ignored" in w for w in warnings) == 1


def test_proxy_read_timeout_sets_the_request_time_limit(batching_server: FerryProcess) -> None:
    assert batching_server.log().count("proxy_read_timeout 63;") == 1


def test_default_and_gunicorn_request_time_limits(model_dir: Path, tmp_path: Path) -> None:
    """test_nginx_config.py: 60 s by default; a higher gunicorn timeout raises it."""
    for env, expected in (
        ({}, "proxy_read_timeout 60;"),
        (
            {
                "SAGEMAKER_NGINX_PROXY_READ_TIMEOUT_SECONDS": "60",
                "SAGEMAKER_GUNICORN_TIMEOUT_SECONDS": "120",
            },
            "proxy_read_timeout 120;",
        ),
    ):
        process = serve(model_dir, tmp_path / f"ferry-{len(env)}.log", env)
        try:
            process.wait_ready()
            assert process.log().count(expected) == 1
        finally:
            process.stop()


def test_the_grpc_port_is_the_first_of_the_safe_port_range(model_dir: Path, tmp_path: Path) -> None:
    import grpc

    low = free_port()
    process = serve(
        model_dir, tmp_path / "ferry.log", {"SAGEMAKER_SAFE_PORT_RANGE": f"{low}-{low + 2}"}
    )
    try:
        process.wait_ready()
        with grpc.insecure_channel(f"127.0.0.1:{low}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
    finally:
        process.stop()


# -- the container's validation --------------------------------------------------------------


def test_enable_batching_must_be_true_or_false(model_dir: Path) -> None:
    output = start_fails(model_dir, {"SAGEMAKER_TFS_ENABLE_BATCHING": "yes"})
    assert "SAGEMAKER_TFS_ENABLE_BATCHING must be 'true' or 'false'" in output


def test_a_safe_port_range_too_small_fails(model_dir: Path) -> None:
    env = {"SAGEMAKER_SAFE_PORT_RANGE": "9000-9001"}
    output = start_fails(model_dir, env)
    assert "not enough ports available in SAGEMAKER_SAFE_PORT_RANGE (9000-9001)" in output
    env = {"SAGEMAKER_SAFE_PORT_RANGE": "9000-9004", "SAGEMAKER_TFS_INSTANCE_COUNT": "3"}
    output = start_fails(model_dir, env)
    assert "not enough ports available in SAGEMAKER_SAFE_PORT_RANGE (9000-9004)" in output


def test_an_unknown_default_model_fails_start_up(model_dir: Path) -> None:
    output = start_fails(model_dir, {"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": "nope"})
    assert f"SAGEMAKER_TFS_DEFAULT_MODEL_NAME=nope names no model under {model_dir}" in output
    assert "(found: scale, triple)" in output


def test_batching_parameters_that_are_not_numbers_fail(model_dir: Path) -> None:
    env = {"SAGEMAKER_TFS_ENABLE_BATCHING": "true", "SAGEMAKER_TFS_MAX_BATCH_SIZE": "many"}
    output = start_fails(model_dir, env)
    assert "SAGEMAKER_TFS_* batching parameters" in output
    assert "max_batch_size { value: many }" in output


def test_thread_counts_must_be_whole_numbers(model_dir: Path) -> None:
    output = start_fails(model_dir, {"SAGEMAKER_TFS_INTER_OP_PARALLELISM": "-1"})
    assert "SAGEMAKER_TFS_INTER_OP_PARALLELISM must be a whole number of at least 0" in output


# -- smaller differences: the 6 MB limit, the /tfs/ path -------------------------------------


@pytest.fixture(scope="module")
def plain_server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FerryProcess]:
    process = serve(model_dir, tmp_path_factory.mktemp("logs") / "ferry.log", {})
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_requests_over_6_mib_get_413_in_sagemaker_mode(plain_server: FerryProcess) -> None:
    headers = {"Content-Type": "application/json"}
    over = plain_server.post("/invocations", data=b" " * (6 * MIB + 1), headers=headers)
    assert over.status_code == 413
    at = b"[[1, 2, 3, 4]]".ljust(6 * MIB)
    assert plain_server.post("/invocations", data=at, headers=headers).status_code == 200


def test_max_request_bytes_still_sets_the_limit(model_dir: Path, tmp_path: Path) -> None:
    process = serve(model_dir, tmp_path / "ferry.log", {}, "--max_request_bytes", str(8 * MIB))
    try:
        process.wait_ready()
        body = b"[[1, 2, 3, 4]]".ljust(7 * MIB)
        headers = {"Content-Type": "application/json"}
        assert process.post("/invocations", data=body, headers=headers).status_code == 200
    finally:
        process.stop()


def test_tfs_path_is_tf_servings_rest_api(plain_server: FerryProcess) -> None:
    body = {"instances": [[1.0, 2.0, 3.0, 4.0]]}
    predicted = plain_server.post("/tfs/v1/models/scale:predict", json=body)
    assert predicted.status_code == 200
    assert predicted.json() == {"predictions": [[2.0, 4.0, 6.0, 8.0]]}
    assert (
        plain_server.get("/tfs/v1/models/scale").json()
        == plain_server.get("/v1/models/scale").json()
    )
    metadata = plain_server.get("/tfs/v1/models/triple/metadata")
    assert metadata.status_code == 200
    assert metadata.json()["model_spec"]["name"] == "triple"
    # Only TF Serving's API is behind it (V2 is ferry's, not the container's).
    assert plain_server.get("/tfs/v2/health/ready").status_code == 404
