"""TFLite models through LiteRT, served by a real `ferry serve` process and checked
against LiteRT's own interpreter in-process: signature runners, batch resizing, the
interpreter pool under concurrent runs, and a missing LiteRT."""

from __future__ import annotations

import concurrent.futures
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.framework_models import start_repository_server
from support.server import FerryProcess

pytestmark = pytest.mark.tensorflow
tf_models = pytest.importorskip("support.tf_models")
litert = pytest.importorskip("ai_edge_litert.interpreter")

import ferry  # noqa: E402 - after the skips
from ferry.runtimes import RuntimeOptions, runtime_for  # noqa: E402
from ferry.runtimes.optional import MissingExtra  # noqa: E402

X = np.random.default_rng(4).random((7, 4), dtype=np.float32)


def litert_predict(model_file: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    interpreter = litert.Interpreter(model_path=str(model_file))
    return interpreter.get_signature_runner("serving_default")(x=x)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tflite") / "models"
    model = tf_models.mlp_keras()
    ferry.save(model, root / "mlp", format="tflite")
    # A fixed batch of 1 that ferry may stack because the model says so.
    scratch = tmp_path_factory.mktemp("scratch")
    tf_models.save_fixed_batch(scratch / "fixed")
    ferry.save(scratch / "fixed", root / "fixed_dynamic", format="tflite")
    (root / "fixed_dynamic" / "ferry.toml").write_text('batch_dimension = "dynamic"\n')
    (root / "corrupt" / "1").mkdir(parents=True)
    (root / "corrupt" / "1" / "model.tflite").write_bytes(b"not a flatbuffer" * 8)
    return {"root": root, "model": model, "file": root / "mlp" / "1" / "model.tflite"}


@pytest.fixture(scope="module")
def server(repo: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    log_path = tmp_path_factory.mktemp("log") / "ferry.log"
    process = start_repository_server(repo["root"], log_path, timeout=240)
    yield process
    process.stop()


def test_predictions_equal_litert(server: FerryProcess, repo: dict) -> None:
    response = server.predict("mlp", {"instances": X.tolist()})
    assert response.status_code == 200, response.text
    expected = litert_predict(repo["file"], X)
    (name,) = expected
    np.testing.assert_allclose(response.json()["predictions"], expected[name], rtol=1e-6)
    # ... and the Keras model it came from, within float tolerance.
    keras_expected = repo["model"].predict(X, verbose=0)
    np.testing.assert_allclose(response.json()["predictions"], keras_expected, rtol=1e-4, atol=1e-6)
    metadata = server.get("/v1/models/mlp/metadata").json()["metadata"]["signature_def"]
    x = metadata["signature_def"]["serving_default"]["inputs"]["x"]
    assert [d["size"] for d in x["tensor_shape"]["dim"]] == ["-1", "4"]


def test_concurrent_requests_through_the_pool(server: FerryProcess, repo: dict) -> None:
    rows = [X[i : i + 1] for i in range(len(X))] * 4
    for model in ("mlp", "fixed_dynamic"):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(
                pool.map(lambda r, m=model: server.predict(m, {"instances": r.tolist()}), rows)
            )
        for row, response in zip(rows, responses, strict=True):
            assert response.status_code == 200, response.text
            if model == "mlp":
                expected = next(iter(litert_predict(repo["file"], row).values()))
            else:
                expected = row * 3
            np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-6)


def test_corrupt_file_fails_alone(server: FerryProcess) -> None:
    status = server.get("/v1/models/corrupt").json()["model_version_status"][0]
    assert status["state"] == "END"
    assert status["status"]["error_message"]
    assert server.get("/v1/models/mlp").json()["model_version_status"][0]["state"] == "AVAILABLE"


def test_interpreter_pool_runs_threads_in_parallel_safely(repo: dict) -> None:
    runtime = runtime_for(repo["file"].parent, RuntimeOptions(intra_op_threads=1))
    runtime.load()
    batches = [X[: 1 + i % len(X)] for i in range(40)]
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda b: runtime.run("serving_default", {"x": b}), batches))
    finally:
        runtime.unload()
    for batch, result in zip(batches, results, strict=True):
        expected = next(iter(litert_predict(repo["file"], batch).values()))
        np.testing.assert_allclose(next(iter(result.values())), expected, rtol=1e-6)


def test_missing_litert_names_the_extra(repo: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    runtime = runtime_for(repo["file"].parent, RuntimeOptions())
    with pytest.raises(MissingExtra, match=r"pip install 'ferry-serve\[tflite\]'"):
        runtime.load()
