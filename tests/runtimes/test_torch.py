"""PyTorch models saved with `ferry.save` and served by a real `ferry serve`.

Every model is built here, saved as TorchScript (the default) or as a `torch.export`
program, and served; answers over HTTP must equal PyTorch's own in-process answers.
Broken models (a corrupt file, TorchScript without its signature, torch missing) must
fail their own load with a message that says what to do, while the rest keep serving.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from support.framework_models import (
    predict_columns,
    predict_rows,
    settled_status,
    start_repository_server,
)
from support.models import mlp_model, write_model
from support.server import FerryProcess, wait_until

import ferry
from ferry.manager import ManagerOptions, ModelManager
from ferry.metrics import Metrics
from ferry.model_config import ModelSpec
from ferry.repository.source import CACHE_DIR_NAME, LocalVersionSource
from ferry.runtimes.accelerate import ACCELERATED_FILE

pytestmark = pytest.mark.torch


class Classifier(torch.nn.Module):
    """Linear -> ReLU -> Linear -> softmax over 3 classes, 4 features in."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(4, 8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.out(torch.relu(self.hidden(x))), dim=-1)


class TwoInOut(torch.nn.Module):
    """Two named inputs, a dict of two outputs: names must survive saving and serving."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = torch.nn.Linear(4, 3)

    def forward(self, features: torch.Tensor, offset: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"scores": self.mix(features) + offset, "peak": features.amax(1, keepdim=True)}


def reference(model: torch.nn.Module, *inputs: np.ndarray) -> torch.Tensor | dict:
    with torch.no_grad():
        return model(*(torch.from_numpy(a) for a in inputs))


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {"classifier": Classifier().eval(), "two": TwoInOut().eval()}


@pytest.fixture(scope="module")
def server(
    models: dict[str, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory
) -> FerryProcess:
    root = tmp_path_factory.mktemp("torch") / "models"
    classifier, two = models["classifier"], models["two"]
    example = torch.randn(2, 4)
    ferry.save(classifier, root / "script", example=example)
    ferry.save(classifier, root / "exported", example=torch.randn(1, 4), format="export")
    ferry.save(two, root / "two", example={"features": example, "offset": torch.zeros(2, 3)})
    accelerated = ferry.save(classifier, root / "accelerated", example=example)
    (accelerated.parent / "ferry.toml").write_text('accelerate = "onnx"\n')
    # A file that is not TorchScript, beside a valid signature.
    corrupt = root / "corrupt" / "1"
    corrupt.mkdir(parents=True)
    (corrupt / "model.pt").write_bytes(b"this is not a zip archive")
    (corrupt / "signature.json").write_bytes(
        (root / "script" / "1" / "signature.json").read_bytes()
    )
    # Valid TorchScript without the signature that TorchScript cannot carry.
    unsigned = root / "unsigned" / "1"
    unsigned.mkdir(parents=True)
    torch.jit.trace(classifier, example).save(str(unsigned / "model.pt"))
    process = start_repository_server(root, root.parent / "ferry.log")
    yield process
    process.stop()


def test_torchscript_answers_as_pytorch(server: FerryProcess, models: dict) -> None:
    assert settled_status(server, "script")["state"] == "AVAILABLE"
    rows = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    served = np.array(predict_rows(server, "script", rows), dtype=np.float32)
    np.testing.assert_allclose(served, reference(models["classifier"], rows).numpy(), atol=1e-6)


def test_export_program_answers_as_pytorch_with_its_own_shapes(
    server: FerryProcess, models: dict
) -> None:
    assert settled_status(server, "exported")["state"] == "AVAILABLE"
    rows = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    served = np.array(predict_rows(server, "exported", rows), dtype=np.float32)
    np.testing.assert_allclose(served, reference(models["classifier"], rows).numpy(), atol=1e-6)
    # The program's own dynamic batch dimension, saved from a batch of one.
    metadata = server.get("/v2/models/exported").json()
    assert metadata["platform"] == "pytorch_libtorch"  # Triton's name
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert metadata["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]


def test_input_and_output_names_survive_saving(server: FerryProcess, models: dict) -> None:
    assert settled_status(server, "two")["state"] == "AVAILABLE"
    rng = np.random.default_rng(3)
    features = rng.standard_normal((4, 4)).astype(np.float32)
    offset = rng.standard_normal((4, 3)).astype(np.float32)
    outputs = predict_columns(server, "two", {"features": features, "offset": offset})
    expected = reference(models["two"], features, offset)
    assert set(outputs) == {"scores", "peak"}
    np.testing.assert_allclose(outputs["scores"], expected["scores"].numpy(), atol=1e-6)
    np.testing.assert_allclose(outputs["peak"], expected["peak"].numpy(), atol=1e-6)


def test_concurrent_requests_each_get_their_own_rows(server: FerryProcess, models: dict) -> None:
    rng = np.random.default_rng(4)
    batches = [rng.standard_normal((i % 3 + 1, 4)).astype(np.float32) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda rows: predict_rows(server, "script", rows), batches))
    for rows, answer in zip(batches, answers, strict=True):
        expected = reference(models["classifier"], rows).numpy()
        np.testing.assert_allclose(np.array(answer, dtype=np.float32), expected, atol=1e-6)


def test_accelerate_onnx_serves_through_onnxruntime(server: FerryProcess, models: dict) -> None:
    assert settled_status(server, "accelerated")["state"] == "AVAILABLE"
    version_dir = Path(server.log_path).parent / "models" / "accelerated" / "1"
    assert (version_dir / CACHE_DIR_NAME / ACCELERATED_FILE).is_file()
    assert "serves through onnxruntime" in server.log()
    rows = np.random.default_rng(5).standard_normal((6, 4)).astype(np.float32)
    served = np.array(predict_rows(server, "accelerated", rows), dtype=np.float32)
    np.testing.assert_allclose(served, reference(models["classifier"], rows).numpy(), atol=1e-5)


def test_corrupt_file_fails_alone(server: FerryProcess) -> None:
    status = settled_status(server, "corrupt")
    assert status["state"] == "END"
    assert "model.pt" in status["status"]["error_message"] or "zip" in (
        status["status"]["error_message"].lower()
    )
    assert settled_status(server, "script")["state"] == "AVAILABLE"


def test_torchscript_without_signature_says_what_is_missing(server: FerryProcess) -> None:
    status = settled_status(server, "unsigned")
    assert status["state"] == "END"
    message = status["status"]["error_message"]
    assert "signature.json" in message and "ferry save" in message


def test_missing_torch_is_a_load_error_naming_the_extra(
    tmp_path: Path, models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    ferry.save(models["classifier"], tmp_path / "torch_model", example=torch.randn(2, 4))
    write_model(mlp_model(width=4), tmp_path / "onnx_model", 1)
    # As if torch were not installed: `import torch` raises ImportError from here on.
    monkeypatch.setitem(sys.modules, "torch", None)
    manager = ModelManager(ManagerOptions(), Metrics())
    for name in ("torch_model", "onnx_model"):
        base = tmp_path / name
        manager.sync(ModelSpec(name, base), LocalVersionSource(base).list_versions())
    try:
        [record] = manager.version_status("torch_model")
        assert record.state.name == "END"
        assert "pip install 'ferry-serve[torch]'" in record.error_message
        manager.acquire("onnx_model").release()
    finally:
        manager.shutdown()


@pytest.mark.parametrize(
    ("spinning", "preset", "expected"),
    [(False, None, "PASSIVE"), (True, None, None), (False, "ACTIVE", "ACTIVE")],
)
def test_openmp_threads_sleep_unless_spinning_is_allowed(
    spinning: bool, preset: str | None, expected: str | None
) -> None:
    """torch's OpenMP pool reads OMP_WAIT_POLICY once, at first import: checked in a fresh
    interpreter. A value the user set is kept."""
    import os
    import subprocess
    import sys

    code = (
        "import os; from ferry.runtimes.base import RuntimeOptions; "
        "from ferry.runtimes.torch import import_torch; "
        f"import_torch(RuntimeOptions(allow_spinning={spinning})); "
        "print(os.environ.get('OMP_WAIT_POLICY'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset is not None:
        env["OMP_WAIT_POLICY"] = preset
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(expected)


@pytest.mark.tensorflow
def test_a_torch_export_model_loads_beside_a_tensorflow_model_already_serving(
    models: dict, tmp_path: Path
) -> None:
    # PyPI's CUDA build of PyTorch imports triton lazily; after TensorFlow, that import
    # killed the process (segfault). Here TensorFlow loads first, in the server.
    from support.tf_models import mlp_keras

    root = tmp_path / "models"
    ferry.save(mlp_keras(), root / "keras")
    server = start_repository_server(
        root, tmp_path / "ferry.log", "--file_system_poll_wait_seconds", "0.5"
    )
    try:
        assert settled_status(server, "keras")["state"] == "AVAILABLE"
        classifier = models["classifier"]
        ferry.save(classifier, root / "exported", example=torch.randn(1, 4), format="export")
        wait_until(
            lambda: server.get("/v1/models/exported").status_code == 200,
            60,
            message="the new model noticed",
        )
        assert settled_status(server, "exported")["state"] == "AVAILABLE", server.log()
        x = np.random.default_rng(5).standard_normal((2, 4)).astype(np.float32)
        expected = reference(classifier, x).numpy()
        np.testing.assert_allclose(predict_rows(server, "exported", x), expected, rtol=1e-5)
        assert len(predict_rows(server, "keras", x)) == 2
        assert server.process.poll() is None
    finally:
        server.stop()
