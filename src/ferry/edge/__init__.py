"""ferry.edge: run a lite model on a device with no server.

`ferry.edge.load(path).predict(inputs)` runs a `.tflite` model through LiteRT
(`ai-edge-litert`) or an `.onnx`/`.ort` model through onnxruntime, with the server's
signature rules: inputs by name (or one array for a single-input model), converted to
the model's dtypes, shapes checked, errors that say what the model expects.

This package imports numpy, the standard library and the one runtime the model needs,
and nothing else of ferry (no server, no protocols, no web or gRPC stack, no training
framework), so it installs small (`pip install ferry-edge`, see docs/edge.md) and copies
into a bundle (`ferry edge bundle`) as it is. Keep every import here relative.
"""

from __future__ import annotations

from .inputs import read_inputs
from .model import EdgeModel, load, outputs_document
from .signature import EdgeInputError, EdgeSignature, TensorInfo

__all__ = [
    "EdgeInputError",
    "EdgeModel",
    "EdgeSignature",
    "TensorInfo",
    "load",
    "outputs_document",
    "read_inputs",
]
