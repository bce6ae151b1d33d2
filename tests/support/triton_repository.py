"""A Triton-style model repository the tests build: ONNX models shaped like Triton's own
examples (docs/examples/model_repository), each with its config.pbtxt.

`simple`: INPUT0, INPUT1 INT32 [16] -> OUTPUT0 = sum, OUTPUT1 = difference, batched up
to 8 with dynamic batching; `simple_int8` the same in INT8 without dynamic batching;
`simple_string`: the sum and difference of numbers written as strings; `simple_identity`:
BYTES in, BYTES out; `classifier`: an image classifier like densenet_onnx (one FP32
input in NCHW, no batch dimension, one FP32 score vector with a label file); `reshaped`:
a [batch, 4, 4] model served as [batch, 16] through `reshape`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from support.models import _model, write_model

CLASSES = 6
IMAGE = (3, 4, 4)
LABELS = [f"label_{i}" for i in range(CLASSES)]


def simple_model(elem: int = TensorProto.INT32) -> onnx.ModelProto:
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, [batch, 16]."""
    return _model(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        [helper.make_tensor_value_info(n, elem, ["batch", 16]) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, elem, ["batch", 16]) for n in ("OUTPUT0", "OUTPUT1")],
    )


def simple_string_model() -> onnx.ModelProto:
    """Like `simple`, with numbers written as strings in and out (Triton's simple_string)."""
    nodes = [
        helper.make_node("Cast", ["INPUT0"], ["a"], to=TensorProto.INT32),
        helper.make_node("Cast", ["INPUT1"], ["b"], to=TensorProto.INT32),
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Sub", ["a", "b"], ["diff"]),
        helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=TensorProto.STRING),
        helper.make_node("Cast", ["diff"], ["OUTPUT1"], to=TensorProto.STRING),
    ]
    strings = TensorProto.STRING
    return _model(
        nodes,
        [helper.make_tensor_value_info(n, strings, ["batch", 16]) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, strings, ["batch", 16]) for n in ("OUTPUT0", "OUTPUT1")],
    )


def identity_model() -> onnx.ModelProto:
    return _model(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        [helper.make_tensor_value_info("INPUT0", TensorProto.STRING, ["batch", "n"])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.STRING, ["batch", "n"])],
    )


def classifier_model() -> onnx.ModelProto:
    """Shaped like densenet_onnx: data_0 [1, 3, H, W] -> fc6_1 [1, CLASSES, 1, 1] (served
    through `reshape` as [3, H, W] -> [CLASSES]); scores = spatial means times a matrix."""
    weights = np.arange(IMAGE[0] * CLASSES, dtype=np.float32).reshape(IMAGE[0], CLASSES) / 7
    return _model(
        [
            helper.make_node("ReduceMean", ["data_0"], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["scores"]),
            helper.make_node("Reshape", ["scores", "shape"], ["fc6_1"]),
        ],
        [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, *IMAGE])],
        [helper.make_tensor_value_info("fc6_1", TensorProto.FLOAT, [1, CLASSES, 1, 1])],
        [
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(np.array([1, CLASSES, 1, 1], dtype=np.int64), "shape"),
        ],
    )


def square_model() -> onnx.ModelProto:
    """y = 2 * x for x FP32 [batch, 4, 4]: served with a reshape as [batch, 16]."""
    return _model(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 4])],
    )


RESHAPED_CONFIG = """
name: "reshaped"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 16 ] reshape: { shape: [ 4, 4 ] } } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 16 ] reshape: { shape: [ 4, 4 ] } } ]
dynamic_batching { }
"""

SIMPLE_CONFIG = """
name: "simple"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { all { } }
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  default_queue_policy { max_queue_size: 32 }
}
instance_group [ { count: 2 kind: KIND_CPU } ]
"""

SIMPLE_INT8_CONFIG = """
name: "simple_int8"
backend: "onnxruntime"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT8 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT8 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT8 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT8 dims: [ 16 ] }
]
"""

SIMPLE_STRING_CONFIG = """
name: "simple_string"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_STRING dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_STRING dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_STRING dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_STRING dims: [ 16 ] }
]
dynamic_batching { }
"""

# Partial on purpose: Triton fills data types and dims from the model.
SIMPLE_IDENTITY_CONFIG = """
name: "simple_identity"
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "INPUT0" } ]
output [ { name: "OUTPUT0" } ]
response_cache { enable: true }
"""

CLASSIFIER_CONFIG = """
name: "classifier"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [
  {
    name: "data_0"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 4, 4 ]
    reshape { shape: [ 1, 3, 4, 4 ] }
  }
]
output [
  {
    name: "fc6_1"
    data_type: TYPE_FP32
    dims: [ 6 ]
    reshape { shape: [ 1, 6, 1, 1 ] }
    label_filename: "labels.txt"
  }
]
model_warmup [ { name: "zeros" batch_size: 1 } ]
"""


def write_triton_repository(root: Path) -> None:
    """The models above under `root`, each `<model>/config.pbtxt` plus `<model>/1/`
    (`simple` also has version 2)."""
    models = {
        "simple": (simple_model(), SIMPLE_CONFIG),
        "simple_int8": (simple_model(TensorProto.INT8), SIMPLE_INT8_CONFIG),
        "simple_string": (simple_string_model(), SIMPLE_STRING_CONFIG),
        "simple_identity": (identity_model(), SIMPLE_IDENTITY_CONFIG),
        "classifier": (classifier_model(), CLASSIFIER_CONFIG),
        "reshaped": (square_model(), RESHAPED_CONFIG),
    }
    for name, (model, config) in models.items():
        write_model(model, root / name, 1)
        (root / name / "config.pbtxt").write_text(config)
    write_model(simple_model(), root / "simple", 2)
    (root / "classifier" / "labels.txt").write_text("\n".join(LABELS) + "\n")
