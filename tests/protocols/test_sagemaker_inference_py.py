"""`code/inference.py` as the SageMaker TensorFlow Serving container runs it: its own
pre/post-processing cases (test_pre_post_processing.py with examples test1..test5),
for both handler forms, against `ferry serve --sagemaker`.

`handler(data, context)` posts to `context.rest_uri` itself, so those cases also show
that the URL reaches ferry's own TF Serving REST API; the pair form runs the model
in-process and hands TF Serving's answer (errors included) to `output_handler`.
`code/lib/` is importable; `code/requirements.txt` is installed only with
FERRY_ALLOW_REQUIREMENTS=true, from a wheel the test builds (pip pointed at a local
folder: no network)."""

from __future__ import annotations

import base64
import hashlib
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from support.models import write_model
from support.server import FerryProcess, wait_until

# The container's examples, in both forms: JSON passes through, CSV becomes instances,
# anything else is an error; a non-200 model answer raises with TF Serving's body.
PROCESSING = """
import json


def _process_input(data, context):
    if context.request_content_type == "application/json":
        d = data.read().decode("utf-8")
        return d if len(d) else ""
    if context.request_content_type == "text/csv":
        return json.dumps({"instances": [float(x) for x in data.read().decode().split(",")]})
    raise ValueError('{{"error": "unsupported content type {}"}}'.format(
        context.request_content_type or "unknown"))


def _process_output(data, context):
    if data.status_code != 200:
        raise ValueError(data.content.decode("utf-8"))
    return data.content, context.accept_header
"""
PAIR = (
    PROCESSING
    + """
def input_handler(data, context):
    return _process_input(data, context)


def output_handler(data, context):
    return _process_output(data, context)
"""
)
HANDLER = (
    PROCESSING
    + """
import requests


def handler(data, context):
    if context.request_content_type == "application/x-context":
        fields = {k: v for k, v in context._asdict().items() if k != "channel"}
        fields["channel"] = type(context.channel).__name__
        return json.dumps({"fields": list(context._fields), "values": fields}), "application/json"
    response = requests.post(context.rest_uri, data=_process_input(data, context))
    return _process_output(response, context)
"""
)


def half_plus_three() -> onnx.ModelProto:
    """y = 0.5 x + 3 for x float32[N], the container's half_plus_three."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "a"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "half_plus_three",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [
            numpy_helper.from_array(np.array(0.5, dtype=np.float32), "a"),
            numpy_helper.from_array(np.array(3.0, dtype=np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def model_folder(root: Path, inference: str) -> Path:
    model_dir = root / "opt-ml-model"
    for version in (123, 124):
        write_model(half_plus_three(), model_dir / "half_plus_three", version)
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(textwrap.dedent(inference))
    return model_dir


def serve(model_dir: Path, log: Path, env: dict[str, str], *args: str) -> FerryProcess:
    process = FerryProcess(
        ["--sagemaker", "--sagemaker_model_dir", str(model_dir), *args],
        log,
        env={"FERRY_ALLOW_CODE": "*", **env},
    )
    process.wait_ready()
    wait_until(lambda: process.get("/ping").status_code == 200, 30, message="/ping 200")
    return process


@pytest.fixture(scope="module", params=["input_output_handlers", "handler"])
def server(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    root = tmp_path_factory.mktemp(request.param)
    inference = PAIR if request.param == "input_output_handlers" else HANDLER
    process = serve(model_folder(root, inference), root / "ferry.log", {})
    yield process
    process.stop()


def post(server: FerryProcess, data: str, content_type: str, version: str | None = None):
    attributes = "tfs-model-name=half_plus_three,tfs-method=predict"
    if version:
        attributes += f",tfs-model-version={version}"
    headers = {"Content-Type": content_type, "X-Amzn-SageMaker-Custom-Attributes": attributes}
    return server.post("/invocations", data=data, headers=headers)


def test_predict_json(server: FerryProcess) -> None:
    response = post(server, '{"instances": [1.0, 2.0, 5.0]}', "application/json")
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [3.5, 4.0, 5.5]}


def test_zero_content(server: FerryProcess) -> None:
    # TF Serving's parse error reaches the output handler, which raises with it.
    response = post(server, "", "application/json")
    assert response.status_code == 500
    assert "document is empty" in response.text


def test_csv_input(server: FerryProcess) -> None:
    response = post(server, "1.0,2.0,5.0", "text/csv")
    assert response.json() == {"predictions": [3.5, 4.0, 5.5]}


def test_predict_specific_versions(server: FerryProcess) -> None:
    for version in ("123", "124"):
        response = post(server, '{"instances": [1.0, 2.0, 5.0]}', "application/json", version)
        assert response.json() == {"predictions": [3.5, 4.0, 5.5]}


def test_unsupported_content_type(server: FerryProcess) -> None:
    response = post(server, "aW1hZ2UgYnl0ZXM=", "unsupported-type")
    assert response.status_code == 500
    assert "unsupported content type" in response.text
    # The container's body: {"error": str(exception)}.
    assert response.json() == {"error": '{"error": "unsupported content type unsupported-type"}'}


def test_ping_service(server: FerryProcess) -> None:
    assert server.get("/ping").status_code == 200


def test_context_has_the_container_fields_in_its_order(
    server: FerryProcess, request: pytest.FixtureRequest
) -> None:
    if request.node.callspec.params["server"] != "handler":
        pytest.skip("the handler form echoes its context")
    response = post(server, "{}", "application/x-context", version="124")
    body = response.json()
    assert body["fields"] == [
        "model_name",
        "model_version",
        "method",
        "rest_uri",
        "grpc_port",
        "channel",
        "custom_attributes",
        "request_content_type",
        "accept_header",
        "content_length",
    ]
    values = body["values"]
    assert values["model_name"] == "half_plus_three"
    assert values["model_version"] == "124"
    assert values["method"] == "predict"
    assert values["rest_uri"] == (
        f"http://127.0.0.1:{server.port}/v1/models/half_plus_three/versions/124:predict"
    )
    assert values["grpc_port"] == server.grpc_port
    assert values["channel"] == "Channel"
    assert values["custom_attributes"].startswith("tfs-model-name=half_plus_three")
    assert values["request_content_type"] == "application/x-context"
    assert values["accept_header"] == "*/*"  # what requests sends
    assert values["content_length"] == 2


# -- code/lib and code/requirements.txt ---------------------------------------------------

USES_PACKAGES = """
import json

