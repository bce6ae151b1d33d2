"""Keras files served by a real `ferry serve` process, checked against Keras's own
in-process predictions: the seed recipes (`model.save("m.keras")`, `model.save("m.h5")`,
`model.to_json()` + `model.save_weights(...)`, a Keras 2 style `model.yaml`), `ferry save`
of Keras objects and files, several inputs and outputs, accelerate, and load failures."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from support.framework_models import start_repository_server, version_status
from support.server import FerryProcess

pytestmark = pytest.mark.tensorflow
tf_models = pytest.importorskip("support.tf_models")
keras = tf_models.keras

import ferry  # noqa: E402 - after the TensorFlow skip

X = np.random.default_rng(1).random((6, 4), dtype=np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("keras") / "models"
    scratch = tmp_path_factory.mktemp("scratch")
    model = tf_models.mlp_keras()
    (root / "keras_file" / "1").mkdir(parents=True)
    model.save(root / "keras_file" / "1" / "m.keras")
    (root / "h5_file" / "1").mkdir(parents=True)
    model.save(root / "h5_file" / "1" / "m.h5")
    (root / "json_pair" / "1").mkdir(parents=True)
    (root / "json_pair" / "1" / "model.json").write_text(model.to_json())
    model.save_weights(root / "json_pair" / "1" / "m.weights.h5")
    # Keras 2's to_yaml wrote the same config as YAML (Keras 3 has no to_yaml).
    yaml = pytest.importorskip("yaml")
    (root / "yaml_pair" / "1").mkdir(parents=True)
    (root / "yaml_pair" / "1" / "model.yaml").write_text(
        yaml.safe_dump(json.loads(model.to_json()))
    )
    # A legacy HDF5 weights file (not `*.weights.h5`): Keras 3 writes that layout only
    # inside a full-model .h5, which its legacy loader also reads weights from.
    model.save(root / "yaml_pair" / "1" / "weights.h5")
    # ferry save: an object (default format: SavedModel named after the Keras tensors) ...
    ferry.save(model, root / "saved_object")
    # ... and a file through the CLI, kept as a .keras file.
    model.save(scratch / "cli.keras")
    subprocess.run(
        [sys.executable, "-m", "ferry.cli", "save", str(scratch / "cli.keras"),
         str(root / "saved_cli"), "--format", "keras"],
        check=True, capture_output=True,
    )  # fmt: skip
    two = tf_models.two_io_keras()
    ferry.save(two, root / "two_io", format="keras")
    # Accelerated through ONNX (a Keras file exported by tf2onnx at load).
    (root / "accelerated" / "1").mkdir(parents=True)
    model.save(root / "accelerated" / "1" / "model.keras")
    (root / "accelerated" / "ferry.toml").write_text('accelerate = "onnx"\n')
    # Weights from another architecture: the load fails with Keras's reason.
    (root / "mismatch" / "1").mkdir(parents=True)
    (root / "mismatch" / "1" / "model.json").write_text(model.to_json())
    tf_models.mlp_keras(hidden=5).save_weights(root / "mismatch" / "1" / "m.weights.h5")
    (root / "corrupt" / "1").mkdir(parents=True)
    (root / "corrupt" / "1" / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    return {"root": root, "model": model, "two": two}


@pytest.fixture(scope="module")
def server(repo: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    log_path = tmp_path_factory.mktemp("log") / "ferry.log"
    process = start_repository_server(repo["root"], log_path, timeout=240)
    yield process
    process.stop()


@pytest.mark.parametrize(
    "name", ["keras_file", "h5_file", "json_pair", "yaml_pair", "saved_object", "saved_cli"]
)
def test_predictions_equal_keras(server: FerryProcess, repo: dict, name: str) -> None:
    response = server.predict(name, {"instances": X.tolist()})
    assert response.status_code == 200, response.text
    expected = repo["model"].predict(X, verbose=0)
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-6, atol=1e-7)
    signature = server.get(f"/v1/models/{name}/metadata").json()["metadata"]["signature_def"]
    outputs = signature["signature_def"]["serving_default"]["outputs"]
    # The Keras model's own names, whichever file carried it.
    assert list(outputs) == ["probs"]


def test_ferry_save_keeps_what_was_asked(repo: dict) -> None:
    root = repo["root"]
    assert (root / "saved_object" / "1" / "saved_model.pb").is_file()
    assert (root / "saved_cli" / "1" / "cli.keras").is_file()
    recorded = json.loads((root / "saved_object" / "1" / "signature.json").read_text())
    assert recorded["format"] == "tensorflow"
    assert set(recorded["signatures"]) == {"serving_default"}


def test_several_inputs_and_outputs(server: FerryProcess, repo: dict) -> None:
    a = np.random.default_rng(2).random((3, 3), dtype=np.float32)
    b = np.random.default_rng(3).random((3, 2), dtype=np.float32)
    response = server.predict("two_io", {"inputs": {"a": a.tolist(), "b": b.tolist()}})
    assert response.status_code == 200, response.text
    total, mixed = repo["two"].predict([a, b], verbose=0)
    outputs = response.json()["outputs"]
    np.testing.assert_allclose(outputs["total"], total, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(outputs["mixed"], mixed, rtol=1e-6, atol=1e-7)


def test_concurrent_requests_are_batched_and_correct(server: FerryProcess, repo: dict) -> None:
    import concurrent.futures

    rows = [X[i : i + 1] for i in range(len(X))] * 5
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(lambda row: server.predict("keras_file", {"instances": row.tolist()}), rows)
        )
    for row, response in zip(rows, responses, strict=True):
        expected = repo["model"].predict(row, verbose=0)
        np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-6, atol=1e-7)


def test_accelerate_onnx(server: FerryProcess, repo: dict) -> None:
    response = server.predict("accelerated", {"instances": X.tolist()})
    expected = repo["model"].predict(X, verbose=0)
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-4, atol=1e-5)
    assert "accelerated/1 (keras) serves through onnxruntime" in server.log()


def test_load_failures_are_clear_and_alone(server: FerryProcess) -> None:
    mismatch = version_status(server, "mismatch")
    assert mismatch["state"] == "END"
    assert "shape" in mismatch["status"]["error_message"].lower()
    corrupt = version_status(server, "corrupt")
    assert corrupt["state"] == "END"
    assert corrupt["status"]["error_message"]
    assert version_status(server, "keras_file")["state"] == "AVAILABLE"
