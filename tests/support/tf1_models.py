"""TF1-era (graph-mode) SavedModels the way TF Serving's testdata and the SageMaker
recipe build them, and a TF2 export of the same function, for the session-bundle tests.

`half_plus_two` follows TF Serving's `saved_model_half_plus_two.py` (a tf.Example
placeholder, parse_example, `x`/`y` as Identity tensors, variables a=0.5 b=2 c=3, one
predict, three regress and one classify signature def); `half_plus_three` follows the
`saved_model_half_plus_three` testdata (a TensorInfo for `x` written without a shape, a
signature keyed `tensorflow/serving/regress`). Importing this module imports TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
PREDICT = v1.saved_model.signature_constants.PREDICT_METHOD_NAME
SAGEMAKER_WEIGHTS = np.array([[0.5], [-1.0], [2.0]], dtype=np.float32)
SAGEMAKER_BIAS = np.float32(0.25)


def _feature_spec() -> dict:
    return {
        "x": v1.FixedLenFeature([1], dtype=tf.float32),
        "x2": v1.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
    }


def _signature(inputs: dict, outputs: dict, method: str) -> object:
    return v1.saved_model.signature_def_utils.build_signature_def(
        {k: v1.saved_model.utils.build_tensor_info(t) for k, t in inputs.items()},
        {k: v1.saved_model.utils.build_tensor_info(t) for k, t in outputs.items()},
        method,
    )


def save_half_plus_two(path: Path) -> None:
    """y = 0.5x + 2 (and y2 = 0.5x + 3, y3 = 0.5x2 + 3), TF Serving's testdata recipe."""
    regress = v1.saved_model.signature_constants.REGRESS_METHOD_NAME
    classify = v1.saved_model.signature_constants.CLASSIFY_METHOD_NAME
    builder = v1.saved_model.builder.SavedModelBuilder(str(path))
    with v1.Session(graph=tf.Graph()) as session:
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(2.0, name="b")
        c = v1.Variable(3.0, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example", shape=[None])
        example = v1.parse_example(serialized, _feature_spec())
        x = tf.identity(example["x"], name="x")
        y = tf.identity(tf.add(tf.multiply(a, x), b), name="y")
        y2 = tf.identity(tf.add(tf.multiply(a, x), c), name="y2")
        x2 = tf.identity(example["x2"], name="x2")
        a2 = v1.Variable(0.5, name="a2")
        c2 = v1.Variable(3.0, name="c2")
        y3 = tf.identity(tf.add(tf.multiply(a2, x2), c2), name="y3")
        signatures = {
            "serving_default": _signature({"x": x}, {"y": y}, PREDICT),
            "regress_x_to_y": _signature({"inputs": serialized}, {"outputs": y}, regress),
            "regress_x_to_y2": _signature({"inputs": serialized}, {"outputs": y2}, regress),
            "regress_x2_to_y3": _signature({"inputs": x2}, {"outputs": y3}, regress),
            "classify_x_to_y": _signature({"inputs": serialized}, {"scores": y}, classify),
        }
        # The committed testdata (written by an older TF) records the serialized
        # tf.Example input as of unknown rank; its metadata JSON shows that.
        for signature in signatures.values():
            for info in signature.inputs.values():
                if info.name == serialized.name:
                    info.tensor_shape.Clear()
                    info.tensor_shape.unknown_rank = True
        session.run(v1.global_variables_initializer())
        builder.add_meta_graph_and_variables(
            session, [v1.saved_model.tag_constants.SERVING], signature_def_map=signatures
        )
    builder.save()


def save_half_plus_three(path: Path, regress_input_declared_float: bool = False) -> None:
    """y = 0.5x + 3 with `x`'s TensorInfo written without a shape, as in the testdata.

    `regress_input_declared_float`: the regress signature's `inputs` TensorInfo says
    DT_FLOAT while its tensor is the string placeholder, as in the SageMaker TF Serving
    container's test/resources copy (written by TensorFlow 1.0); TF Serving regresses
    with it all the same, feeding the serialized examples by tensor name."""
    regress = v1.saved_model.signature_constants.REGRESS_METHOD_NAME
    builder = v1.saved_model.builder.SavedModelBuilder(str(path))
    with v1.Session(graph=tf.Graph()) as session:
        a = v1.Variable(0.5, name="a")
        c = v1.Variable(3.0, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example")
        x = tf.identity(v1.parse_example(serialized, _feature_spec())["x"], name="x")
        y = tf.identity(tf.add(tf.multiply(a, x), c), name="y")
        predict = _signature({"x": x}, {"y": y}, PREDICT)
        predict.inputs["x"].ClearField("tensor_shape")
        predict.outputs["y"].ClearField("tensor_shape")
        signatures = {
            "serving_default": predict,
            regress: _signature({"inputs": serialized}, {"outputs": y}, regress),
        }
        if regress_input_declared_float:
            signatures[regress].inputs["inputs"].dtype = tf.float32.as_datatype_enum
        session.run(v1.global_variables_initializer())
        builder.add_meta_graph_and_variables(
            session, [v1.saved_model.tag_constants.SERVING], signature_def_map=signatures
        )
    builder.save()


def save_sagemaker_recipe(path: Path) -> None:
    """The SageMaker TF Serving recipe: `builder.SavedModelBuilder` +
    `predict_signature_def` + `add_meta_graph_and_variables`; score = x @ W + b for
    `inputs` float32[N, 3]."""
    builder = v1.saved_model.builder.SavedModelBuilder(str(path))
    with v1.Session(graph=tf.Graph()) as session:
        inputs = v1.placeholder(tf.float32, [None, 3], name="inputs")
        weights = v1.Variable(SAGEMAKER_WEIGHTS, name="weights")
        bias = v1.Variable(SAGEMAKER_BIAS, name="bias")
        score = tf.add(tf.matmul(inputs, weights), bias, name="score")
        signature = v1.saved_model.signature_def_utils.predict_signature_def(
            inputs={"inputs": inputs}, outputs={"score": score}
        )
        session.run(v1.global_variables_initializer())
        builder.add_meta_graph_and_variables(
            sess=session,
            tags=[v1.saved_model.tag_constants.SERVING],
            signature_def_map={"serving_default": signature},
        )
    builder.save()


def sagemaker_scores(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) @ SAGEMAKER_WEIGHTS + SAGEMAKER_BIAS


class HalfPlusTwoTf2(tf.Module):
    """The same y = 0.5x + 2 as a TF2 export (an object graph and a tf.function)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = tf.Variable(0.5, name="a")
        self.b = tf.Variable(2.0, name="b")

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def predict(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self.a * x + self.b}


def save_half_plus_two_tf2(path: Path) -> None:
    module = HalfPlusTwoTf2()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.predict})
