"""Triton's model load with file overrides (`load_model(name, config=..., files=...)`),
replayed from Triton's own qa/L0_lifecycle `test_file_override` with tritonclient over
HTTP (files as base64) and gRPC (bytes), against a real `ferry serve
--enable_model_control`; and the ways an upload must not escape or run code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from support.models import scale_model, write_model
from support.security import marker_file
from support.server import FerryProcess
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.compat

CONFIG = '{"backend": "onnxruntime"}'
X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def _clients(server: FerryProcess):
    return (
        httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}"),
        grpcclient.InferenceServerClient(url=server.grpc_target),
    )


def _predict(server: FerryProcess, model: str) -> list:
    response = server.predict(model, {"instances": X.tolist()})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def _model_bytes(tmp_path: Path, factor: float) -> bytes:
    write_model(scale_model(factor), tmp_path / f"scratch-{factor}", 1)
    return (tmp_path / f"scratch-{factor}" / "1" / "model.onnx").read_bytes()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_file_override_as_in_tritons_lifecycle_test(
    protocol: str, tmp_path: Path, start_server
) -> None:
    root = tmp_path / "models"
    write_model(scale_model(2.0), root / "m", 3)
    server = start_server(str(root), "--enable_model_control")
    server.wait_version("m", 3)
    client = _clients(server)[0 if protocol == "http" else 1]
    upload = {"file:1/model.onnx": _model_bytes(tmp_path, 5.0)}

    # Files without a config: refused, and the model keeps serving version 3.
    with pytest.raises(InferenceServerException) as refused:
        client.load_model("m", files=upload)
    assert "failed to load 'm', failed to poll from model repository" in refused.value.message()
    assert client.is_model_ready("m", "3")
    assert _predict(server, "m") == [[2.0, 4.0, 6.0, 8.0]]

    # Files and a config under a new name: a new model; "m" unchanged.
    client.load_model("override_model", config=CONFIG, files=upload)
    assert client.is_model_ready("override_model", "1")
    assert _predict(server, "override_model") == [[5.0, 10.0, 15.0, 20.0]]
    assert client.is_model_ready("m", "3")

    # Under the original name: served from the upload, which has version 1 only.
    client.load_model("m", config=CONFIG, files=upload)
    assert client.is_model_ready("m", "1")
    assert not client.is_model_ready("m", "3")
    assert _predict(server, "m") == [[5.0, 10.0, 15.0, 20.0]]

    # Unload and a plain load: the operator's repository again.
    client.unload_model("m")
    client.load_model("m")
    assert client.is_model_ready("m", "3")
    assert _predict(server, "m") == [[2.0, 4.0, 6.0, 8.0]]
    client.unload_model("override_model")
    assert not client.is_model_ready("override_model")


@pytest.mark.parametrize(
    "name", ["file:../escape.onnx", "file:1/../../escape.onnx", "file:/tmp/x.onnx", "file:1"]
)
def test_an_upload_cannot_name_a_path_outside_its_folder(
    name: str, tmp_path: Path, start_server
) -> None:
    root = tmp_path / "models"
    write_model(scale_model(2.0), root / "m", 1)
    server = start_server(str(root), "--enable_model_control")
    client = _clients(server)[0]

    with pytest.raises(InferenceServerException) as refused:
        client.load_model("m", config=CONFIG, files={name: b"x"})

    assert "a file override must be named file:<version>/<path>" in refused.value.message()
    assert not (tmp_path / "escape.onnx").exists()
    assert not (root / "escape.onnx").exists()
    assert client.is_model_ready("m", "1")


def test_uploaded_code_never_runs_whatever_allow_code_says(tmp_path: Path, start_server) -> None:
    root = tmp_path / "models"
    write_model(scale_model(2.0), root / "m", 1)
    marker = marker_file(tmp_path)
    code = (
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "class Model:\n"
        "    signature = {'inputs': {'x': {'dtype': 'float32', 'shape': [-1, 4]}},\n"
        "                 'outputs': {'y': {'dtype': 'float32', 'shape': [-1, 4]}}}\n"
        "    def predict(self, inputs):\n"
        "        return {'y': inputs['x']}\n"
    ).encode()
    server = start_server(str(root), "--enable_model_control", "--allow_code", "*")
    client = _clients(server)[1]

    with pytest.raises(InferenceServerException) as refused:
        client.load_model("m", config=CONFIG, files={"file:1/model.py": code})

    assert "failed to load 'm'" in refused.value.message() or "load failed" in (
        refused.value.message()
    )
    assert not marker.exists()
    assert client.is_model_ready("m", "1")  # the repository's version still serves
    assert _predict(server, "m") == [[2.0, 4.0, 6.0, 8.0]]


def test_uploads_are_bounded_and_need_model_control(tmp_path: Path, start_server) -> None:
    root = tmp_path / "models"
    write_model(scale_model(2.0), root / "m", 1)
    model = _model_bytes(tmp_path, 5.0)
    bounded = start_server(
        str(root), "--enable_model_control", "--max_uploaded_model_bytes", str(len(model) - 1)
    )
    with pytest.raises(InferenceServerException) as refused:
        _clients(bounded)[1].load_model("new", config=CONFIG, files={"file:1/model.onnx": model})
    assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "--max_uploaded_model_bytes" in refused.value.message()

    closed = start_server(str(root))
    with pytest.raises(InferenceServerException) as off:
        _clients(closed)[0].load_model("new", config=CONFIG, files={"file:1/model.onnx": model})
    assert "--enable_model_control" in off.value.message()
