"""`.onnx` and `.ort` models through onnxruntime (the full build reads both formats)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .signature import EdgeSignature, TensorInfo

_NUMPY_BY_ORT_TYPE = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": object,
}


class OnnxBackend:
    """One onnxruntime session; `run` may be called from several threads (sessions allow it)."""

    def __init__(self, path: Path, num_threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.signature = EdgeSignature(
            {a.name: _info(a) for a in self._session.get_inputs()},
            {a.name: _info(a) for a in self._session.get_outputs()},
        )

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(self.signature.outputs)
        return dict(zip(names, self._session.run(names, inputs), strict=True))


def _info(arg: object) -> TensorInfo:
    ort_type = getattr(arg, "type", "")
    if ort_type not in _NUMPY_BY_ORT_TYPE:
        raise ValueError(f"tensor '{arg.name}' has unsupported type {ort_type}")  # type: ignore[attr-defined]
    shape = getattr(arg, "shape", None)
    dims = None
    if shape is not None:
        dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)
    return TensorInfo(arg.name, np.dtype(_NUMPY_BY_ORT_TYPE[ort_type]), dims)  # type: ignore[attr-defined]
