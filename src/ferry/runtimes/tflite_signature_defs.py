"""TF Serving's SignatureDefs embedded in a `.tflite` file, as TF Serving reads them.

TF's `signature_def_utils.set_signature_defs` (what TF Serving's test data generator
uses for `saved_model_half_plus_two_tflite_with_sigdef`) stores a model's TF
SignatureDefs in the flatbuffer's metadata: the entry named `signature_defs_metadata`
points at a buffer holding a FlexBuffer map from signature key to the serialized
`tensorflow.SignatureDef`. TF Serving (tflite_session.cc) serves those signatures, with
their keys (`x`, `y`) and their declared dtypes and shapes, in place of the model's
tensor names (`tflite_input`); each TensorInfo names a tensor of the model's main
graph, either exactly or in TF's form with a `:0` suffix that older converters dropped.

Reading the metadata needs only the flatbuffers package and LiteRT's schema module,
both installed with the `tflite` extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ferry.codecs.tensor_proto import numpy_dtype_of
from ferry.protos import message_class
from ferry.tensors import Signature, TensorSpec

METADATA_NAME = b"signature_defs_metadata"
_INVALID = "Invalid SignatureDefs found in TfLite model: "


@dataclass(frozen=True)
class EmbeddedSignature:
    """One embedded signature: ferry's Signature (keys as TF Serving shows them) and,
    per key, the name of the interpreter tensor it reads or writes."""

    signature: Signature
    input_tensors: dict[str, str]
    output_tensors: dict[str, str]


def read_signature_defs(content: bytes) -> dict[str, Any]:
    """The SignatureDef protos embedded in a .tflite file's bytes, by key ({} if none).
    Raises ValueError, TF Serving's words first, when the metadata is not a map of
    serialized SignatureDefs."""
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import flexbuffers

    model = schema.Model.GetRootAs(content, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name() != METADATA_NAME:
            continue
        data = _buffer_bytes(content, model.Buffers(entry.Buffer()))
        try:
            root = flexbuffers.GetRoot(data)
            if not root.IsMap:
                raise ValueError("the signature_defs_metadata buffer is not a map")
            mapping = root.AsMap
            signature_defs = {}
            for key, value in zip(mapping.Keys, mapping.Values, strict=True):
                if not value.IsString:
                    raise ValueError(f"signature {key.AsKey!r} is not a serialized SignatureDef")
                proto = message_class("tensorflow.SignatureDef")()
                proto.ParseFromString(bytes(value.AsStringBytes))
                signature_defs[key.AsKey] = proto
        except Exception as exc:  # a damaged buffer can fail anywhere in the FlexBuffer
            raise ValueError(f"{_INVALID}{exc}") from None
        return signature_defs
    return {}


def embedded_signatures(
    signature_defs: Mapping[str, Any], input_names: list[str], output_names: list[str]
) -> dict[str, EmbeddedSignature]:
    """The embedded signatures over a model whose main graph has these input and output
    tensor names; ValueError, as TF Serving refuses the model, for a TensorInfo that names
    no tensor of the model."""
    result = {}
    for key, proto in sorted(signature_defs.items()):
        inputs, input_tensors = _side(proto.inputs, input_names, "input")
        outputs, output_tensors = _side(proto.outputs, output_names, "output")
        # TF Serving resizes a TFLite input to the request's shape and lets the
        # interpreter decide (its own test feeds `x` as [1] to a [1, 1] signature).
        signature = Signature(
            inputs, outputs, method_name=proto.method_name, runtime_checks_shapes=True
        )
        result[key] = EmbeddedSignature(signature, input_tensors, output_tensors)
    return result


def _side(
    infos: Mapping[str, Any], tensor_names: list[str], kind: str
) -> tuple[dict[str, TensorSpec], dict[str, str]]:
    specs, tensors = {}, {}
    for key, info in sorted(infos.items()):
        tensor = _tensor_name(info.name, tensor_names)
        if tensor is None:
            raise ValueError(
                f"Unknown tensor '{info.name}'. Signature {kind} {key} references an unknown tensor"
            )
        shape = info.tensor_shape
        dims = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
        specs[key] = TensorSpec(key, numpy_dtype_of(info.dtype, key), dims, tensor_name=tensor)
        tensors[key] = tensor
    return specs, tensors


def _tensor_name(name: str, tensor_names: list[str]) -> str | None:
    """`name` if the model has that tensor, else TF's name without its `:N` suffix."""
    if name in tensor_names:
        return name
    legacy = name.split(":", 1)[0]
    return legacy if legacy in tensor_names else None


def _buffer_bytes(content: bytes, buffer: Any) -> bytes:
    """A flatbuffer Buffer's bytes: inline, or (models over 2 GB) at an offset of the file."""
    if buffer is None:
        return b""
    if buffer.DataLength():
        return buffer.DataAsNumpy().tobytes()
    offset, size = buffer.Offset(), buffer.Size()
    return content[offset : offset + size] if offset > 1 else b""
