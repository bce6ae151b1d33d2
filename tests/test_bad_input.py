"""Bad requests get a clear TF Serving-style error while good traffic keeps succeeding."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests
from support.models import lookup_model, scale_model, write_model
from support.server import FerryProcess

GOOD = {"instances": [[1.0, 2.0, 3.0, 4.0]]}

# (description, model path suffix, body bytes, expected HTTP status, expected message part)
BAD_REQUESTS = [
    ("malformed JSON", "m", b'{"instances": [[1.0, 2.0', 400, "JSON Parse error"),
    ("not an object", "m", b"[1, 2, 3]", 400, "JSON Value: [1, 2, 3] Is not object"),
    ("strings for floats", "m", b'{"instances": [["a", "b", "c", "d"]]}', 400, "holds strings"),
    ("ragged rows", "m", b'{"instances": [[1.0, 2.0, 3.0, 4.0], [1.0]]}', 400, "ragged"),
    ("wrong width", "m", b'{"instances": [[1.0, 2.0, 3.0]]}', 400, "dimension 1 must be 4"),
    ("wrong rank", "m", b'{"instances": [1.0, 2.0, 3.0, 4.0]}', 400, "rank"),
    (
        "both keys",
        "m",
        b'{"instances": [[1,2,3,4]], "inputs": [[1,2,3,4]]}',
        400,
        "only one of 'inputs' or 'instances'",
    ),
    (
        "neither key",
        "m",
        b'{"signature_name": "serving_default"}',
        400,
        "Missing 'inputs' or 'instances' key",
    ),
    ("empty instances", "m", b'{"instances": []}', 400, "No values in 'instances' array"),
    (
        "unknown input name",
        "m",
        b'{"inputs": {"nope": [[1,2,3,4]]}}',
        400,
        "Missing named input: x",
    ),
    (
        "unknown signature",
        "m",
        b'{"signature_name": "nope", "instances": [[1,2,3,4]]}',
        400,
        'Serving signature name: "nope" not found',
    ),
    (
        "unknown model",
        "nope",
        b'{"instances": [[1,2,3,4]]}',
        404,
        "Servable not found for request: Latest(nope)",
    ),
    (
        "unknown version",
        "m/versions/9",
        b'{"instances": [[1,2,3,4]]}',
        404,
        "Servable not found for request: Specific(m, 9)",
    ),
    (
        "unknown label",
        "m/labels/gold",
        b'{"instances": [[1,2,3,4]]}',
        400,
        "Unrecognized servable version label: gold",
    ),
    (
        "body too large",
        "m",
        b'{"instances": [' + b"[1.0,2.0,3.0,4.0]," * 200 + b"[1,2,3,4]]}",
        413,
        "--max_request_bytes",
    ),
    (
        "index out of range at run time",
        "lookup",
        b'{"instances": [99]}',
        500,
        "The model failed while running",
    ),
]


@pytest.fixture
def server(model_root: Path, start_server) -> FerryProcess:
    write_model(scale_model(2.0), model_root / "m", 1)
    write_model(lookup_model(), model_root / "lookup", 1)
    server = start_server(str(model_root), "--max_request_bytes", "2048")
    server.wait_version("m", 1)
    server.wait_version("lookup", 1)
    return server


def test_each_bad_request_fails_alone_while_good_traffic_succeeds(server: FerryProcess) -> None:
    good_results: list[int] = []
    lookup_results: list[tuple[int, object]] = []
    stop = threading.Event()

    def good_traffic() -> None:
        session = requests.Session()
        while not stop.is_set():
            response = session.post(f"{server.url}/v1/models/m:predict", json=GOOD, timeout=10)
            good_results.append(response.status_code)
            assert response.json() == {"predictions": [[2.0, 4.0, 6.0, 8.0]]}

    def good_lookups() -> None:
        # Valid lookups share batches with the failing one; they must still succeed.
        session = requests.Session()
        while not stop.is_set():
            response = session.post(
                f"{server.url}/v1/models/lookup:predict", json={"instances": [1, 2]}, timeout=10
            )
            lookup_results.append((response.status_code, response.json()))

    workers = [threading.Thread(target=good_traffic) for _ in range(3)]
    workers += [threading.Thread(target=good_lookups) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        for description, target, body, status, message in BAD_REQUESTS:
            for _ in range(3):
                response = server.post(
                    f"/v1/models/{target}:predict",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                assert response.status_code == status, (description, response.text)
                assert response.headers["content-type"] == "application/json"
                error = response.json()["error"]
                assert message in error, (description, error)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert good_results and set(good_results) == {200}
    assert lookup_results
    assert all(
        code == 200 and body == {"predictions": [[2.0, 3.0], [4.0, 5.0]]}
        for code, body in lookup_results
    )
    assert server.process.poll() is None


def test_chunked_body_over_the_limit_is_refused(server: FerryProcess) -> None:
    def chunks():
        yield b'{"instances": ['
        for _ in range(300):
            yield b"[1.0, 2.0, 3.0, 4.0],"
        yield b"[1.0, 2.0, 3.0, 4.0]]}"

    response = server.post("/v1/models/m:predict", data=chunks())
    assert response.status_code == 413
    assert "--max_request_bytes" in response.json()["error"]
    assert server.predict("m", GOOD).status_code == 200
