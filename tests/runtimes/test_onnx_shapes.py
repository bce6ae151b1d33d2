"""ONNX signatures say what onnxruntime runs: a tensor declared without a shape takes any
rank, while a declared scalar stays rank 0 (onnxruntime reports both as `[]`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from support.models import write_model

from ferry.runtimes import RuntimeOptions
from ferry.runtimes.onnx import OnnxRuntime


def identity_model(shape: list | None) -> onnx.ModelProto:
    """y = x for float x of `shape` (None: no shape at all)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def loaded(model: onnx.ModelProto, folder: Path) -> OnnxRuntime:
    runtime = OnnxRuntime(write_model(model, folder, 1), RuntimeOptions())
    runtime.load()
    return runtime


def test_a_tensor_without_a_shape_takes_any_rank_and_a_scalar_stays_a_scalar(
    tmp_path: Path,
) -> None:
    unranked = loaded(identity_model(None), tmp_path / "any").signatures["serving_default"]
    scalar = loaded(identity_model([]), tmp_path / "scalar").signatures["serving_default"]

    assert unranked.inputs["x"].shape is None
    assert unranked.outputs["y"].shape is None
    assert scalar.inputs["x"].shape == ()
    unranked.check_inputs({"x": np.ones((2, 3, 4), np.float32)})  # any rank: no error


def test_the_server_runs_any_rank_through_a_model_without_input_shapes(
    model_root: Path, start_server
) -> None:
    write_model(identity_model(None), model_root / "any", 1)
    server = start_server(str(model_root))
    server.wait_version("any", 1)

    response = server.predict("any", {"inputs": [[[1.0, 2.0], [3.0, 4.0]]]})

    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == [[[1.0, 2.0], [3.0, 4.0]]]
