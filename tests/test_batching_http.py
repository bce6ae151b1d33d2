"""Dynamic batching seen from outside: real concurrent HTTP requests to a real server."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import requests
from support.models import sleepy_model, slow_model, write_model


def histogram(text: str, family: str, model: str) -> tuple[dict[str, float], float]:
    """Bucket counts by upper bound, and the total count, of one model's histogram."""
    buckets = {}
    count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{family}_bucket{{") and f'model="{model}"' in line:
            bound = re.search(r'le="([^"]+)"', line).group(1)
            buckets[bound] = buckets.get(bound, 0.0) + float(line.split()[-1])
        elif line.startswith(f"{family}_count{{") and f'model="{model}"' in line:
            count += float(line.split()[-1])
    return buckets, count


def test_concurrent_requests_are_merged_and_results_equal_unbatched(
    model_root: Path, start_server
) -> None:
    write_model(slow_model(), model_root / "slow", 1)
    server = start_server(str(model_root))
    server.wait_version("slow", 1)
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((1 + i % 3, 512)).astype(np.float32) for i in range(96)]
    session = ort.InferenceSession(
        str(model_root / "slow/1/model.onnx"), providers=["CPUExecutionProvider"]
    )
    expected = [session.run(None, {"x": x})[0] for x in inputs]

    def call(x: np.ndarray) -> np.ndarray:
        response = requests.post(
            f"{server.url}/v1/models/slow:predict", json={"instances": x.tolist()}, timeout=30
        )
        assert response.status_code == 200, response.text
        return np.array(response.json()["predictions"], dtype=np.float32)

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(call, inputs))
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

    buckets, batches = histogram(
        server.get("/monitoring/prometheus/metrics").text, "ferry_batch_size_rows", "slow"
    )
    warmup_and_single = buckets["1.0"]
    assert batches > 0
    assert batches - warmup_and_single > 0, "no batch held more than one row"
    assert batches < 1 + len(inputs), "every request ran alone: nothing was merged"


def test_full_queue_answers_503_at_once_and_keeps_serving(
    model_root: Path, start_server, tmp_path: Path
) -> None:
    write_model(sleepy_model(iterations=2000), model_root / "busy", 1)
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 1 }\nmax_enqueued_batches { value: 2 }\n")
    server = start_server(str(model_root), "--batching_parameters_file", str(params))
    server.wait_version("busy", 1)
    body = {"instances": [[1.0, 2.0, 3.0, 4.0]]}
    outcomes: list[requests.Response] = []
    lock = threading.Lock()

    def call() -> None:
        response = requests.post(f"{server.url}/v1/models/busy:predict", json=body, timeout=60)
        with lock:
            outcomes.append(response)

    threads = [threading.Thread(target=call) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(r.status_code for r in outcomes)
    assert set(codes) == {200, 503}, codes
    refused = [r for r in outcomes if r.status_code == 503]
    assert all(r.headers["Retry-After"] == "1" for r in refused)
    assert all("queue" in r.json()["error"] for r in refused)
    assert all(
        r.json() == {"predictions": [[1.0, 2.0, 3.0, 4.0]]}
        for r in outcomes
        if r.status_code == 200
    )
    assert server.predict("busy", body).status_code == 200


def test_per_model_batching_parameters_override_the_global_ones(
    model_root: Path, start_server
) -> None:
    write_model(slow_model(), model_root / "padded", 1)
    (model_root / "padded" / "batching_params.pbtxt").write_text(
        "max_batch_size { value: 8 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n"
    )
    write_model(slow_model(), model_root / "plain", 1)
    server = start_server(str(model_root))
    server.wait_version("padded", 1)
    server.wait_version("plain", 1)
    body = {"instances": np.ones((3, 512), dtype=np.float32).tolist()}
    for model in ("padded", "plain"):
        assert server.predict(model, body).status_code == 200
    text = server.get("/monitoring/prometheus/metrics").text
    assert 'ferry_batch_padding_rows_total{model="padded",version="1"} 1.0' in text
    assert 'ferry_batch_padding_rows_total{model="plain",version="1"} 0.0' in text
    # Ten rows exceed the per-model max of 8: the request is split, and still answered whole.
    ten = {"instances": np.ones((10, 512), dtype=np.float32).tolist()}
    response = server.predict("padded", ten)
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 10


def test_batching_can_be_turned_off(model_root: Path, start_server) -> None:
    write_model(slow_model(), model_root / "slow", 1)
    server = start_server(str(model_root), "--enable_batching=false")
    server.wait_version("slow", 1)
    x = np.ones((1, 512), dtype=np.float32).tolist()

    def call(_: int) -> int:
        response = requests.post(
            f"{server.url}/v1/models/slow:predict", json={"instances": x}, timeout=30
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert set(pool.map(call, range(48))) == {200}
    buckets, batches = histogram(
        server.get("/monitoring/prometheus/metrics").text, "ferry_batch_size_rows", "slow"
    )
    assert batches == 48
    assert buckets["1.0"] == 48
