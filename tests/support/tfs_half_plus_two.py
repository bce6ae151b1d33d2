"""TF Serving's half-plus-two test models, rebuilt by the tests: the TF2 export
(`saved_model_half_plus_two_tf2_cpu`) with its classify and regress signatures, and the
TFLite model with TF Serving's SignatureDef in its metadata
(`saved_model_half_plus_two_tflite_with_sigdef`). Facts from TF Serving's
testdata/saved_model_half_plus_two.py: y = 0.5 x + 2 (y2 and y3 add 3 instead); the
classify/regress signatures parse tf.Examples with features `x` (required) and `x2`
(default 0), each a float list of one value.

Importing this module imports TensorFlow; only tests marked `tensorflow` use it.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

from ferry.protos import message_class

FEATURES = {
    "x": tf.io.FixedLenFeature([1], tf.float32),
    "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
}


class HalfPlusTwo(tf.Module):
    """The TF2 export's signatures: `serving_default` (x float[1] -> y), classify and
    regress signatures over serialized tf.Examples, and two over a float `inputs`."""

    def __init__(self) -> None:
        super().__init__()
        self.a = tf.Variable(0.5)
        self.b = tf.Variable(2.0)
        self.c = tf.Variable(3.0)

    def _line(self, x: tf.Tensor, offset: tf.Variable) -> tf.Tensor:
        return self.a * x + offset

    def _parsed_x(self, serialized: tf.Tensor) -> tf.Tensor:
        return tf.io.parse_example(serialized, FEATURES)["x"]

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32)])
    def predict(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self._line(x, self.b)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_xy(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self._line(self._parsed_x(serialized), self.b)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress_xy2(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self._line(self._parsed_x(serialized), self.c)}

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])
    def regress_x2y3(self, x2: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self._line(x2, self.c)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify_xy(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": self._line(self._parsed_x(serialized), self.b)}

    @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])
    def classify_x2y3(self, x2: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": self._line(x2, self.c)}


def save_half_plus_two_tf2(path: Path) -> None:
    """`tf.saved_model.save` of HalfPlusTwo with TF Serving's signature keys."""
    module = HalfPlusTwo()
    signatures = {
        "serving_default": module.predict,
        "regress_x_to_y": module.regress_xy,
        "regress_x_to_y2": module.regress_xy2,
        "regress_x2_to_y3": module.regress_x2y3,
        "classify_x_to_y": module.classify_xy,
        "classify_x2_to_y3": module.classify_x2y3,
    }
    tf.saved_model.save(module, str(path), signatures=signatures)


def save_half_plus_two_tflite_with_sigdef(path: Path, x_tensor: str = "") -> None:
    """`model.tflite`: a TF1 graph y = 0.5 x + 2 over x = `tflite_input` float[1, 1],
    converted from its session, with TF Serving's predict SignatureDef (`x` ->
    `tflite_input:0`, `y` -> `y:0`) under `serving_default` in the metadata.
    `x_tensor` names another tensor for `x` (a SignatureDef that does not fit)."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default(), v1.Session(graph=graph) as session:
        x = v1.placeholder(tf.float32, [1, 1], name="tflite_input")
        y = tf.identity(tf.add(tf.multiply(0.5, x), 2.0), name="y")
        converter = v1.lite.TFLiteConverter.from_session(session, [x], [y])
        flatbuffer = converter.convert()
    signature_def = message_class("tensorflow.SignatureDef")()
    for infos, key, tensor in ((signature_def.inputs, "x", x), (signature_def.outputs, "y", y)):
        info = infos[key]
        info.name = x_tensor if key == "x" and x_tensor else tensor.name
        info.dtype = tensor.dtype.as_datatype_enum
        for size in tensor.shape:
            info.tensor_shape.dim.add(size=size)
    signature_def.method_name = "tensorflow/serving/predict"
    path.mkdir(parents=True, exist_ok=True)
    metadata = {"serving_default": signature_def.SerializeToString()}
    (path / "model.tflite").write_bytes(with_signature_defs_metadata(flatbuffer, metadata))


def with_signature_defs_metadata(flatbuffer: bytes, signature_defs: dict[str, bytes]) -> bytes:
    """The model with a `signature_defs_metadata` entry: a new buffer holding a FlexBuffer
    map from signature key to serialized SignatureDef (the layout TF's
    `signature_def_utils.set_signature_defs` writes and TF Serving reads)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import flexbuffers

    builder = flexbuffers.Builder()
    with builder.Map():
        for key, serialized in sorted(signature_defs.items()):
            builder.Key(key)
            # A FlexBuffer string of raw bytes, as TF's C++ writer stores the proto; the
            # Python Builder's String() takes text only (it encodes UTF-8).
            builder._WriteBlob(serialized, append_zero=True, type_=flexbuffers.Type.STRING)
    blob = bytes(builder.Finish())

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(flatbuffer, 0))
    buffer = schema.BufferT()
    buffer.data = list(blob)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = "signature_defs_metadata"
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    packer = flatbuffers.Builder(len(flatbuffer) + len(blob) + 1024)
    packer.Finish(model.Pack(packer), file_identifier=b"TFL3")
    return bytes(packer.Output())
