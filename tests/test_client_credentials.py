"""`ferry.Client` with credentials and TLS against real `ferry serve --auth` processes:
bearer tokens over REST and gRPC, SigV4 over REST (keys made by `ferry keys create --json`
as a process, whose JSON names the id as the text does), gRPC over TLS
(`--ssl_config_file`) and HTTPS (`--ssl_certfile`) verified against a test CA."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.certificates import CertificateAuthority
from support.models import scale_model, write_model
from support.server import FerryProcess

import ferry
from ferry.errors import FerryError, StatusCode

X = np.ones((1, 4), dtype=np.float32)
DOUBLED = [[2.0, 2.0, 2.0, 2.0]]


def create_key(path: Path, kind: str) -> dict:
    command = ["keys", "create", "--file", str(path), "--kind", kind, "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "ferry.cli", *command],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    return path, create_key(path, "sigv4"), create_key(path, "token")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, dict, dict]) -> FerryProcess:
    tmp = tmp_path_factory.mktemp("auth")
    write_model(scale_model(2.0), tmp / "m", 1)
    args = ["--model_name=m", f"--model_base_path={tmp / 'm'}", "--auth", str(keys[0])]
    process = FerryProcess(args, tmp / "ferry.log")
    try:
        yield process.wait_ready()
    finally:
        process.stop()


def test_keys_create_json_names_the_sigv4_id_as_the_text_and_aws_do(keys) -> None:
    _, sigv4, token = keys
    assert sigv4["aws_access_key_id"].startswith("FKIA")
    assert sigv4["aws_secret_access_key"]
    assert sigv4["id"] == sigv4["aws_access_key_id"]  # the old name, kept for a release
    assert set(token) == {"id", "token", "kind", "scopes"}


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_a_bearer_token_is_sent_on_rest_and_grpc(server, keys, transport: str) -> None:
    target = server.url if transport == "rest" else f"grpc://{server.grpc_target}"
    with ferry.Client(target, token=keys[2]["token"], timeout=20) as client:
        assert client.predict("m", X)["y"].tolist() == DOUBLED
    with ferry.Client(target, timeout=20) as anonymous, pytest.raises(FerryError) as refused:
        anonymous.predict("m", X)
    # REST answers as AWS does (403 "Missing Authentication Token"), gRPC UNAUTHENTICATED.
    assert refused.value.code in (StatusCode.UNAUTHENTICATED, StatusCode.PERMISSION_DENIED)
    assert "Missing" in str(refused.value)


def test_sigv4_credentials_sign_every_rest_call(server, keys) -> None:
    sigv4 = keys[1]
    pair = (sigv4["aws_access_key_id"], sigv4["aws_secret_access_key"])
    with ferry.Client(server.url, aws_credentials=pair, timeout=20) as client:
        assert client.predict("m", X)["y"].tolist() == DOUBLED
        assert client.status("m")[0].state == "AVAILABLE"
    wrong = (sigv4["aws_access_key_id"], "not-the-secret")
    with (
        ferry.Client(server.url, aws_credentials=wrong, timeout=20) as client,
        pytest.raises(FerryError) as refused,
    ):
        client.predict("m", X)
    assert refused.value.code in (StatusCode.UNAUTHENTICATED, StatusCode.PERMISSION_DENIED)


def test_options_that_do_not_go_together_are_refused(keys) -> None:
    with pytest.raises(ValueError, match="not SigV4"):
        ferry.Client("grpc://127.0.0.1:1", aws_credentials=("a", "b"))
    with pytest.raises(ValueError, match="not both"):
        ferry.Client("127.0.0.1:1", token="t", aws_credentials=("a", "b"))
    with pytest.raises(ValueError, match="https"):
        ferry.Client("http://127.0.0.1:1", tls=True)


def test_grpc_over_tls_with_the_servers_ca(tmp_path: Path, start_server) -> None:
    ca = CertificateAuthority(tmp_path / "pki")
    pair = ca.server()
    ssl_config = tmp_path / "ssl.txt"
    ssl_config.write_text(
        f"server_key: {pair.key.read_text()!r}\nserver_cert: {pair.cert.read_text()!r}\n"
    )
    write_model(scale_model(2.0), tmp_path / "m", 1)
    server = start_server(
        "--model_name=m", f"--model_base_path={tmp_path / 'm'}", f"--ssl_config_file={ssl_config}"
    )
    target = f"grpc://{server.grpc_target}"
    with ferry.Client(target, tls=True, ca_file=ca.cert_path, timeout=20) as client:
        assert client.predict("m", X)["y"].tolist() == DOUBLED
    with (
        ferry.Client(target, tls=True, timeout=5) as untrusted,
        pytest.raises(FerryError) as refused,
    ):
        untrusted.predict("m", X)
    assert refused.value.code == StatusCode.UNAVAILABLE


def test_https_with_the_servers_ca(
    tmp_path: Path, start_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests takes these over a session's `verify`: the test CA must be the one used.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    ca = CertificateAuthority(tmp_path / "pki")
    pair = ca.server()
    write_model(scale_model(2.0), tmp_path / "m", 1)
    server = start_server(
        "--model_name=m",
        f"--model_base_path={tmp_path / 'm'}",
        f"--ssl_certfile={pair.cert}",
        f"--ssl_keyfile={pair.key}",
        ready=False,
    )
    url = f"https://127.0.0.1:{server.port}"
    server.url = url
    server.session.verify = str(ca.cert_path)
    server.wait_ready(timeout=60)
    with ferry.Client(url, ca_file=ca.cert_path, timeout=20) as client:
        assert client.predict("m", X)["y"].tolist() == DOUBLED
