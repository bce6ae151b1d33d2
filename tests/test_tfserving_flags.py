"""TF Serving's launch commands start ferry: every `tensorflow_model_server` flag is
accepted, those with a meaning here are honoured, the others start ferry with one log
line naming them. The flag list is TF Serving's (`model_servers/main.cc`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from support.models import scale_model, write_model
from support.server import wait_until

from ferry import tfserving_flags
from ferry.auth.keys import TOKEN, add_key
from ferry.cli import main, serve
from ferry.codecs.tensor_proto import decode_tensor, encode_tensor
from ferry.grpc_listen import grpc_server_arguments
from ferry.protos import message_class

# Every flag of TF Serving's main.cc, with a value of its type (TF Serving's default
# where one is legal here). --version exits, --port/--rest_api_port are the server's own,
# --model_config_file/--batching_parameters_file would name files.
TF_SERVING_FLAGS = {
    "grpc_socket_path": None,  # filled in per test: a path in tmp_path
    "rest_api_num_threads": "16",
    "rest_api_timeout_in_ms": "30000",
    "rest_api_enable_cors_support": "false",
    "enable_batching": "false",
    "allow_version_labels_for_unavailable_models": "false",
    "enable_per_model_batching_parameters": "true",
    "model_config_file_poll_wait_seconds": "0",
    "model_name": "m",
    "model_base_path": None,
    "num_load_threads": "0",
    "num_unload_threads": "0",
    "max_num_load_retries": "5",
    "load_retry_interval_micros": "60000000",
    "file_system_poll_wait_seconds": "1",
    "flush_filesystem_caches": "true",
    "tensorflow_session_parallelism": "0",
    "tensorflow_session_config_file": "",
    "tensorflow_intra_op_parallelism": "0",
    "tensorflow_inter_op_parallelism": "0",
    "use_alts_credentials": "false",
    "ssl_config_file": "",
    "platform_config_file": "",
    "per_process_gpu_memory_fraction": "0",
    "saved_model_tags": "serve",
    "grpc_channel_arguments": "grpc.so_reuseaddr=1",
    "grpc_max_threads": "8",
    "enable_model_warmup": "true",
    "num_request_iterations_for_warmup": "0",
    "monitoring_config_file": None,
    "remove_unused_fields_from_bundle_metagraph": "true",
    "prefer_tflite_model": "false",
    "num_tflite_pools": "2",
    "num_tflite_interpreters_per_pool": "1",
    "enable_signature_method_name_check": "false",
    "xla_cpu_compilation_enabled": "false",
    "xla_gpu_compilation_enabled": "false",
    "enable_profiler": "true",
    "thread_pool_factory_config_file": "",
    "mixed_precision": "",
    "skip_initialize_tpu": "false",
    "enable_grpc_healthcheck_service": "false",
    "enable_serialization_as_tensor_content": "false",
}
# Values above that ferry's behaviour already matches: an info line, not a warning.
ALREADY_SO = {
    "enable_per_model_batching_parameters",
    "per_process_gpu_memory_fraction",
    "xla_cpu_compilation_enabled",
    "xla_gpu_compilation_enabled",
    "mixed_precision",
}
NOT_PASSED = {"version", "port", "rest_api_port", "model_config_file", "batching_parameters_file"}


def _predict_over_grpc(target: str, credentials: grpc.ChannelCredentials | None = None):
    request = message_class("tensorflow.serving.PredictRequest")()
    request.model_spec.name = "m"
    encode_tensor(np.ones((1, 4), dtype=np.float32), "x", into=request.inputs["x"])
    channel = (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    )
    with channel:
        rpc = channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=message_class("tensorflow.serving.PredictResponse").FromString,
        )
        answer = rpc(request, timeout=5)
    return decode_tensor(answer.outputs["y"], "y").tolist()


def _log_lines_naming(log: str, flag: str) -> list[str]:
    return [line for line in log.splitlines() if re.search(rf"--{flag}\b", line)]


def test_the_flag_table_covers_every_tensorflow_serving_flag() -> None:
    """The 48 flags: ferry's own options plus the table, each name once."""
    own = {
        opt.removeprefix("--")
        for p in serve.params
        if isinstance(p, click.Option) and p.expose_value
        for opt in p.opts
    }
    table = set(tfserving_flags.FLAGS_BY_NAME)
    everything = set(TF_SERVING_FLAGS) | NOT_PASSED

    assert len(everything) == 48
    assert everything <= own | table
    assert not own & table  # one declaration per flag


