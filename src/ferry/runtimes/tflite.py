"""TFLite (`.tflite`) models through the LiteRT interpreter (`ai-edge-litert`).

A model's signatures come, first found wins, from: the TF SignatureDefs TF Serving
embeds in the file's metadata (`signature_defs_metadata`, tflite_signature_defs.py:
served as TF Serving serves them, keys such as `x`/`y` mapped onto the model's
tensors); its signature runners (converters keep the SavedModel's signature keys,
`serving_default` by default); or else `serving_default` from its input and output
tensor details. Shapes come from
`shape_signature`, so a dimension the converter left dynamic is -1 and batches of any
size run (inputs are resized before each run, which LiteRT allows for any dimension,
so `batch_dimension = "dynamic"` also works for models declaring batch 1).

A LiteRT interpreter must be used by one thread at a time, so the runtime keeps a pool
of interpreters over the same model bytes: a run takes one (creating it when all are
busy) and gives it back, and the pool grows only to the number of concurrent runs.
"""

from __future__ import annotations

import queue
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ferry.errors import InvalidArgument
from ferry.runtimes.base import Runtime, RuntimeOptions, model_file_in
from ferry.runtimes.optional import import_framework
from ferry.runtimes.tflite_signature_defs import (
    EmbeddedSignature,
    embedded_signatures,
    read_signature_defs,
)
from ferry.tensors import DEFAULT_SIGNATURE, STRING_DTYPE, Signature, TensorSpec

MODEL_FILE = "model.tflite"
EXTRA = "tflite"


def find_tflite_file(version_dir: Path) -> Path | None:
    """`model.tflite` if present, else the only `*.tflite` file in the folder."""
    return model_file_in(version_dir, MODEL_FILE, "*.tflite")


def _spec(name: str, details: dict[str, Any]) -> TensorSpec:
    dtype = np.dtype(details["dtype"])
    if dtype.kind in "SUO":
        dtype = STRING_DTYPE
    shape = details.get("shape_signature")
    if shape is None:  # older interpreters report only the current shape
        shape = details["shape"]
    return TensorSpec(name, dtype, tuple(int(d) for d in shape))


class _Slot:
    """One interpreter with its signature runners (runners are bound to an interpreter)."""

    def __init__(self, interpreter: Any, signature_keys: list[str]) -> None:
        self.interpreter = interpreter
        self.runners = {key: interpreter.get_signature_runner(key) for key in signature_keys}
        if not signature_keys:
            interpreter.allocate_tensors()


class TFLiteRuntime(Runtime):
    """A TFLite model; `run` is thread-safe through the interpreter pool."""

    format_name = "tflite"
    platforms = ("tflite", "litert", "tensorflow")

    def __init__(self, version_dir: Path, options: RuntimeOptions) -> None:
        super().__init__(version_dir, options)
        self._litert: ModuleType | None = None
        self._content = b""
        self._signature_keys: list[str] = []
        self._signatures: dict[str, Signature] = {}
        self._embedded: dict[str, EmbeddedSignature] = {}
        self._pool: queue.SimpleQueue[_Slot] = queue.SimpleQueue()

    @classmethod
    def can_load(cls, version_dir: Path) -> bool:
        return any(version_dir.glob("*.tflite"))

    def load(self) -> None:
        litert = import_framework("ai_edge_litert.interpreter", EXTRA, "TFLite")
        model_file = find_tflite_file(self.version_dir)
        if model_file is None:
            raise FileNotFoundError(
                f"expected {MODEL_FILE} or a single *.tflite file in {self.version_dir}"
            )
        self._litert, self._content = litert, model_file.read_bytes()
        interpreter = self._new_interpreter()
        signature_defs = read_signature_defs(self._content)
        if signature_defs:
            # TF Serving's view: the embedded signatures over the main graph's tensors.
            self._embedded = embedded_signatures(
                signature_defs,
                [d["name"] for d in interpreter.get_input_details()],
                [d["name"] for d in interpreter.get_output_details()],
            )
            self._signatures = {k: e.signature for k, e in self._embedded.items()}
            self._pool.put(_Slot(interpreter, []))
            return
        self._signature_keys = sorted(interpreter.get_signature_list())
        slot = _Slot(interpreter, self._signature_keys)
        if self._signature_keys:
            self._signatures = {
                key: Signature(
                    inputs={n: _spec(n, d) for n, d in runner.get_input_details().items()},
                    outputs={n: _spec(n, d) for n, d in runner.get_output_details().items()},
                )
                for key, runner in slot.runners.items()
            }
        else:
            self._signatures = {
                DEFAULT_SIGNATURE: Signature(
                    inputs={
                        d["name"]: _spec(d["name"], d) for d in interpreter.get_input_details()
                    },
                    outputs={
                        d["name"]: _spec(d["name"], d) for d in interpreter.get_output_details()
                    },
                )
            }
        self._pool.put(slot)

    def _new_interpreter(self) -> Any:
        assert self._litert is not None
        threads = self.options.intra_op_threads or None
        return self._litert.Interpreter(model_content=self._content, num_threads=threads)

    @property
    def signatures(self) -> dict[str, Signature]:
        return self._signatures

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._litert is None:
            raise RuntimeError("model is not loaded")
        try:
            slot = self._pool.get_nowait()
        except queue.Empty:
            slot = _Slot(self._new_interpreter(), self._signature_keys)
        try:
            embedded = self._embedded.get(signature_name)
            if embedded is not None:
                return _run_embedded(slot.interpreter, embedded, inputs)
            if slot.runners:
                # The runner resizes its inputs to the given shapes before invoking.
                return dict(slot.runners[signature_name](**inputs))
            return _run_plain(slot.interpreter, inputs)
        finally:
            self._pool.put(slot)

    def unload(self) -> None:
        self._litert = None
        self._content = b""
        self._embedded = {}
        self._pool = queue.SimpleQueue()


def _run_embedded(
    interpreter: Any, embedded: EmbeddedSignature, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """An embedded signature's run: its keys fed to and read from the tensors they name."""
    feeds = {embedded.input_tensors[key]: array for key, array in inputs.items()}
    try:
        outputs = _run_plain(interpreter, feeds)
    except (ValueError, RuntimeError) as exc:
        # The interpreter refused the request's shapes (see runtime_checks_shapes).
        raise InvalidArgument(str(exc).strip()) from None
    return {key: outputs[tensor] for key, tensor in embedded.output_tensors.items()}


def _run_plain(interpreter: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A run without signature runners, by tensor name: resize the given inputs where
    their shapes changed, set them, invoke, and read every output by tensor index."""
    details = [d for d in interpreter.get_input_details() if d["name"] in inputs]
    resized = False
    for detail in details:
        shape = inputs[detail["name"]].shape
        if tuple(detail["shape"]) != shape:
            interpreter.resize_tensor_input(detail["index"], shape, strict=False)
            resized = True
    if resized:
        interpreter.allocate_tensors()
    for detail in details:
        interpreter.set_tensor(detail["index"], inputs[detail["name"]])
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
