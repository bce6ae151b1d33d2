"""SageMaker's `code/inference.py` around a model, in `ferry serve --sagemaker` mode.

The handlers follow the SageMaker TensorFlow Serving container's contract:
`input_handler(data, context)` turns any payload into a TF Serving body, and
`output_handler(response, context)` turns the model's answer into (body, Content-Type).
The file is code that wraps every model, so it runs only when the operator allows code
for every model: FERRY_ALLOW_CODE='*' in the container's environment (or --allow_code '*').
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from support.models import scale_model, write_model
from support.server import FerryProcess, wait_until

# Reads "1,2,3,4"-style text/plain rows, answers plain text with the model's context.
INFERENCE = """
import json


def input_handler(data, context):
    if context.request_content_type != "text/plain":
        raise ValueError(f"unsupported content type {context.request_content_type}")
    rows = [[float(v) for v in line.split(",")] for line in data.read().decode().splitlines()]
    return json.dumps({"instances": rows})


def output_handler(response, context):
    if response.status_code != 200:
        return "failed: " + response.json()["error"], "text/plain"
    rows = response.json()["predictions"]
    text = "\\n".join(",".join(f"{v:g}" for v in row) for row in rows)
    return f"{context.model_name}@{context.model_version or 'latest'}\\n{text}", "text/plain"
"""


def sagemaker_dir(root: Path) -> Path:
    model_dir = root / "opt-ml-model"
    write_model(scale_model(2.0), model_dir, 1)
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(textwrap.dedent(INFERENCE))
    return model_dir


def invoke(server: FerryProcess, body: str, attributes: str | None = None) -> object:
    headers = {"Content-Type": "text/plain"}
    if attributes:
        headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
    return server.post("/invocations", data=body.encode(), headers=headers)


@pytest.fixture
def server(tmp_path: Path, start_server) -> FerryProcess:
    model_dir = sagemaker_dir(tmp_path)
    process = start_server(
        "--sagemaker", "--sagemaker_model_dir", str(model_dir), env={"FERRY_ALLOW_CODE": "*"}
    )
    wait_until(lambda: process.get("/ping").status_code == 200, 30, message="/ping 200")
    return process


def test_handlers_wrap_the_model(server: FerryProcess) -> None:
    response = invoke(server, "1,2,3,4\n0,0,0,1")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain"
    assert response.text == "model@latest\n2,4,6,8\n0,0,0,2"
    # The context carries the version the request asked for.
    response = invoke(server, "1,1,1,1", attributes="tfs-model-version=1")
    assert response.text == "model@1\n2,2,2,2"


def test_model_errors_reach_the_output_handler(server: FerryProcess) -> None:
    response = invoke(server, "1,2,3")  # three values for a model of width 4
    assert response.status_code == 200
    assert response.text.startswith("failed: ")


def test_a_raising_handler_fails_the_request_with_500(server: FerryProcess) -> None:
    response = server.post("/invocations", data=b"{}", headers={"Content-Type": "application/json"})
    assert response.status_code == 500
    assert "unsupported content type application/json" in response.json()["error"]


@pytest.mark.parametrize(
    "consent",
    [{}, {"FERRY_ALLOW_CODE": "model"}],
    ids=["no consent", "one model's consent"],
)
def test_inference_py_without_consent_stops_start_up(
    tmp_path: Path, start_server, consent: dict[str, str]
) -> None:
    model_dir = sagemaker_dir(tmp_path)
    # The folder's own consent grants nothing.
    (model_dir / "ferry.toml").write_text("allow_code = true\n")
    process = start_server(
        "--sagemaker", "--sagemaker_model_dir", str(model_dir), env=consent, ready=False
    )
    assert process.process.wait(60) != 0
    log = process.log()
    assert "inference.py is Python code" in log
    assert "FERRY_ALLOW_CODE='*'" in log
