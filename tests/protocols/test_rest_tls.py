"""HTTPS on the REST port (`--ssl_certfile`, `--ssl_keyfile`, `--ssl_ca_certs`,
`--ssl_client_cert`): real `ferry serve` processes, certificates the tests make, `requests`
verifying the test CA, gRPC over the same certificate, raw sockets for the slow and the
plain-HTTP clients. The TLS handshake is under the head deadline and the connection limit.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from support.certificates import CertificateAuthority, KeyPair
from support.models import scale_model, write_model
from support.server import FerryProcess, wait_until

from ferry.codecs.tensor_proto import decode_tensor, encode_tensor
from ferry.protos import message_class

ROWS = [[1.0, 1.0, 1.0, 1.0]]
DOUBLED = [[2.0, 2.0, 2.0, 2.0]]


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "pki")


@pytest.fixture
def model_args(tmp_path: Path) -> list[str]:
    write_model(scale_model(2.0), tmp_path / "m", 1)
    return ["--model_name=m", f"--model_base_path={tmp_path / 'm'}"]


def start_https(
    start_server, ca: CertificateAuthority, *args: str, cert: KeyPair | None = None
) -> FerryProcess:
    """`ferry serve ARGS` with the CA's server certificate; its session trusts the CA
    (and shows `cert`, a client certificate, when given)."""
    pair = ca.server()
    server = start_server(
        *args, f"--ssl_certfile={pair.cert}", f"--ssl_keyfile={pair.key}", ready=False
    )
    server.url = f"https://127.0.0.1:{server.port}"
    # (Without trust_env, $REQUESTS_CA_BUNDLE would win over the session's CA.)
    server.session.trust_env = False
    server.session.verify = str(ca.cert_path)
    if cert is not None:
        server.session.cert = (str(cert.cert), str(cert.key))
    return server.wait_ready(timeout=60)


def grpc_predict(target: str, credentials: grpc.ChannelCredentials | None) -> list:
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


def fresh_get(server: FerryProcess, path: str, **kwargs) -> requests.Response:
    """A GET on a new connection (not the server's kept-alive session)."""
    kwargs.setdefault("verify", server.session.verify)
    return requests.get(server.url + path, timeout=5, **kwargs)


def test_https_serves_the_rest_apis_and_grpc_gets_the_same_certificate(
    start_server, ca, model_args
) -> None:
    server = start_https(start_server, ca, *model_args)

    assert server.predict("m", {"instances": ROWS}).json() == {"predictions": DOUBLED}
    # A body of many TLS records, and several requests on one kept-alive connection.
    many = server.predict("m", {"instances": ROWS * 20_000})
    assert many.status_code == 200 and len(many.json()["predictions"]) == 20_000
    assert server.get("/v2/health/ready").status_code == 200
    assert "REST API on https://127.0.0.1" in server.log()
    # gRPC: TLS with the same certificate (no --ssl_config_file); plain gRPC is refused.
    tls = grpc.ssl_channel_credentials(root_certificates=ca.pem())
    assert grpc_predict(server.grpc_target, tls) == DOUBLED
    with pytest.raises(grpc.RpcError) as plain:
        grpc_predict(server.grpc_target, None)
    assert plain.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plain_http_on_the_https_port_gets_a_readable_400(start_server, ca, model_args) -> None:
    server = start_https(start_server, ca, *model_args)

    answer = requests.get(f"http://127.0.0.1:{server.port}/v1/models/m", timeout=5)

    assert answer.status_code == 400
    assert "serves HTTPS" in answer.json()["error"]
    assert "https://" in answer.json()["error"]
    # An unverified certificate is refused by the client, as it should be.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{server.url}/v1/models/m", timeout=5)


def test_a_required_client_certificate_is_checked_on_https_and_grpc(
    start_server, ca, model_args, tmp_path: Path
) -> None:
    client = ca.client()
    stranger = CertificateAuthority(tmp_path / "other", "another CA").client("stranger")
    server = start_https(
        start_server,
        ca,
        *model_args,
        f"--ssl_ca_certs={ca.cert_path}",
        "--ssl_client_cert=required",
        cert=client,
    )

    assert server.predict("m", {"instances": ROWS}).json() == {"predictions": DOUBLED}
    with pytest.raises(requests.exceptions.ConnectionError):
        fresh_get(server, "/v1/models/m")
    with pytest.raises(requests.exceptions.ConnectionError):
        fresh_get(server, "/v1/models/m", cert=(str(stranger.cert), str(stranger.key)))
    assert fresh_get(server, "/v1/models/m", cert=(str(client.cert), str(client.key))).ok

    with_cert = grpc.ssl_channel_credentials(
        ca.pem(), client.key.read_bytes(), client.cert.read_bytes()
    )
    assert grpc_predict(server.grpc_target, with_cert) == DOUBLED
    with pytest.raises(grpc.RpcError) as refused:
        grpc_predict(server.grpc_target, grpc.ssl_channel_credentials(ca.pem()))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_an_optional_client_certificate_may_be_left_out_but_must_verify_when_shown(
    start_server, ca, model_args, tmp_path: Path
) -> None:
    client = ca.client()
    stranger = CertificateAuthority(tmp_path / "other", "another CA").client("stranger")
    server = start_https(
        start_server,
        ca,
        *model_args,
        f"--ssl_ca_certs={ca.cert_path}",
        "--ssl_client_cert=optional",
    )

    assert fresh_get(server, "/v1/models/m").ok
    assert fresh_get(server, "/v1/models/m", cert=(str(client.cert), str(client.key))).ok
    with pytest.raises(requests.exceptions.ConnectionError):
        fresh_get(server, "/v1/models/m", cert=(str(stranger.cert), str(stranger.key)))


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed `sock` (read EOF or reset); fails past `seconds`."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open over {seconds}s") from None
    return time.monotonic() - started


