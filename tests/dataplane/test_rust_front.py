"""The Rust HTTP front (`ferry serve --dataplane rust`, ferry.dataplane) against the
Python front: the same requests, sent as raw bytes to two real servers over the same
models, get the same status, headers and body; pipelining, the connection limit, the
body deadline and the SIGTERM drain behave as on the Python front.

Where the two differ on purpose (hyper's own answers to a head over the limits), the
test says so and checks what is still promised: the status and a closed connection.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support.certificates import CertificateAuthority
from support.cli import run_ferry
from support.dataplane import rust_front_or_skip
from support.models import mlp_model, scale_model, sleepy_model, write_model
from support.server import FerryProcess, free_port, wait_until

# Headers that differ between any two answers (request ids are generated per request).
VOLATILE = {"x-request-id", "x-amzn-requestid", "date"}
LIMIT = 4096


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def stable_headers(self) -> list[tuple[str, str]]:
        return sorted((k, v) for k, v in self.headers if k not in VOLATILE)


class Connection:
    """A raw HTTP/1.1 connection that reads answers one at a time from one buffer (so
    pipelined answers are each read whole)."""

    def __init__(self, port: int, timeout: float = 10.0, tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def read(self) -> Answer:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise AssertionError(f"closed before a full head: {self.buffer!r}")
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        length = int(dict(headers).get("content-length", "0"))
        while len(rest) < length:
            self.buffer = head + b"\r\n\r\n" + rest
            if not self._fill():
                raise AssertionError("closed before the whole body")
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
        self.buffer = rest[length:]
        return Answer(int(lines[0].split()[1]), headers, rest[:length])

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return False


def request(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1"]
    all_headers = {"content-type": "application/json", **(headers or {})}
    if body and "transfer-encoding" not in all_headers:
        all_headers["content-length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(body: bytes, size: int = 1000) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


def exchange(port: int, raw: bytes) -> Answer:
    connection = Connection(port)
    try:
        connection.sock.sendall(raw)
        return connection.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("front-models")
    write_model(mlp_model(), root / "mlp", 1)
    write_model(scale_model(2.0), root / "scale", 1)
    return root


@pytest.fixture(scope="module")
def fronts(models: Path, tmp_path_factory: pytest.TempPathFactory):
    rust_front_or_skip()
    logs = tmp_path_factory.mktemp("front-logs")
    common = [str(models), "--max_request_bytes", str(LIMIT), "--max_header_bytes", "16384"]
    python = FerryProcess([*common, "--dataplane", "python"], logs / "python.log")
    rust = FerryProcess([*common, "--dataplane", "rust"], logs / "rust.log")
    try:
        python.wait_ready()
        rust.wait_ready()
        assert "the Rust front" in rust.log()
        yield python, rust
    finally:
        assert python.stop() == 0
        assert rust.stop() == 0


def _rows(n: int) -> list[list[float]]:
    return np.round(np.random.default_rng(n).random((n, 4)), 3).tolist()


SCALE = {"x-amzn-sagemaker-custom-attributes": "tfs-model-version=1"}
CSV = {"content-type": "text/csv"}
CASES = {
    "model status": request("GET", "/v1/models/mlp"),
    "metadata": request("GET", "/v1/models/scale/metadata"),
    "predict": request(
        "POST", "/v1/models/scale:predict", json.dumps({"instances": _rows(3)}).encode()
    ),
    "predict columnar": request(
        "POST", "/v1/models/scale:predict", json.dumps({"inputs": _rows(2)}).encode()
    ),
    "percent-encoded path": request(
        "POST", "/v1/models/sc%61le:predict", json.dumps({"instances": _rows(1)}).encode()
    ),
    "predict, rows in every number form": request(
        "POST",
        "/v1/models/scale:predict",
        b'{"signature_name": "serving_default", "instances": [[-0, 1e-3, 2.5E+2, 7], '
        b"[0.1, -0.0, 123456789012345, 1e-45]]}",
    ),
    "predict, an integer beyond 15 digits": request(
        "POST", "/v1/models/scale:predict", b'{"instances": [[1234567890123456789, 1, 2, 3]]}'
    ),
    "predict, unknown signature": request(
        "POST",
        "/v1/models/scale:predict",
        b'{"signature_name": "nope", "instances": [[1, 2, 3, 4]]}',
    ),
    "predict, wrong width": request("POST", "/v1/models/scale:predict", b'{"instances": [[1, 2]]}'),
    "bad json": request("POST", "/v1/models/scale:predict", b"{not json"),
    "unknown model": request("POST", "/v1/models/nope:predict", b'{"instances": [[1.0]]}'),
    "wrong method": request("GET", "/v1/models/scale:predict"),
    "unknown route": request("GET", "/no/such/thing?x=1"),
    "v2 ready": request("GET", "/v2/health/ready"),
    "v2 metadata": request("GET", "/v2/models/scale"),
    "v2 infer": request(
        "POST",
        "/v2/models/scale/infer",
        json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        ).encode(),
    ),
    # V2 bodies the Rust front decodes (and its tritonclient parameters), and ones Python's
    # checks refuse after it decoded them.
    "v2 infer, tritonclient's body with an id": request(
        "POST",
        "/v2/models/scale/versions/1/infer",
        json.dumps(
            {
                "id": "r-7",
                "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [0.1] * 8}],
                "parameters": {"binary_data_output": True},
            }
        ).encode(),
    ),
    "v2 infer, FP64 for an FP32 input": request(
        "POST",
        "/v2/models/scale/infer",
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}',
    ),
    "v2 infer, data short of the shape": request(
        "POST",
        "/v2/models/scale/infer",
        b'{"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
    ),
    "v2 infer, unknown input": request(
        "POST",
        "/v2/models/scale/infer",
        b'{"inputs": [{"name": "q", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
    ),
    # SageMaker's runtime API: a JSON payload of plain rows is decoded by the Rust front,
    # a CSV one never is (even one that reads as JSON rows).
    "runtime api, rows": request(
        "POST", "/endpoints/scale/invocations", json.dumps({"instances": _rows(3)}).encode(), SCALE
    ),
    "runtime api, a bare list of rows": request(
        "POST", "/endpoints/scale/invocations", json.dumps(_rows(2)).encode(), SCALE
    ),
    "runtime api, rows of the wrong width": request(
        "POST", "/endpoints/scale/invocations", b'{"instances": [[1, 2]]}', SCALE
    ),
    "runtime api, csv": request(
        "POST", "/endpoints/scale/invocations", b"1,2,3,4\n5,6,7,8", {**SCALE, **CSV}
    ),
    "runtime api, json rows sent as csv": request(
        "POST", "/endpoints/scale/invocations", b'{"instances": [[1, 2, 3, 4]]}', {**SCALE, **CSV}
    ),
    "declared body over the limit": request("POST", "/v1/models/scale:predict", b"x" * (LIMIT + 1)),
    "chunked body over the limit": request(
        "POST",
        "/v1/models/scale:predict",
        chunked(b" " * (LIMIT + 10)),
        {"transfer-encoding": "chunked"},
    ),
    "chunked body within the limit": request(
        "POST",
        "/v1/models/scale:predict",
        chunked(json.dumps({"instances": _rows(4)}).encode(), 7),
        {"transfer-encoding": "chunked"},
    ),
    "metrics": request("GET", "/monitoring/prometheus/metrics?name=none"),
    # Heads over ferry's limits (16 KiB, 100 headers here), and over hyper's own (twice
    # ferry's), which the front's head watch refuses before hyper reads them.
    "head over the limit": request("GET", "/v1/models/mlp", headers={"x-big": "a" * 20_000}),
    "head over twice the limit": request("GET", "/v1/models/mlp", headers={"x-big": "a" * 60_000}),
    "far too many headers": request(
        "GET", "/v1/models/mlp", headers={f"x-{i}": "1" for i in range(1000)}
    ),
    "url over twice the limit": request("GET", "/v1/models/mlp?" + "a" * 60_000),
    "too many headers": request(
        "GET", "/v1/models/mlp", headers={f"x-{i}": "1" for i in range(120)}
    ),
    "url over the limit": request("GET", "/v1/models/mlp?" + "a" * 20_000),
}

# Cases that must be served, not refused.
ANSWERED = {
    "predict",
    "predict, rows in every number form",
    "v2 infer",
    "v2 infer, tritonclient's body with an id",
    "runtime api, rows",
    "runtime api, a bare list of rows",
    "runtime api, csv",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_rust_front_answers_with_the_python_fronts_bytes(fronts, case: str) -> None:
    python, rust = fronts
    want = exchange(python.port, CASES[case])
    got = exchange(rust.port, CASES[case])
    if case == "metrics":  # counters move with every request: compare the form only
        content_type = [(k, v) for k, v in want.headers if k == "content-type"]
        assert got.status == want.status
        assert [(k, v) for k, v in got.headers if k == "content-type"] == content_type
        return
    assert got.status == want.status, (got, want)
    assert got.body == want.body
    if case in ANSWERED:  # equal answers, and the right ones: not two equal errors
        assert want.status == 200, want
    assert got.stable_headers() == want.stable_headers()


def test_pipelined_requests_are_answered_in_order(fronts) -> None:
    _, rust = fronts
    bodies = [json.dumps({"instances": [[float(i)] * 4]}).encode() for i in range(5)]
    connection = Connection(rust.port)
    try:
        connection.sock.sendall(
            b"".join(request("POST", "/v1/models/scale:predict", b) for b in bodies)
        )
        answers = [connection.read() for _ in bodies]
    finally:
        connection.close()
    assert [json.loads(a.body)["predictions"][0][0] for a in answers] == [2.0 * i for i in range(5)]


def test_a_body_over_the_limit_closes_the_connection(fronts) -> None:
    _, rust = fronts
    connection = Connection(rust.port)
    try:
        connection.sock.sendall(request("POST", "/v1/models/scale:predict", b"x" * (LIMIT + 1)))
        answer = connection.read()
        assert answer.status == 413
        assert ("connection", "close") in answer.headers
        assert connection.closed_by_server()
    finally:
        connection.close()


def test_a_head_pipelined_behind_a_request_is_refused_after_its_answer(fronts) -> None:
    # A head that arrives while an earlier request of its connection is being handled:
    # the earlier request is answered, then the head refused, in order, on both fronts.
    # (On the Rust front it reaches hyper unwatched and the service judges it.)
    predict = request(
        "POST", "/v1/models/scale:predict", json.dumps({"instances": _rows(2)}).encode()
    )
    too_large = request("GET", "/v1/models/mlp", headers={"x-big": "a" * 20_000})
    answers = []
    for front in fronts:
        connection = Connection(front.port)
        try:
            connection.sock.sendall(predict + too_large)
            answers.append((connection.read(), connection.read()))
            assert connection.closed_by_server()
        finally:
            connection.close()
    (python_first, python), (rust_first, rust) = answers
    assert python_first.status == rust_first.status == 200, (python_first, rust_first)
    assert rust_first.body == python_first.body
    assert python.status == rust.status == 431, (python, rust)
    assert rust.body == python.body
    assert rust.stable_headers() == python.stable_headers()


def _server(models: Path, tmp_path: Path, *flags: str) -> FerryProcess:
    rust_front_or_skip()
    return FerryProcess(
        [str(models), "--dataplane", "rust", *flags], tmp_path / "rust.log"
    ).wait_ready()


def _python_server(models: Path, tmp_path: Path, *flags: str) -> FerryProcess:
    return FerryProcess(
        [str(models), "--dataplane", "python", *flags], tmp_path / "py.log"
    ).wait_ready()


def _open_until_refused(server: FerryProcess, most: int) -> tuple[int, Answer]:
    """Open connections, each asked for liveness, until one is refused: how many were
    served, and the refusal."""
    server.session.close()  # its kept-alive connection would count
    time.sleep(0.5)  # until the server has seen it close
    held: list[Connection] = []
    try:
        for _ in range(most):
            connection = Connection(server.port)
            held.append(connection)
            connection.sock.sendall(request("GET", "/v2/health/live"))
            answer = connection.read()
            if answer.status != 200:
                return len(held) - 1, answer
        raise AssertionError(f"{most} connections and none refused")
    finally:
        for connection in held:
            connection.close()


def test_connections_over_the_limit_get_the_python_fronts_refusal(
    models: Path, tmp_path: Path
) -> None:
    python_server = _python_server(models, tmp_path, "--max_connections", "3")
    try:
        python_served, python = _open_until_refused(python_server, 6)
    finally:
        assert python_server.stop() == 0
    rust_server = _server(models, tmp_path, "--max_connections", "3")
    try:
        served, rust = _open_until_refused(rust_server, 6)
        # Once it has seen them close, the server takes connections again.
        wait_until(
            lambda: rust_server.get("/v2/health/live").status_code == 200,
            10,
            message="a connection served after the held ones closed",
        )
    finally:
        assert rust_server.stop() == 0
    # At most the limit; one fewer while the test client's closed connection still counts.
    assert 2 <= served <= 3 and 2 <= python_served <= 3
    assert rust.status == python.status == 503
    assert rust.body == python.body
    assert rust.headers == python.headers


def test_a_dribbled_body_gets_the_python_fronts_408(models: Path, tmp_path: Path) -> None:
    answers = []
    for start in (_python_server, _server):
        server = start(models, tmp_path, "--http_body_timeout_seconds", "1")
        connection = Connection(server.port)
        try:
            connection.sock.sendall(
                request("POST", "/v1/models/scale:predict", b"")[:-2]
                + b"content-length: 100\r\n\r\n{"
            )
            answers.append(connection.read())
        finally:
            connection.close()
            assert server.stop() == 0
    python, rust = answers
    assert rust.status == python.status == 408
    assert rust.body == python.body


def test_late_heads_get_the_python_fronts_408(models: Path, tmp_path: Path) -> None:
    """A connection that sends nothing, one whose head stops halfway, and a kept-alive one
    whose next head stops halfway: each gets the Python front's 408 at the head deadline,
    counted from the connection (or from the next head's first byte), then the end."""
    flags = ("--http_header_timeout_seconds", "1", "--http_keep_alive_timeout_seconds", "5")
    answers: dict[str, list[tuple[Answer, float]]] = {}
    for start in (_python_server, _server):
        server = start(models, tmp_path, *flags)
        try:
            opened = time.monotonic()
            silent, halfway, kept = (Connection(server.port) for _ in range(3))
            kept.sock.sendall(request("GET", "/v2/health/live"))
            assert kept.read().status == 200
            time.sleep(0.5)  # the next head's deadline runs from its first byte
            started = time.monotonic()
            halfway.sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x")
            kept.sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
            since = {"silent": opened, "halfway": opened, "kept": started}
            for name, connection in (("silent", silent), ("halfway", halfway), ("kept", kept)):
                answer = connection.read()
                answers.setdefault(name, []).append((answer, time.monotonic() - since[name]))
                assert connection.closed_by_server(), (start.__name__, name)
                connection.close()
        finally:
            assert server.stop() == 0
    for name, ((python, _), (rust, waited)) in answers.items():
        assert python.status == rust.status == 408, name
        assert rust.body == python.body, name
        assert rust.stable_headers() == python.stable_headers(), name
        assert 0.9 <= waited <= 3, (name, waited)


def test_an_idle_kept_alive_connection_closes_at_the_keep_alive_timeout(
    models: Path, tmp_path: Path
) -> None:
    """Both fronts close an answered, idle connection after
    `--http_keep_alive_timeout_seconds`, and leave a connection that has sent nothing yet
    to the (longer) head deadline."""
    flags = ("--http_keep_alive_timeout_seconds", "1", "--http_header_timeout_seconds", "10")
    for start in (_python_server, _server):
        server = start(models, tmp_path, *flags)
        answered, silent = Connection(server.port), Connection(server.port)
        try:
            answered.sock.sendall(request("GET", "/v2/health/live"))
            assert answered.read().status == 200
            started = time.monotonic()
            assert answered.closed_by_server(4), start.__name__
            assert time.monotonic() - started < 3, start.__name__
            assert not silent.closed_by_server(1), start.__name__  # still open after 2 s
            silent.sock.sendall(request("GET", "/v2/health/live"))
            assert silent.read().status == 200, start.__name__
        finally:
            answered.close()
            silent.close()
            assert server.stop() == 0


def test_sigterm_lets_the_request_in_flight_finish(tmp_path: Path) -> None:
    rust_front_or_skip()
    write_model(sleepy_model(iterations=4000), tmp_path / "models" / "sleepy", 1)
    server = _server(tmp_path / "models", tmp_path)
    results: list[int] = []

    def call() -> None:
        body = json.dumps({"instances": [[1.0, 2.0, 3.0, 4.0]]}).encode()
        results.append(
            exchange(server.port, request("POST", "/v1/models/sleepy:predict", body)).status
        )

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.2)  # the request is in flight
    server.process.send_signal(signal.SIGTERM)
    caller.join(30)
    assert results == [200]
    assert server.stop() == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def _serve_on_the_rust_front(
    models: Path, rest_port: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`ferry serve` on the Rust front, for tests of how it refuses to start."""
    return run_ferry(
        "serve",
        str(models),
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--rest_api_port",
        str(rest_port),
        "--dataplane",
        "rust",
        *extra,
    )


def test_a_port_in_use_is_one_error_line(models: Path, tmp_path: Path) -> None:
    rust_front_or_skip()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve_on_the_rust_front(models, port)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "could not listen" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_without_the_extension_the_error_says_how_to_build_it(monkeypatch) -> None:
    import sys

    from ferry.dataplane import front
    from ferry.errors import SetupError

    monkeypatch.setitem(sys.modules, "ferry._dataplane", None)
    with pytest.raises(SetupError, match="--dataplane python serves without it"):
        front.load_extension()


def test_auto_takes_the_rust_front_where_it_is_built(monkeypatch, caplog) -> None:
    import sys

    from ferry.dataplane.flags import Dataplane, DataplaneOptions

    rust_front_or_skip()
    auto = DataplaneOptions(kind=Dataplane.AUTO)
    assert auto.chosen() is Dataplane.RUST
    assert DataplaneOptions().chosen() is Dataplane.PYTHON  # the default
    monkeypatch.setitem(sys.modules, "ferry._dataplane", None)  # an install without it
    with caplog.at_level("INFO", logger="ferry.dataplane.flags"):
        assert auto.chosen() is Dataplane.PYTHON
    assert "the Rust front is not built in this install" in caplog.text


def test_https_answers_with_the_python_fronts_bytes(models: Path, tmp_path: Path) -> None:
    """HTTPS (`--ssl_certfile`, rustls on the Rust front): the same answers over TLS, and
    the same readable 400 to plain HTTP on the HTTPS port."""
    rust_front_or_skip()
    authority = CertificateAuthority(tmp_path / "tls")
    pair = authority.server()
    tls_flags = [str(models), "--ssl_certfile", str(pair.cert), "--ssl_keyfile", str(pair.key)]
    python = FerryProcess([*tls_flags, "--dataplane", "python"], tmp_path / "python.log")
    rust = FerryProcess([*tls_flags, "--dataplane", "rust"], tmp_path / "rust.log")
    context = ssl.create_default_context(cafile=str(authority.cert_path))
    body = json.dumps({"instances": _rows(3)}).encode()
    raws = [
        request("POST", "/v1/models/mlp:predict", body),
        request("GET", "/v1/models/mlp"),
        request("POST", "/v1/models/nope:predict", body),
    ]
    try:
        for server in (python, rust):
            server.url = f"https://127.0.0.1:{server.port}"
            server.session.trust_env = False  # else $REQUESTS_CA_BUNDLE wins
            server.session.verify = str(authority.cert_path)
            server.wait_ready()
        assert "REST API on https://" in rust.log()
        for raw in raws:
            answers = []
            for server in (python, rust):
                connection = Connection(server.port, tls=context)
                connection.sock.sendall(raw)
                answers.append(connection.read())
                connection.close()
            assert answers[0].status == answers[1].status, raw
            assert answers[0].stable_headers() == answers[1].stable_headers(), raw
            assert answers[0].body == answers[1].body, raw
        assert answers[0].status == 404
        plain = [exchange(server.port, raws[1]) for server in (python, rust)]
        assert plain[0].status == plain[1].status == 400
        assert plain[0].body == plain[1].body and b"serves HTTPS" in plain[1].body
    finally:
        assert python.stop() == 0
        assert rust.stop() == 0


def test_the_front_decodes_each_body_for_the_route_that_reads_it() -> None:
    """Which decoder the front runs, seen from the app: `:predict` and the runtime API
    get rows, V2 infer gets inputs, and a compressed or binary-extension body neither."""
    rust_front_or_skip()
    import asyncio

    from ferry.codecs.float_rows import FLOAT_ROWS_EXTENSION
    from ferry.codecs.v2 import V2_INPUTS_EXTENSION
    from ferry.dataplane.front import RustHttpFront
    from ferry.transport_limits import HttpLimits

    async def app(scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass
        extensions = sorted(scope.get("extensions", {}))
        body = json.dumps(extensions).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    rows = json.dumps({"instances": [[1.0, 2.0]]}).encode()
    v2 = b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}'
    gzip = {"content-encoding": "gzip"}
    binary = {"inference-header-content-length": str(len(v2))}
    cases = [
        (request("POST", "/v1/models/m:predict", rows), [FLOAT_ROWS_EXTENSION]),
        (request("POST", "/endpoints/m/invocations", rows), [FLOAT_ROWS_EXTENSION]),
        (request("POST", "/v2/models/m/infer", v2), [V2_INPUTS_EXTENSION]),
        (request("POST", "/v2/models/m/versions/2/infer", v2), [V2_INPUTS_EXTENSION]),
        (request("POST", "/v2/models/m/infer", v2, binary), []),
        (request("POST", "/v2/models/m/infer", v2, gzip), []),
        (request("POST", "/v1/models/m:predict", rows, gzip), []),
        (request("POST", "/v1/models/m:classify", rows), []),
        (request("POST", "/v1/models/m:predict", v2), []),
    ]

    async def main() -> list[list[str]]:
        front = RustHttpFront(app, "127.0.0.1", 0, HttpLimits(max_connections=64), LIMIT, 1)
        front.start()
        try:
            loop = asyncio.get_running_loop()
            answers = [
                await loop.run_in_executor(None, exchange, front.port, raw) for raw, _ in cases
            ]
            return [json.loads(answer.body) for answer in answers]
        finally:
            await front.drain(1.0)
            front.stop()

    assert asyncio.run(main()) == [expected for _, expected in cases]
