"""Models for the TF Serving flags that pick what a version folder serves:
`--saved_model_tags` (a SavedModel with two meta graphs), `--prefer_tflite_model` (a
folder holding both a SavedModel and a different `model.tflite`) and
`--enable_signature_method_name_check` (a TF1 signature with a method name of its own).

Importing this module imports TensorFlow; only tests marked `tensorflow` use it.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

v1 = tf.compat.v1
SERVE = v1.saved_model.tag_constants.SERVING
ALT_TAG = "alt"
# What each meta graph of `save_two_meta_graphs` adds to x.
SERVE_OFFSET, ALT_OFFSET = 1.0, 10.0
# `save_saved_model_and_tflite`: the SavedModel doubles, the TFLite model triples.
SAVED_MODEL_FACTOR, TFLITE_FACTOR = 2.0, 3.0
CUSTOM_METHOD = "custom/method"


def _predict_signature(x: tf.Tensor, y: tf.Tensor, method: str) -> object:
    return v1.saved_model.signature_def_utils.build_signature_def(
        {"x": v1.saved_model.utils.build_tensor_info(x)},
        {"y": v1.saved_model.utils.build_tensor_info(y)},
        method,
    )


def _offset_graph(offset: float) -> tuple[tf.Tensor, tf.Tensor]:
    """y = x + offset (a variable named `offset`) in the current graph."""
    x = v1.placeholder(tf.float32, [None], name="x")
    y = tf.identity(x + v1.Variable(offset, name="offset"), name="y")
    return x, y


def _builder_with_offset_graph(path: Path, method: str) -> object:
    """A SavedModelBuilder holding y = x + 1 (a variable `offset`) tagged `serve`, behind a
    `serving_default` signature of `method`; the caller may add meta graphs, then saves."""
    builder = v1.saved_model.builder.SavedModelBuilder(str(path))
    with v1.Session(graph=tf.Graph()) as session:
        x, y = _offset_graph(SERVE_OFFSET)
        session.run(v1.global_variables_initializer())
        builder.add_meta_graph_and_variables(
            session,
            [SERVE],
            signature_def_map={"serving_default": _predict_signature(x, y, method)},
        )
    return builder


def save_two_meta_graphs(path: Path) -> None:
    """One SavedModel, two meta graphs: tagged `serve` (y = x + 1) and `serve,alt`
    (y = x + 10). They share one variables checkpoint, so the second one's offset is a
    constant beside the restored variable."""
    predict = v1.saved_model.signature_constants.PREDICT_METHOD_NAME
    builder = _builder_with_offset_graph(path, predict)
    with v1.Session(graph=tf.Graph()):
        x = v1.placeholder(tf.float32, [None], name="x")
        v1.Variable(SERVE_OFFSET, name="offset")
        y = tf.identity(x + ALT_OFFSET, name="y")
        builder.add_meta_graph(
            [SERVE, ALT_TAG],
            signature_def_map={"serving_default": _predict_signature(x, y, predict)},
        )
    builder.save()


def save_custom_method(path: Path) -> None:
    """y = x + 1 behind a signature whose method name is none of TF Serving's three."""
    _builder_with_offset_graph(path, CUSTOM_METHOD).save()


class _Scale(tf.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = tf.Variable(factor)

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def predict(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self.factor * x}


def save_saved_model_and_tflite(version_dir: Path, scratch: Path) -> None:
    """`version_dir` gets a SavedModel (y = 2x) and a model.tflite (y = 3x) side by side."""
    saved = _Scale(SAVED_MODEL_FACTOR)
    tf.saved_model.save(saved, str(version_dir), signatures={"serving_default": saved.predict})
    lite = _Scale(TFLITE_FACTOR)
    tf.saved_model.save(lite, str(scratch), signatures={"serving_default": lite.predict})
    flatbuffer = tf.lite.TFLiteConverter.from_saved_model(str(scratch)).convert()
    (version_dir / "model.tflite").write_bytes(flatbuffer)
