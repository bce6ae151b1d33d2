"""The bundled example models, built from code so the repository carries no weights.

`mlp_small`: x float32[N,784] -> Gemm 784x256 -> Relu -> Gemm 256x10 -> Softmax -> probs
`mlp_large`: x float32[N,1024] -> Gemm 1024x4096 -> Relu -> Gemm 4096x4096 -> Relu
             -> Gemm 4096x1024 -> y
Weights come from numpy's generator with seed 0, so every build is identical.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _dense_stack(
    name: str, input_name: str, sizes: list[int], final: str, output_name: str, seed: int = 0
) -> onnx.ModelProto:
    """Gemm layers of the given sizes with Relu between them and `final` ("Softmax" or "")."""
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    current = input_name
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        weight = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        bias = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{index}"),
            numpy_helper.from_array(bias, f"b{index}"),
        ]
        last = index == len(sizes) - 2
        gemm_out = output_name if last and not final else f"gemm{index}"
        nodes.append(helper.make_node("Gemm", [current, f"w{index}", f"b{index}"], [gemm_out]))
        current = gemm_out
        if not last:
            nodes.append(helper.make_node("Relu", [current], [f"relu{index}"]))
            current = f"relu{index}"
    if final:
        nodes.append(helper.make_node(final, [current], [output_name], axis=-1))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", sizes[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def mlp_small(seed: int = 0) -> onnx.ModelProto:
    return _dense_stack("mlp_small", "x", [784, 256, 10], "Softmax", "probs", seed)


def mlp_large(seed: int = 0) -> onnx.ModelProto:
    return _dense_stack("mlp_large", "x", [1024, 4096, 4096, 1024], "", "y", seed)


EXAMPLES: dict[str, Callable[..., onnx.ModelProto]] = {
    "mlp_small": mlp_small,
    "mlp_large": mlp_large,
}


def write_version(model: onnx.ModelProto, model_dir: Path, version: int) -> Path:
    """Write `model_dir/<version>/model.onnx` atomically (a renamed temporary folder), so a
    polling server never sees half a version."""
    model_dir.mkdir(parents=True, exist_ok=True)
    final = model_dir / str(version)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=model_dir))
    onnx.save(model, str(staging / "model.onnx"))
    os.replace(staging, final)
    return final


def build_examples(root: Path, names: list[str] | None = None, force: bool = False) -> list[Path]:
    """Build the example models under `root` as version 1; existing ones are kept unless
    `force`. Returns the version folders written."""
    written = []
    for name in names or list(EXAMPLES):
        target = root / name / "1"
        if target.exists() and not force:
            continue
        if target.exists():
            for child in target.iterdir():
                child.unlink()
            target.rmdir()
        written.append(write_version(EXAMPLES[name](), root / name, 1))
    return written
