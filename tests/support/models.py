"""Small ONNX models the tests build and serve with real onnxruntime.

Each builder returns an `onnx.ModelProto`; `write_model` writes it as a version folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def scale_model(factor: float, width: int = 4) -> onnx.ModelProto:
    """y = x * factor for x float32[N, width]: the factor tells which version answered."""
    return _model(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [numpy_helper.from_array(np.array(factor, dtype=np.float32), "k")],
    )


def mlp_model(
    width: int = 8, hidden: int = 16, classes: int = 3, seed: int = 0, padding_bytes: int = 0
) -> onnx.ModelProto:
    """Gemm -> Relu -> Gemm -> Softmax; `padding_bytes` adds an unused weight to make the
    model file (and its memory) bigger, for reload-leak tests."""
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal((width, hidden)).astype(np.float32)
    w1 = rng.standard_normal((hidden, classes)).astype(np.float32)
    initializers = [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1, "w1")]
    nodes = [
        helper.make_node("Gemm", ["x", "w0"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w1"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    if padding_bytes:
        # A real weight that is used (added as zero) so the optimizer cannot drop it.
        pad = np.zeros((padding_bytes // 4 // classes, classes), dtype=np.float32)
        initializers.append(numpy_helper.from_array(pad, "pad"))
        nodes[-1:] = [
            helper.make_node("ReduceSum", ["pad"], ["pad_sum"], keepdims=0),
            helper.make_node("Add", ["logits", "pad_sum"], ["logits2"]),
            helper.make_node("Softmax", ["logits2"], ["probs"], axis=-1),
        ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])],
        initializers,
    )


def two_input_model() -> onnx.ModelProto:
    """sum = a + b (float32[N,2]) and prod = a * b: two named inputs, two outputs."""
    return _model(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Mul", ["a", "b"], ["prod"]),
        ],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 2]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("prod", TensorProto.FLOAT, ["batch", 2]),
        ],
    )


def string_model() -> onnx.ModelProto:
    """text_bytes = text (string[N]): bytes in, bytes out (the `_bytes` suffix asks for b64)."""
    return _model(
        [helper.make_node("Identity", ["text"], ["text_bytes"])],
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("text_bytes", TensorProto.STRING, ["batch"])],
    )


def int_model() -> onnx.ModelProto:
    """twice = ids * 2 for int64[N, 3]."""
    return _model(
        [helper.make_node("Mul", ["ids", "two"], ["twice"])],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3])],
        [helper.make_tensor_value_info("twice", TensorProto.INT64, ["batch", 3])],
        [numpy_helper.from_array(np.array(2, dtype=np.int64), "two")],
    )


def lookup_model(table_rows: int = 5) -> onnx.ModelProto:
    """row = table[idx] for idx int64[N]: an index out of range makes onnxruntime raise at
    run time, although the request fits the signature."""
    table = np.arange(table_rows * 2, dtype=np.float32).reshape(table_rows, 2)
    return _model(
        [helper.make_node("Gather", ["table", "idx"], ["row"], axis=0)],
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("row", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(table, "table")],
    )


def write_model(model: onnx.ModelProto, model_dir: Path, version: int) -> Path:
    """Write `model_dir/<version>/model.onnx` atomically (staged, then renamed)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    onnx.save(model, str(staging / "model.onnx"))
    target = model_dir / str(version)
    os.replace(staging, target)
    return target


def write_protocol_models(root: Path, mlp: bool = True) -> None:
    """The models the protocol tests share, under `root`: `scale` versions 1 and 2 (y = x
    times the version), `pair` (two inputs), `echo` (strings), `ints` (int64), and
    `mlp` unless `mlp` is False."""
    if mlp:
        write_model(mlp_model(), root / "mlp", 1)
    write_model(scale_model(1.0), root / "scale", 1)
    write_model(scale_model(2.0), root / "scale", 2)
    write_model(two_input_model(), root / "pair", 1)
    write_model(string_model(), root / "echo", 1)
    write_model(int_model(), root / "ints", 1)


def slow_model(
    width: int = 512, hidden: int = 2048, depth: int = 4, seed: int = 0
) -> onnx.ModelProto:
    """A chain of dense layers, slow enough (milliseconds per row batch) that concurrent
    requests queue up behind a running batch."""
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    current, size = "x", width
    for index in range(depth):
        out = hidden if index % 2 == 0 else width
        weight = (rng.standard_normal((size, out)) / np.sqrt(size)).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"w{index}"))
        name = "y" if index == depth - 1 else f"h{index}"
        nodes.append(helper.make_node("MatMul", [current, f"w{index}"], [name]))
        current, size = name, out
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", size])],
        initializers,
    )


def sleepy_model(iterations: int = 10_000, size: int = 256) -> onnx.ModelProto:
    """y = x for x float32[N, 4], after a compute-only Loop of `iterations` matrix products,
    so one request keeps the model busy for about a second whatever its size."""
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["state_in", "w"], ["product"]),
            helper.make_node("Tanh", ["product"], ["state_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, [size, size]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [size, size]),
        ],
    )
    nodes = [
        # The loop's start depends on x, so onnxruntime cannot constant-fold it away.
        helper.make_node("ReduceSum", ["x"], ["x_total"], keepdims=0),
        helper.make_node("Mul", ["x_total", "zero"], ["x_zero"]),
        helper.make_node("Add", ["eye", "x_zero"], ["state0"]),
        helper.make_node("Loop", ["trips", "keep_going", "state0"], ["state"], body=body),
        helper.make_node("ReduceSum", ["state"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["x", "nothing"], ["y"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array(iterations, dtype=np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "keep_going"),
        numpy_helper.from_array(np.eye(size, dtype=np.float32), "eye"),
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializers,
    )
