"""`EdgeModel`: a loaded lite model and its signature."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .signature import EdgeSignature

SIGNATURE_FILE = "signature.json"
# Model files a bundle or a version folder may hold, in order of preference.
MODEL_SUFFIXES = (".tflite", ".ort", ".onnx")


class _Backend(Protocol):
    signature: EdgeSignature

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class EdgeModel:
    """A model ready to predict. `predict` is thread-safe (the TFLite backend serialises
    calls; onnxruntime sessions allow concurrent runs)."""

    def __init__(self, path: Path, backend: _Backend) -> None:
        self.path = path
        self._backend = backend

    @property
    def signature(self) -> EdgeSignature:
        return self._backend.signature

    @property
    def input_names(self) -> list[str]:
        return list(self._backend.signature.inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._backend.signature.outputs)

    def predict(self, inputs: Any) -> dict[str, np.ndarray]:
        """Outputs by name for `inputs` (one array or list for a single-input model, or a
        dict by input name). Raises EdgeInputError when the inputs do not fit."""
        return self._backend.run(self._backend.signature.prepare(inputs))


def outputs_document(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """What `ferry edge predict` and a bundle's run.py print: `{"outputs": {name: values}}`,
    one shape for both (and the shape of a V2/TF Serving columnar "outputs" answer), so a
    script written against one reads the other."""
    return {"outputs": {name: value.tolist() for name, value in outputs.items()}}


def find_model_file(folder: Path) -> Path:
    """The one lite model in a bundle or version folder (.tflite, then .ort, then .onnx)."""
    for suffix in MODEL_SUFFIXES:
        found = sorted(folder.glob(f"*{suffix}"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ValueError(f"{folder} holds several {suffix} files: {[p.name for p in found]}")
    raise FileNotFoundError(f"no {', '.join(MODEL_SUFFIXES)} model in {folder}")


def load(path: str | os.PathLike[str], num_threads: int = 0) -> EdgeModel:
    """Load a `.tflite`, `.ort` or `.onnx` file (or a folder holding one, such as a bundle).

    `num_threads`: 0 lets the runtime choose. Raises ImportError naming the package to
    install when the model's runtime is missing.
    """
    path = Path(path)
    if path.is_dir():
        path = find_model_file(path)
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        from .tflite_backend import LiteBackend

        return EdgeModel(path, LiteBackend(path, num_threads))
    if suffix in (".onnx", ".ort"):
        try:
            from .onnx_backend import OnnxBackend

            return EdgeModel(path, OnnxBackend(path, num_threads))
        except ModuleNotFoundError as exc:
            if exc.name != "onnxruntime":
                raise
            message = f"{suffix} models need onnxruntime: pip install onnxruntime"
            raise ImportError(message) from None
    raise ValueError(f"{path.name}: ferry.edge runs .tflite, .ort and .onnx models")