def test_a_launch_command_with_every_flag_starts_and_serves(tmp_path: Path, start_server) -> None:
    write_model(scale_model(2.0), tmp_path / "m", 1)
    monitoring = tmp_path / "monitoring_config.txt"
    monitoring.write_text("prometheus_config {\n  enable: true\n}\n")
    socket_path = tmp_path / "tf-serving.sock"
    values = {
        **TF_SERVING_FLAGS,
        "grpc_socket_path": str(socket_path),
        "model_base_path": str(tmp_path / "m"),
        "monitoring_config_file": str(monitoring),
    }
    server = start_server(*(f"--{name}={value}" for name, value in values.items()))

    assert server.predict("m", {"instances": [[1, 2, 3, 4]]}).json() == {
        "predictions": [[2.0, 4.0, 6.0, 8.0]]
    }
    assert _predict_over_grpc(server.grpc_target) == [[2.0, 2.0, 2.0, 2.0]]
    assert _predict_over_grpc(f"unix:{socket_path}") == [[2.0, 2.0, 2.0, 2.0]]
    log = server.log()
    for flag in tfserving_flags.FLAGS:
        if flag.honoured or flag.name not in values:
            continue
        lines = _log_lines_naming(log, flag.name)
        assert len(lines) == 1, (flag.name, lines)
        if flag.name in ALREADY_SO:
            assert " INFO " in lines[0] and ": accepted; " in lines[0], lines[0]
        else:
            assert " WARNING " in lines[0] and " is accepted and ignored: " in lines[0], lines[0]
    assert "--rest_api_num_threads=16 is accepted and ignored: ferry's REST API" in log
    assert server.stop() == 0


@pytest.mark.parametrize(
    ("config", "served", "not_served"),
    [
        ('prometheus_config { enable: true, path: "/metrics" }', "/metrics", None),
        ("prometheus_config { enable: true }", "/monitoring/prometheus/metrics", "/metrics"),
        ("prometheus_config { enable: false }", None, "/monitoring/prometheus/metrics"),
        ("", None, "/monitoring/prometheus/metrics"),
    ],
    ids=["enabled at /metrics", "enabled at TF Serving's path", "disabled", "empty file"],
)
def test_monitoring_config_file_places_or_turns_off_the_prometheus_endpoint(
    tmp_path: Path, start_server, config: str, served: str | None, not_served: str | None
) -> None:
    write_model(scale_model(2.0), tmp_path / "m", 1)
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text(config)
    server = start_server(
        "--model_name=m",
        f"--model_base_path={tmp_path / 'm'}",
        f"--monitoring_config_file={monitoring}",
    )
    server.predict("m", {"instances": [[1, 1, 1, 1]]})

    if served is not None:
        response = server.get(served)
        assert response.status_code == 200
        assert 'ferry_requests_total{api="rest",model="m",outcome="OK",version="1"} 1.0' in (
            response.text
        )
    if not_served is not None:
        assert server.get(not_served).status_code == 404


def test_without_a_monitoring_config_the_metrics_stay_at_tf_servings_path(
    tmp_path: Path, start_server
) -> None:
    """ferry's default (TF Serving serves no metrics without a monitoring config)."""
    write_model(scale_model(2.0), tmp_path / "m", 1)
    server = start_server("--model_name=m", f"--model_base_path={tmp_path / 'm'}")

    assert server.get("/monitoring/prometheus/metrics").status_code == 200


