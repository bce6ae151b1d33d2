"""TF Serving's launch flags never weaken ferry: a channel argument cannot lift a limit
flag, credentials ferry lacks stop start-up instead of serving without them, and
`--ssl_config_file`'s client_verify refuses clients without a certificate."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from support.models import scale_model, write_model
from support.security import GoodClient, RssWatch
from support.server import free_port

from ferry.codecs.tensor_proto import decode_tensor, encode_tensor
from ferry.protos import message_class


def _predict(channel: grpc.Channel, rows: np.ndarray) -> list:
    request = message_class("tensorflow.serving.PredictRequest")()
    request.model_spec.name = "m"
    encode_tensor(rows, "x", into=request.inputs["x"])
    rpc = channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=message_class("tensorflow.serving.PredictResponse").FromString,
    )
    return decode_tensor(rpc(request, timeout=5).outputs["y"], "y").tolist()


def test_channel_arguments_cannot_lift_the_message_limit(tmp_path: Path, start_server) -> None:
    write_model(scale_model(2.0), tmp_path / "m", 1)
    server = start_server(
        "--model_name=m",
        f"--model_base_path={tmp_path / 'm'}",
        "--max_request_bytes",
        "65536",
        "--grpc_channel_arguments=grpc.max_receive_message_length=1073741824,"
        "grpc.max_concurrent_streams=100000",
    )
    big = np.ones((1, 4 * 16_384), dtype=np.float32)  # 256 KiB of floats

    with (
        GoodClient(f"{server.url}/v1/models/m:predict", {"instances": [[1, 1, 1, 1]]}) as good,
        RssWatch(server.pid) as rss,
        grpc.insecure_channel(server.grpc_target) as channel,
    ):
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as refused:
                _predict(channel, big)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "larger than max" in refused.value.details()
            assert "(262" in refused.value.details() and "vs. 65536)" in refused.value.details()

    good.assert_served()
    rss.assert_bounded()
    log = server.log()
    assert (
        "--grpc_channel_arguments: grpc.max_receive_message_length=1073741824 ignored: "
        "set by --max_request_bytes" in log
    )
    assert "grpc.max_concurrent_streams=100000 ignored: set by --grpc_max_concurrent_streams" in (
        log
    )


def test_alts_credentials_stop_start_up_instead_of_serving_plaintext(tmp_path: Path) -> None:
    write_model(scale_model(2.0), tmp_path / "m", 1)
    grpc_port, rest_port = free_port(), free_port()
    result = subprocess.run(
        [
            sys.executable, "-m", "ferry.cli", "serve", "--use_alts_credentials",
            "--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--host", "127.0.0.1",
            "--port", str(grpc_port), "--rest_api_port", str(rest_port),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 1
    assert "--use_alts_credentials: ferry has no ALTS" in result.stderr
    for port in (grpc_port, rest_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_client_verify_refuses_clients_without_a_certificate(tmp_path: Path, start_server) -> None:
    key_path, cert_path = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key_path), "-out", str(cert_path), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext", "basicConstraints=critical,CA:TRUE",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    key, cert = key_path.read_text(), cert_path.read_text()
    config = tmp_path / "ssl.txt"
    # The self-signed certificate is its own CA: the client presenting it is verified.
    config.write_text(
        f"server_key: {key!r}\nserver_cert: {cert!r}\ncustom_ca: {cert!r}\nclient_verify: true\n"
    )
    write_model(scale_model(2.0), tmp_path / "m", 1)
    server = start_server(
        "--model_name=m", f"--model_base_path={tmp_path / 'm'}", f"--ssl_config_file={config}"
    )
    rows = np.ones((1, 4), dtype=np.float32)
    anonymous = grpc.ssl_channel_credentials(root_certificates=cert.encode())
    with (
        grpc.secure_channel(server.grpc_target, anonymous) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _predict(channel, rows)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    client = grpc.ssl_channel_credentials(cert.encode(), key.encode(), cert.encode())
    with grpc.secure_channel(server.grpc_target, client) as channel:
        assert _predict(channel, rows) == [[2.0, 2.0, 2.0, 2.0]]