import {module}


def handler(data, context):
    return json.dumps({{"version": {module}.__version__}}), "application/json"
"""


def build_wheel(folder: Path, name: str, version: str) -> Path:
    """A pure-Python wheel of one module with `__version__`, written by hand (no build
    tools, no network)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    records = []
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            data = text.encode()
            archive.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{path},sha256={digest.decode()},{len(data)}")
        records.append(f"{dist_info}/RECORD,,")
        archive.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    return wheel


def requirements_folder(tmp_path: Path, module: str, lib: bool = False) -> Path:
    model_dir = model_folder(tmp_path, USES_PACKAGES.format(module=module))
    (model_dir / "code" / "requirements.txt").write_text("tinypkg==0.3\n")
    if lib:
        (model_dir / "code" / "lib" / "dummy_module").mkdir(parents=True)
        (model_dir / "code" / "lib" / "dummy_module" / "__init__.py").write_text(
            "__version__ = '0.1'\n"
        )
    return model_dir


def pip_env(tmp_path: Path) -> dict[str, str]:
    build_wheel(tmp_path / "wheels", "tinypkg", "0.3")
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path / "wheels")}


def context_post(server: FerryProcess) -> dict:
    response = server.post("/invocations", data=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()


def test_requirements_are_installed_with_consent_into_ferrys_cache(tmp_path: Path) -> None:
    model_dir = requirements_folder(tmp_path, "tinypkg")
    cache = tmp_path / "cache"
    env = {**pip_env(tmp_path), "FERRY_ALLOW_REQUIREMENTS": "true"}
    process = serve(model_dir, tmp_path / "ferry.log", env, "--model_cache_dir", str(cache))
    try:
        assert context_post(process) == {"version": "0.3"}
        installed = list((cache / "sagemaker-requirements").glob("*/tinypkg/__init__.py"))
        assert len(installed) == 1
        assert not (model_dir / "code" / "tinypkg").exists()
    finally:
        process.stop()


def test_requirements_without_consent_are_not_installed(tmp_path: Path) -> None:
    model_dir = requirements_folder(tmp_path, "tinypkg")
    process = FerryProcess(
        ["--sagemaker", "--sagemaker_model_dir", str(model_dir)],
        tmp_path / "ferry.log",
        env={"FERRY_ALLOW_CODE": "*", **pip_env(tmp_path)},
    )
    try:
        assert process.process.wait(60) != 0
        log = process.log()
        assert "not installed" in log and "FERRY_ALLOW_REQUIREMENTS=true" in log
        assert "No module named 'tinypkg'" in log
    finally:
        process.stop()


def test_a_failing_pip_stops_start_up(tmp_path: Path) -> None:
    model_dir = requirements_folder(tmp_path, "tinypkg")
    (model_dir / "code" / "requirements.txt").write_text("tinypkg==9.9\n")  # not in the folder
    process = FerryProcess(
        ["--sagemaker", "--sagemaker_model_dir", str(model_dir)],
        tmp_path / "ferry.log",
        env={"FERRY_ALLOW_CODE": "*", "FERRY_ALLOW_REQUIREMENTS": "true", **pip_env(tmp_path)},
    )
    try:
        assert process.process.wait(120) != 0
        assert "failed to install required packages" in process.log()
    finally:
        process.stop()


def test_code_lib_is_importable_and_then_requirements_are_ignored(tmp_path: Path) -> None:
    model_dir = requirements_folder(tmp_path, "dummy_module", lib=True)
    env = {**pip_env(tmp_path), "FERRY_ALLOW_REQUIREMENTS": "true"}
    cache = tmp_path / "cache"
    process = serve(model_dir, tmp_path / "ferry.log", env, "--model_cache_dir", str(cache))
    try:
        assert context_post(process) == {"version": "0.1"}
        assert "ignoring requirements.txt" in process.log()
        assert not (cache / "sagemaker-requirements").exists()
    finally:
        process.stop()
