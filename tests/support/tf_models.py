"""Small TensorFlow and Keras models the TensorFlow tests build, save and serve.

Importing this module imports TensorFlow; only tests marked `tensorflow` use it.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf


def mlp_keras(width: int = 4, hidden: int = 8, classes: int = 3, seed: int = 0) -> keras.Model:
    """x float32[N, width] -> probs float32[N, classes]; weights fixed by `seed`."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((width,), name="x")
    h = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    probs = keras.layers.Dense(classes, activation="softmax", name="probs")(h)
    return keras.Model(x, probs, name="mlp")


def two_io_keras(seed: int = 1) -> keras.Model:
    """Two named inputs (a[N,3], b[N,2]) and two named outputs (total[N,1], mixed[N,2])."""
    keras.utils.set_random_seed(seed)
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    joined = keras.layers.Concatenate()([a, b])
    total = keras.layers.Dense(1, name="total")(joined)
    mixed = keras.layers.Dense(2, activation="tanh", name="mixed")(joined)
    return keras.Model([a, b], [total, mixed], name="two_io")


class TextAndScale(tf.Module):
    """`serving_default`: y = 2x for x float32[N, 4]; `text`: per string its length (int64)
    and its upper-case form (bytes), to check named signatures and string tensors."""

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def scale(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x * 2.0}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def text(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            "length": tf.cast(tf.strings.length(text), tf.int64),
            "upper": tf.strings.upper(text),
        }


def save_text_and_scale(path: Path) -> TextAndScale:
    module = TextAndScale()
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.scale, "text": module.text}
    )
    return module


class FixedBatch(tf.Module):
    """y = 3x for x float32[1, 4]: a model exported with a fixed batch size of 1."""

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x * 3.0}


def save_fixed_batch(path: Path) -> None:
    module = FixedBatch()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


CLASSIFIER_WEIGHTS = np.array([[1.0, 2.0], [3.0, -1.0]], dtype=np.float32)
CLASSIFIER_LABELS = [b"cat", b"dog"]


def save_classifier(path: Path) -> None:
    """A TF1-style SavedModel with classify (`serving_default`), regress (`regress`) and
    predict (`predict`) signatures over tf.Examples with one feature `x` (2 floats).

    TF2's `tf.saved_model.save` always writes method_name `tensorflow/serving/predict`;
    the classify/regress method names that TF Serving's Classify/Regress APIs need come
    only from `tf.compat.v1.saved_model` signature defs (what Estimator exports used).
    """
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        features = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([2], tf.float32)})
        x = features["x"]
        scores = tf.nn.softmax(tf.matmul(x, tf.constant(CLASSIFIER_WEIGHTS)))
        classes = tf.tile(tf.constant([CLASSIFIER_LABELS]), [tf.shape(x)[0], 1])
        total = tf.reduce_sum(x, axis=1)
        plain = v1.placeholder(tf.float32, [None, 2], name="plain_x")
        signatures = {
            "serving_default": v1.saved_model.classification_signature_def(
                serialized, classes, scores
            ),
            "regress": v1.saved_model.regression_signature_def(serialized, total),
            "predict": v1.saved_model.predict_signature_def(
                {"x": plain}, {"scores": tf.nn.softmax(tf.matmul(plain, CLASSIFIER_WEIGHTS))}
            ),
        }
        with v1.Session(graph=graph) as session:
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(
                session, [tf.saved_model.SERVING], signature_def_map=signatures
            )
            builder.save()


def classifier_scores(x: np.ndarray) -> np.ndarray:
    logits = x.astype(np.float32) @ CLASSIFIER_WEIGHTS
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)