def test_cors_support_adds_tf_servings_headers_and_answers_preflights(
    tmp_path: Path, start_server
) -> None:
    write_model(scale_model(2.0), tmp_path / "m", 1)
    server = start_server(
        "--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--rest_api_enable_cors_support"
    )
    cors = {
        "access-control-allow-origin": "*",
        "access-control-allow-methods": "POST, GET",
        "access-control-allow-headers": "Content-Type",
    }
    preflight = server.session.options(
        f"{server.url}/v1/models/m:predict", headers={"Origin": "https://app.example"}, timeout=5
    )
    no_origin = server.session.options(f"{server.url}/v1/models/m:predict", timeout=5)
    answers = [
        server.get("/v1/models/m"),
        server.predict("m", {"instances": [[1, 1, 1, 1]]}),
        server.predict("nope", {"instances": [[1, 1, 1, 1]]}),
        preflight,
        no_origin,
    ]

    for answer in answers:
        assert {k: answer.headers.get(k) for k in cors} == cors, answer.url
    assert preflight.status_code == 200
    assert preflight.content == b""
    assert no_origin.status_code == 400
    assert no_origin.json() == {"error": "Origin header is missing in CORS preflight"}
    assert answers[1].json() == {"predictions": [[2.0, 2.0, 2.0, 2.0]]}


def test_without_cors_support_no_cors_headers(tmp_path: Path, start_server) -> None:
    write_model(scale_model(2.0), tmp_path / "m", 1)
    server = start_server("--model_name=m", f"--model_base_path={tmp_path / 'm'}")

    assert "access-control-allow-origin" not in server.get("/v1/models/m").headers


def _health_check(target: str, service: str) -> str:
    request = message_class("grpc.health.v1.HealthCheckRequest")(service=service)
    response_class = message_class("grpc.health.v1.HealthCheckResponse")
    with grpc.insecure_channel(target) as channel:
        rpc = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        status = rpc(request, timeout=5).status
    return response_class.ServingStatus.Name(status)


def test_grpc_health_service_answers_for_tf_servings_service_names(
    tmp_path: Path, start_server
) -> None:
    write_model(scale_model(2.0), tmp_path / "m", 1)
    server = start_server(
        "--model_name=m",
        f"--model_base_path={tmp_path / 'm'}",
        "--enable_grpc_healthcheck_service",
    )

    for service in ("", "ModelService", "PredictionService"):
        assert _health_check(server.grpc_target, service) == "SERVING", service
    with pytest.raises(grpc.RpcError) as unknown:
        _health_check(server.grpc_target, "nope")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert unknown.value.details() == "service name unknown"


def test_without_the_flag_there_is_no_grpc_health_service(tmp_path: Path, start_server) -> None:
    write_model(scale_model(2.0), tmp_path / "m", 1)
    server = start_server("--model_name=m", f"--model_base_path={tmp_path / 'm'}")

    with pytest.raises(grpc.RpcError) as missing:
        _health_check(server.grpc_target, "")
    assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _serve(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ferry.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("flag", "content", "message"),
    [
        (
            "monitoring_config_file",
            "prometheus_config { enable: yes please }",
            "--monitoring_config_file: Error parsing text-format tensorflow.serving."
            "MonitoringConfig",
        ),
        (
            "monitoring_config_file",
            'prometheus_config { enable: true, path: "metrics" }',
            "prometheus_config.path must start with '/'",
        ),
        ("ssl_config_file", 'server_key: "k"', "server_key and server_cert are both needed"),
    ],
    ids=["unparsable monitoring config", "relative path", "ssl config without a certificate"],
)
def test_a_bad_config_file_stops_start_up_with_its_name(
    tmp_path: Path, flag: str, content: str, message: str
) -> None:
    config = tmp_path / "config.txt"
    config.write_text(content)
    result = _serve([f"--{flag}={config}", "--model_base_path", str(tmp_path)])

    assert result.returncode == 1
    assert message in result.stderr


def test_a_malformed_channel_argument_stops_start_up(tmp_path: Path) -> None:
    result = _serve(["--grpc_channel_arguments=grpc.so_reuseaddr", "--model_base_path", "x"])

    assert result.returncode == 1
    assert "--grpc_channel_arguments: 'grpc.so_reuseaddr' is not key=value" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--prefer_tflite_model"], True),
        (["--prefer_tflite_model=true"], True),
        (["--prefer_tflite_model=false"], False),
        (["--num_tflite_pools=3"], 3),
        (["--per_process_gpu_memory_fraction=0.5"], 0.5),
    ],
)
def test_tf_serving_value_forms_are_parsed(args: list[str], expected: object) -> None:
    context = serve.make_context("serve", [*args, "--model_base_path", "x"])
    name = args[0].removeprefix("--").split("=")[0]

    assert tfserving_flags.given_flags(context) == {name: expected}


