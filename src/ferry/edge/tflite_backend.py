"""`.tflite` models through LiteRT (`ai-edge-litert`; the older `tflite-runtime` also works).

A LiteRT interpreter serves one caller at a time, so `run` holds a lock. The model's
`serving_default` signature (kept by the TFLite converter) gives the input and output
names; the signature runner resizes dynamic dimensions (the batch) per call.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from .signature import EdgeSignature, TensorInfo


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        except ImportError:
            raise ImportError(".tflite models need LiteRT: pip install ai-edge-litert") from None
    return Interpreter


class LiteBackend:
    """One LiteRT interpreter behind a lock."""

    def __init__(self, path: Path, num_threads: int = 0) -> None:
        interpreter_class = _interpreter_class()
        self._interpreter = interpreter_class(model_path=str(path), num_threads=num_threads or None)
        signatures = self._interpreter.get_signature_list()
        if not signatures:
            raise ValueError(
                f"{path.name} has no signature; convert it with `ferry lite` (which keeps the "
                "model's serving_default signature)"
            )
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        self._runner = self._interpreter.get_signature_runner(key)
        self.signature = EdgeSignature(
            _infos(self._runner.get_input_details()), _infos(self._runner.get_output_details())
        )
        self._lock = threading.Lock()

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            outputs = self._runner(**inputs)
        # The runner's arrays may be views of interpreter memory: copy before the next call.
        return {name: np.array(outputs[name]) for name in self.signature.outputs}


def _infos(details: dict[str, dict[str, Any]]) -> dict[str, TensorInfo]:
    infos = {}
    for name, detail in details.items():
        shape = detail.get("shape_signature", detail["shape"])
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "S":  # LiteRT reports string tensors as bytes_
            dtype = np.dtype(object)
        infos[name] = TensorInfo(name, dtype, tuple(int(d) for d in shape))
    return infos