def test_the_tls_handshake_is_under_the_head_deadline(start_server, ca, model_args) -> None:
    server = start_https(start_server, ca, *model_args, "--http_header_timeout_seconds=1")
    address = ("127.0.0.1", server.port)

    # Connects and sends nothing; starts a ClientHello and stalls.
    silent = socket.create_connection(address)
    stalled = socket.create_connection(address)
    stalled.sendall(b"\x16\x03\x01\x02\x00\x01")
    assert _closed_within(silent, 5) < 5
    assert _closed_within(stalled, 5) < 5

    # Finishes the handshake but sends no head: 408 over TLS, counted from connect.
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    started = time.monotonic()
    with context.wrap_socket(socket.create_connection(address), server_hostname="127.0.0.1") as tls:
        tls.settimeout(5)
        answer = tls.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"--http_header_timeout_seconds" in answer
    assert time.monotonic() - started < 4
    assert server.predict("m", {"instances": ROWS}).status_code == 200


def test_connections_in_their_handshake_count_against_max_connections(
    start_server, ca, model_args
) -> None:
    server = start_https(start_server, ca, *model_args, "--max_connections=2")
    server.session.close()  # its kept-alive connection would take one of the two
    address = ("127.0.0.1", server.port)
    holders = [socket.create_connection(address) for _ in range(2)]
    try:
        time.sleep(0.3)  # both accepted
        with pytest.raises(requests.exceptions.ConnectionError):
            fresh_get(server, "/v1/models/m")
    finally:
        for holder in holders:
            holder.close()
    wait_until(lambda: fresh_get(server, "/v1/models/m").ok, 5, message="a free connection")
    assert "over --max_connections 2" in server.log()


def test_ssl_config_file_keeps_grpc_to_itself(start_server, ca, model_args, tmp_path) -> None:
    grpc_ca = CertificateAuthority(tmp_path / "grpc", "gRPC CA")
    grpc_pair = grpc_ca.server("grpc")
    ssl_config = tmp_path / "ssl.txt"
    ssl_config.write_text(
        f"server_key: {grpc_pair.key.read_text()!r}\nserver_cert: {grpc_pair.cert.read_text()!r}\n"
    )
    server = start_https(start_server, ca, *model_args, f"--ssl_config_file={ssl_config}")

    assert server.predict("m", {"instances": ROWS}).status_code == 200
    tls = grpc.ssl_channel_credentials(root_certificates=grpc_ca.pem())
    assert grpc_predict(server.grpc_target, tls) == DOUBLED
    with pytest.raises(grpc.RpcError):
        grpc_predict(server.grpc_target, grpc.ssl_channel_credentials(ca.pem()))


def _serve_fails(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ferry.cli", "serve", "--host", "127.0.0.1", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ssl_keyfile={key}"], "need --ssl_certfile"),
        (["--ssl_certfile={cert}"], "--ssl_certfile needs --ssl_keyfile"),
        (
            ["--ssl_certfile={cert}", "--ssl_keyfile={key}", "--ssl_client_cert=required"],
            "needs --ssl_ca_certs",
        ),
        (
            ["--ssl_certfile={cert}", "--ssl_keyfile={key}", "--ssl_ca_certs={ca}"],
            "add --ssl_client_cert required",
        ),
        (["--ssl_certfile={cert}", "--ssl_keyfile={other_key}"], "key must belong"),
        (["--ssl_certfile={missing}", "--ssl_keyfile={key}"], "cannot load"),
    ],
)
def test_wrong_tls_flags_stop_start_up_with_one_line(
    ca, model_args, flags: list[str], message: str
) -> None:
    server, other = ca.server(), ca.client()
    values = {
        "cert": server.cert,
        "key": server.key,
        "other_key": other.key,
        "ca": ca.cert_path,
        "missing": ca.folder / "missing.crt",
    }

    failed = _serve_fails(*model_args, *(flag.format(**values) for flag in flags))

    assert failed.returncode == 2, failed.stderr
    assert message in failed.stderr
    assert "Traceback" not in failed.stderr


def test_sagemaker_mode_refuses_tls_flags(ca, tmp_path: Path) -> None:
    write_model(scale_model(2.0), tmp_path / "sm" / "m", 1)
    pair = ca.server()

    failed = _serve_fails(
        "--sagemaker",
        f"--sagemaker_model_dir={tmp_path / 'sm'}",
        f"--ssl_certfile={pair.cert}",
        f"--ssl_keyfile={pair.key}",
    )

    assert failed.returncode == 2, failed.stderr
    assert "SageMaker calls a container over plain HTTP" in failed.stderr
