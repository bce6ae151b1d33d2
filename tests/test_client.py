"""`ferry.Client` against a real ferry process, over REST and over gRPC alike."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from support.models import (
    sleepy_model,
    write_model,
    write_protocol_models,
)
from support.server import FerryProcess

import ferry
from ferry.client import RetryPolicy
from ferry.errors import InvalidArgument, NotFound, Unavailable

X = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> FerryProcess:
    # One server for the module: the client tests only read from it.
    tmp = tmp_path_factory.mktemp("client")
    root = tmp / "models"
    write_protocol_models(root, mlp=False)
    config = tmp / "models.config"
    config.write_text(
        "model_config_list {"
        + "".join(f' config {{ name: "{m}" base_path: "{root / m}" }}' for m in ("pair", "echo"))
        + f' config {{ name: "ints" base_path: "{root / "ints"}" }}'
        + f' config {{ name: "scale" base_path: "{root / "scale"}"'
        ' model_version_policy { all {} } version_labels { key: "stable" value: 1 } }'
        "}"
    )
    process = FerryProcess(["--model_config_file", str(config)], tmp / "ferry.log")
    try:
        process.wait_ready()
        for model, version in [("scale", 1), ("scale", 2), ("pair", 1), ("echo", 1), ("ints", 1)]:
            process.wait_version(model, version)
        yield process
    finally:
        process.stop()


@pytest.fixture(params=["rest", "grpc"])
def client(request: pytest.FixtureRequest, server: FerryProcess) -> ferry.Client:
    target = server.url if request.param == "rest" else f"grpc://{server.grpc_target}"
    with ferry.Client(target, timeout=20) as client:
        yield client


def test_predict_takes_a_bare_array_and_returns_named_arrays_of_the_signature_dtype(
    client: ferry.Client,
) -> None:
    outputs = client.predict("scale", X.astype(np.float64))

    assert list(outputs) == ["y"]
    assert outputs["y"].dtype == np.float32
    np.testing.assert_array_equal(outputs["y"], X * 2)


def test_predict_with_named_inputs_version_and_label(client: ferry.Client) -> None:
    a, b = np.ones((1, 2), np.float32), np.full((1, 2), 3.0, np.float32)

    pair = client.predict("pair", {"a": a, "b": b})

    assert {k: v.tolist() for k, v in pair.items()} == {"sum": [[4.0, 4.0]], "prod": [[3.0, 3.0]]}
    np.testing.assert_array_equal(client.predict("scale", X, version=1)["y"], X)
    np.testing.assert_array_equal(client.predict("scale", X, label="stable")["y"], X)


def test_predict_bytes_and_integers(client: ferry.Client) -> None:
    text = np.array([b"hello", "wörld".encode()], dtype=object)

    assert client.predict("echo", text)["text_bytes"].tolist() == list(text)
    twice = client.predict("ints", np.array([[1, 2, 3]]))["twice"]
    assert twice.dtype == np.int64 and twice.tolist() == [[2, 4, 6]]


def test_status_and_metadata(client: ferry.Client) -> None:
    statuses = client.status("scale")
    metadata = client.metadata("scale", version=1)

    assert [(s.version, s.state, s.error_code) for s in statuses] == [
        (2, "AVAILABLE", "OK"),
        (1, "AVAILABLE", "OK"),
    ]
    assert (metadata.name, metadata.version) == ("scale", 1)
    signature = metadata.signatures["serving_default"]
    assert signature.inputs["x"].dtype == np.float32
    assert signature.inputs["x"].shape == (-1, 4)


def test_errors_are_raised_as_ferry_errors_with_the_server_message(client: ferry.Client) -> None:
    with pytest.raises(NotFound, match=r"Could not find any versions of model nope"):
        client.status("nope")
    with pytest.raises(InvalidArgument, match=r"Input 'x' has shape \[1, 3\]"):
        client.predict("scale", np.ones((1, 3), np.float32))


def test_retry_delays_grow_exponentially_with_jitter_and_a_cap() -> None:
    policy = RetryPolicy(initial_backoff=0.1, multiplier=2, max_backoff=0.5, jitter=0.5)

    delays = [[policy.delay(attempt) for _ in range(200)] for attempt in (1, 2, 3, 4)]

    for attempt, samples in zip((1, 2, 3, 4), delays, strict=True):
        top = min(0.5, 0.1 * 2 ** (attempt - 1))
        assert all(top * 0.5 <= d <= top for d in samples)
        assert max(samples) - min(samples) > top * 0.2, "no jitter"


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_a_full_queue_is_retried_until_it_has_room(
    transport: str, model_root: Path, start_server, tmp_path: Path
) -> None:
    write_model(sleepy_model(iterations=2000), model_root / "busy", 1)
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 1 }\nmax_enqueued_batches { value: 1 }\n")
    server = start_server(str(model_root), "--batching_parameters_file", str(params))
    server.wait_version("busy", 1)
    target = server.url if transport == "rest" else f"grpc://{server.grpc_target}"
    x = np.ones((1, 4), np.float32)

    def run_concurrently(retry: RetryPolicy) -> list[object]:
        results: list[object] = []
        lock = threading.Lock()

        def call() -> None:
            with ferry.Client(target, timeout=60, retry=retry) as client:
                try:
                    outcome: object = client.predict("busy", x)["y"]
                except Unavailable as exc:
                    outcome = exc
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    without = run_concurrently(RetryPolicy(max_attempts=1))
    patient = run_concurrently(RetryPolicy(max_attempts=60, initial_backoff=0.05, max_backoff=0.3))

    assert any(isinstance(r, Unavailable) for r in without), "the queue never filled"
    assert all(isinstance(r, np.ndarray) and r.tolist() == x.tolist() for r in patient), patient


def test_the_timeout_bounds_the_whole_call_retries_included() -> None:
    # A server that is always full (every answer TF Serving's 503): the client retries,
    # but the call as a whole still ends by its timeout instead of restarting it per try.
    import http.server
    import time

    class AlwaysFull(http.server.BaseHTTPRequestHandler):
        def _full(self) -> None:
            body = b'{"error": "The batch queue is full; retry later"}'
            self.send_response(503)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _full

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AlwaysFull)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    retry = RetryPolicy(max_attempts=1000, initial_backoff=0.2, max_backoff=0.2, jitter=0)
    try:
        with ferry.Client(f"127.0.0.1:{server.server_port}", timeout=0.5, retry=retry) as client:
            started = time.monotonic()
            with pytest.raises(Unavailable):
                client.predict("scale", X)
            elapsed = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert elapsed <= 0.5, f"a 0.5 s timeout took {elapsed:.2f} s"
