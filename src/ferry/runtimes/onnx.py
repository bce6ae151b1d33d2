"""ONNX models through onnxruntime (CPU provider; GPU providers when installed and asked for)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ferry.errors import InvalidArgument
from ferry.runtimes.base import Runtime, RuntimeOptions, model_file_in
from ferry.tensors import DEFAULT_SIGNATURE, STRING_DTYPE, Signature, TensorSpec

# onnxruntime reports element types as strings such as "tensor(float)".
_NUMPY_BY_ORT_TYPE: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": STRING_DTYPE,
}

MODEL_FILE = "model.onnx"


def find_model_file(version_dir: Path) -> Path | None:
    """`model.onnx` if present, else the only `*.onnx` file in the folder."""
    return model_file_in(version_dir, MODEL_FILE, "*.onnx")


def _spec(arg: ort.NodeArg, unranked: frozenset[str] = frozenset()) -> TensorSpec:
    """`unranked`: names whose shape the model leaves out entirely (any rank)."""
    dtype = _NUMPY_BY_ORT_TYPE.get(arg.type)
    if dtype is None:
        raise ValueError(f"tensor '{arg.name}' has unsupported type {arg.type}")
    shape = None
    if arg.shape is not None and arg.name not in unranked:
        # Symbolic dims ("batch", "N") and unknown dims (None) are both "any size".
        shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, dtype, shape)


def session_signature(session: ort.InferenceSession, model_file: Path) -> Signature:
    """The signature of a loaded model, as every ferry tool reports it."""
    unranked = _unranked_names(model_file, [*session.get_inputs(), *session.get_outputs()])
    return Signature(
        {arg.name: _spec(arg, unranked) for arg in session.get_inputs()},
        {arg.name: _spec(arg, unranked) for arg in session.get_outputs()},
    )


def _unranked_names(model_file: Path, args: list[ort.NodeArg]) -> frozenset[str]:
    """Graph inputs and outputs declared without any shape.

    onnxruntime reports both a scalar and a tensor of unknown rank as shape `[]`; only
    the model file tells them apart. It is read (without external weights) only when
    some tensor reports `[]`, so the common model costs no second parse.
    """
    if not any(arg.shape == [] for arg in args):
        return frozenset()
    graph = onnx.load(str(model_file), load_external_data=False).graph
    return frozenset(
        value.name
        for value in [*graph.input, *graph.output]
        if value.type.HasField("tensor_type") and not value.type.tensor_type.HasField("shape")
    )


def _text_array(array: np.ndarray) -> np.ndarray:
    """ferry carries strings as bytes; onnxruntime's binding wants `str` (it stores UTF-8)."""
    flat = array.reshape(-1)
    try:
        text = [item.decode("utf-8") if isinstance(item, bytes) else item for item in flat]
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"ONNX string tensors hold UTF-8 text; an input string is not UTF-8: {exc}"
        ) from None
    return np.array(text, dtype=object).reshape(array.shape)


def _bytes_array(array: np.ndarray) -> np.ndarray:
    out = np.empty(array.size, dtype=object)
    out[:] = [item.encode("utf-8") if isinstance(item, str) else item for item in array.flat]
    return out.reshape(array.shape)


class OnnxRuntime(Runtime):
    """An ONNX model; `run` is thread-safe (onnxruntime sessions allow concurrent runs)."""

    format_name = "onnx"
    platforms = ("onnx", "onnxruntime", "onnxruntime_onnx")

    def __init__(
        self,
        version_dir: Path,
        options: RuntimeOptions,
        model_file: Path | None = None,
        providers: list[str | tuple[str, dict[str, str]]] | None = None,
    ) -> None:
        """`model_file` overrides the file found in `version_dir` (an accelerated export or a
        lower-precision variant); `providers` are onnxruntime execution providers in order of
        preference (default: CPU only; see ferry.runtimes.precision for the GPU ones)."""
        super().__init__(version_dir, options)
        self._model_file = model_file
        self._providers = providers or ["CPUExecutionProvider"]
        self._session: ort.InferenceSession | None = None
        self._signatures: dict[str, Signature] = {}
        self._output_names: list[str] = []

    @classmethod
    def can_load(cls, version_dir: Path) -> bool:
        return find_model_file(version_dir) is not None

    def load(self) -> None:
        model_file = self._model_file or find_model_file(self.version_dir)
        if model_file is None:
            raise FileNotFoundError(f"no {MODEL_FILE} in {self.version_dir}")
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = self.options.intra_op_threads
        session_options.inter_op_num_threads = self.options.inter_op_threads
        spinning = "1" if self.options.allow_spinning else "0"
        session_options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        session_options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        session = ort.InferenceSession(
            str(model_file), sess_options=session_options, providers=self._providers
        )
        signature = session_signature(session, model_file)
        self._signatures = {DEFAULT_SIGNATURE: signature}
        self._output_names = list(signature.outputs)
        self._session = session

    @property
    def signatures(self) -> dict[str, Signature]:
        return self._signatures

    @property
    def model_file(self) -> Path | None:
        """The file this runtime loads (None when the folder holds no ONNX model)."""
        return self._model_file or find_model_file(self.version_dir)

    @property
    def active_providers(self) -> list[str]:
        """The execution providers the loaded session uses, in order (empty before load)."""
        return self._session.get_providers() if self._session is not None else []

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session
        if session is None:
            raise RuntimeError("model is not loaded")
        feeds = {
            name: _text_array(array) if array.dtype == STRING_DTYPE else array
            for name, array in inputs.items()
        }
        results = session.run(self._output_names, feeds)
        return {
            name: _bytes_array(array) if array.dtype == STRING_DTYPE else array
            for name, array in zip(self._output_names, results, strict=True)
        }

    def unload(self) -> None:
        self._session = None
