"""Custom Python models (`model.py`) served by a real `ferry serve`.

A model folder's `model.py` is code, so it runs only when the operator allows it
(`ferry serve --allow_code NAME`); without that the load fails with a message naming the
flag, whatever the folder's ferry.toml says. With it, answers over HTTP must equal the
class's own `predict` run in process.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from support.framework_models import predict_rows, settled_status, start_repository_server
from support.models import scale_model, write_model
from support.server import FerryProcess

from ferry.runtimes.python import import_file

# Wraps the ONNX model beside it (y = 3x) and adds post-processing: model.py wins over
# the model.onnx in the same folder, which is what such a folder means.
WRAPPER = """
import numpy as np
import onnxruntime as ort


class Model:
    signature = {
        "inputs": {"x": {"dtype": "float32", "shape": [-1, 4]}},
        "outputs": {
            "y": {"dtype": "float32", "shape": [-1, 4]},
            "total": {"dtype": "float64", "shape": [-1]},
        },
    }

    def load(self, version_dir):
        self.session = ort.InferenceSession(str(version_dir / "model.onnx"))

    def predict(self, inputs):
        (y,) = self.session.run(["y"], {"x": inputs["x"]})
        return {"y": y + 1.0, "total": y.sum(axis=1).astype(np.float64)}
"""

# Strings in and out; signature in signature.json; not named Model (the only class).
SHOUT = """
class Shout:
    thread_safe = True

    def load(self, version_dir):
        self.suffix = (version_dir / "suffix.txt").read_bytes()

    def predict(self, inputs):
        return {"text": [t.upper() + self.suffix for t in inputs["text"]]}
"""
SHOUT_SIGNATURE = """{
  "inputs": {"text": {"dtype": "string", "shape": [-1]}},
  "outputs": {"text": {"dtype": "DT_STRING", "shape": [-1]}}
}"""

FAILS = """
class Model:
    def load(self, version_dir):
        raise RuntimeError("weights.bin is missing")

    def predict(self, inputs):
        return inputs
"""


def write_code(folder: Path, source: str) -> Path:
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    (version / "model.py").write_text(textwrap.dedent(source))
    return version


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("python") / "models"
    write_model(scale_model(3.0), root / "wrapper", 1)
    write_code(root / "wrapper", WRAPPER)
    shout = write_code(root / "shout", SHOUT)
    (shout / "suffix.txt").write_bytes(b"!")
    (shout / "signature.json").write_text(SHOUT_SIGNATURE)
    write_code(root / "not_allowed", WRAPPER)
    # The folder's own consent grants nothing.
    (root / "not_allowed" / "ferry.toml").write_text("allow_code = true\n")
    write_code(root / "fails", FAILS)
    return root


@pytest.fixture(scope="module")
def server(root: Path) -> FerryProcess:
    process = start_repository_server(
        root, root.parent / "ferry.log", "--allow_code", "wrapper,shout", "--allow_code", "fails"
    )
    yield process
    process.stop()


def in_process(version_dir: Path, class_name: str) -> object:
    """The same class, loaded here, for the expected answers."""
    model = getattr(import_file(version_dir / "model.py", "test_model"), class_name)()
    model.load(version_dir)
    return model


def test_model_py_answers_as_its_predict(server: FerryProcess, root: Path) -> None:
    assert settled_status(server, "wrapper")["state"] == "AVAILABLE"
    rows = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    served = predict_rows(server, "wrapper", rows)
    expected = in_process(root / "wrapper" / "1", "Model").predict({"x": rows})
    np.testing.assert_allclose([r["y"] for r in served], expected["y"], rtol=1e-6)
    np.testing.assert_allclose([r["total"] for r in served], expected["total"], rtol=1e-6)
    # The post-processing ran: not the bare ONNX model's 3x.
    np.testing.assert_allclose([r["y"] for r in served], rows * 3 + 1, rtol=1e-6)


def test_strings_and_a_signature_file(server: FerryProcess) -> None:
    assert settled_status(server, "shout")["state"] == "AVAILABLE"
    response = server.predict("shout", {"instances": ["hi", "ferry"]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == ["HI!", "FERRY!"]
    metadata = server.get("/v2/models/shout").json()
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]


def test_code_without_consent_is_refused(server: FerryProcess) -> None:
    status = settled_status(server, "not_allowed")
    assert status["state"] == "END"
    message = status["status"]["error_message"]
    assert "model.py is Python code" in message
    assert "ferry serve --allow_code not_allowed" in message


def test_a_failing_load_fails_alone(server: FerryProcess) -> None:
    status = settled_status(server, "fails")
    assert status["state"] == "END"
    assert "weights.bin is missing" in status["status"]["error_message"]
    assert settled_status(server, "wrapper")["state"] == "AVAILABLE"