def test_a_bad_boolean_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["serve", "--prefer_tflite_model=maybe"])

    assert result.exit_code == 2
    assert "'maybe' is not a valid boolean" in result.output


def test_version_prints_and_exits() -> None:
    result = CliRunner().invoke(main, ["serve", "--version"])

    assert result.exit_code == 0
    assert result.output.startswith("TensorFlow ModelServer: ferry ")


def test_help_shows_the_honoured_flags_and_hides_the_ignored_ones() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])

    assert result.exit_code == 0
    for flag in tfserving_flags.FLAGS:
        assert (f"--{flag.name}" in result.output) is flag.honoured, flag.name
    assert "docs/tfserving_flags.md" in result.output


def test_the_docs_page_lists_every_flag_of_the_table() -> None:
    page = (Path(__file__).parents[1] / "docs" / "tfserving_flags.md").read_text()

    for flag in tfserving_flags.FLAGS:
        assert f"| `--{flag.name}` |" in page, flag.name


def test_channel_arguments_are_parsed_as_tf_serving_does() -> None:
    parsed = tfserving_flags.parse_channel_arguments(
        "grpc.so_reuseaddr=1,grpc.primary_user_agent=tf serving,grpc.big=99999999999,"
    )

    assert parsed == (
        ("grpc.so_reuseaddr", 1),
        ("grpc.primary_user_agent", "tf serving"),
        ("grpc.big", "99999999999"),  # beyond int32: a string, as TF Serving passes it
    )


def test_channel_arguments_apply_on_top_of_ferrys_but_never_over_a_limit_flag() -> None:
    limits = [("grpc.max_receive_message_length", 1024), ("grpc.max_concurrent_streams", 8)]
    merged = dict(
        grpc_server_arguments(
            limits,
            (
                ("grpc.max_concurrent_streams", 100_000),
                ("grpc.so_reuseport", 1),
                ("grpc.max_connection_age_ms", 2000),
            ),
        )
    )

    assert merged == {
        "grpc.max_receive_message_length": 1024,
        "grpc.max_concurrent_streams": 8,
        "grpc.so_reuseport": 1,
        "grpc.max_connection_age_ms": 2000,
    }


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    key, cert = tmp_path / "server.key", tmp_path / "server.crt"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return key.read_text(), cert.read_text()


def test_ssl_config_file_serves_grpc_over_tls(tmp_path: Path, start_server) -> None:
    key, cert = _self_signed(tmp_path)
    ssl_config = tmp_path / "ssl.txt"
    ssl_config.write_text(f"server_key: {key!r}\nserver_cert: {cert!r}\n")
    write_model(scale_model(2.0), tmp_path / "m", 1)
    server = start_server(
        "--model_name=m", f"--model_base_path={tmp_path / 'm'}", f"--ssl_config_file={ssl_config}"
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.encode())

    assert _predict_over_grpc(server.grpc_target, credentials) == [[2.0, 2.0, 2.0, 2.0]]
    with pytest.raises(grpc.RpcError) as plain:
        _predict_over_grpc(server.grpc_target)
    assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
    # REST stays plain HTTP, as in TF Serving.
    assert server.predict("m", {"instances": [[1, 1, 1, 1]]}).status_code == 200


def test_with_auth_the_grpc_health_check_needs_no_token_and_predict_still_does(
    tmp_path: Path, start_server
) -> None:
    write_model(scale_model(2.0), tmp_path / "m", 1)
    keys = tmp_path / "keys.json"
    add_key(keys, TOKEN, "app")
    server = start_server(
        "--model_name=m",
        f"--model_base_path={tmp_path / 'm'}",
        "--enable_grpc_healthcheck_service",
        "--auth",
        str(keys),
        ready=False,
    )
    wait_until(lambda: _grpc_serving(server.grpc_target), 30, message="gRPC health SERVING")

    request = message_class("tensorflow.serving.GetModelStatusRequest")()
    request.model_spec.name = "m"
    with grpc.insecure_channel(server.grpc_target) as channel:
        rpc = channel.unary_unary(
            "/tensorflow.serving.ModelService/GetModelStatus",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda data: data,
        )
        with pytest.raises(grpc.RpcError) as refused:
            rpc(request, timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _grpc_serving(target: str) -> bool:
    try:
        return _health_check(target, "") == "SERVING"
    except grpc.RpcError:
        return False
