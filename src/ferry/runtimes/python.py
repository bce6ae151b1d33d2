"""Custom Python models: a version folder with `model.py`, only with the operator's consent.

For models no framework runtime covers, or that need pre- and post-processing in
Python. `model.py` defines a class (named `Model`, or the only class defined in the
file) with:

    def load(self, version_dir: pathlib.Path) -> None           # read weights, etc.
    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]
    signature = {"inputs": {...}, "outputs": {...}}              # optional, see below
    thread_safe = True                                           # optional
    def unload(self) -> None                                     # optional

The class is created with no arguments. Its signature comes from `signature.json` in
the version folder or, failing that, from its `signature` attribute (set in the class
or by `load`), in the form described in `ferry.runtimes.signature_file`; without
dimension 0 at -1 on every tensor, requests are not batched. `predict` gets the
signature's inputs (batched along dimension 0 when the signature allows) and must
return at least the signature's outputs, each with a row per input row when batched.
String tensors are numpy object arrays of `bytes`.

Consent: importing `model.py` runs it, with the server's permissions. ferry does so
only when the operator allows it (`ferry serve --allow_code NAME`, see `ferry.consent`),
the same rule as for pickles (`--allow_pickle`) and for SageMaker's `code/inference.py`;
otherwise the load fails with a message naming the flag. A `ferry.toml` in the folder
cannot grant it, and a model configured by a network request never gets it.

Threads: the batcher may call `predict` from several threads (`num_batch_threads`),
so ferry serialises the calls with a lock unless the class sets `thread_safe = True`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import threading
from contextlib import nullcontext
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ferry.errors import InternalError
from ferry.runtimes.base import Runtime, RuntimeOptions
from ferry.runtimes.signature_file import SIGNATURE_FILE, parse_signatures, read_signature_file
from ferry.tensors import STRING_DTYPE, Signature

MODEL_FILE = "model.py"
CLASS_NAME = "Model"


def code_description(path: Path) -> str:
    """How a refusal names a Python file in a model folder (model.py, inference.py)."""
    return f"{path.name} is Python code"


def import_file(path: Path, prefix: str) -> ModuleType:
    """Import a Python file under a module name unique to its path, so two versions (or
    two models) with a `model.py` each never share or replace each other's module."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    name = f"{prefix}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


class PythonRuntime(Runtime):
    """A user's `model.py` class; see the module docstring for the contract."""

    format_name = "python"
    platforms = ("python", "custom")

    def __init__(self, version_dir: Path, options: RuntimeOptions) -> None:
        super().__init__(version_dir, options)
        self._model: Any = None
        self._module_name = ""
        self._signatures: dict[str, Signature] = {}
        self._lock: threading.Lock | nullcontext = nullcontext()

    @classmethod
    def can_load(cls, version_dir: Path) -> bool:
        return (version_dir / MODEL_FILE).is_file()

    def load(self) -> None:
        path = self.version_dir / MODEL_FILE
        self.consent.require_code(code_description(path))
        module = import_file(path, "ferry_model")
        self._module_name = module.__name__
        model = _model_class(module, path)()
        model.load(self.version_dir)
        recorded = self.version_dir / SIGNATURE_FILE
        if recorded.is_file():
            self._signatures = read_signature_file(recorded)
        elif getattr(model, "signature", None) is not None:
            self._signatures = parse_signatures(model.signature)
        else:
            raise ValueError(
                f"{path.name}: no signature; write {SIGNATURE_FILE} beside it or give the "
                "class a `signature` attribute ({'inputs': {...}, 'outputs': {...}})"
            )
        self._lock = nullcontext() if getattr(model, "thread_safe", False) else threading.Lock()
        self._model = model

    @property
    def signatures(self) -> dict[str, Signature]:
        return self._signatures

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        model = self._model
        if model is None:
            raise RuntimeError("model is not loaded")
        with self._lock:
            result = model.predict(dict(inputs))
        if not isinstance(result, dict):
            raise InternalError(
                f"{MODEL_FILE}: predict returned a {type(result).__name__}, not a dict of arrays"
            )
        wanted = self._signatures[signature_name].outputs
        missing = [name for name in wanted if name not in result]
        if missing:
            raise InternalError(f"{MODEL_FILE}: predict did not return outputs {missing}")
        return {name: _array(result[name], spec.dtype) for name, spec in wanted.items()}

    def unload(self) -> None:
        model, self._model = self._model, None
        if model is not None and callable(getattr(model, "unload", None)):
            model.unload()
        sys.modules.pop(self._module_name, None)


def _model_class(module: ModuleType, path: Path) -> type:
    candidate = getattr(module, CLASS_NAME, None)
    if inspect.isclass(candidate):
        return candidate
    defined = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and value.__module__ == module.__name__
        and callable(getattr(value, "predict", None))
        and callable(getattr(value, "load", None))
    ]
    if len(defined) != 1:
        raise ValueError(
            f"{path.name} must define a class named {CLASS_NAME} (or exactly one class) "
            f"with load(version_dir) and predict(inputs); found {len(defined)} candidates"
        )
    return defined[0]


def _array(value: Any, dtype: np.dtype) -> np.ndarray:
    """The returned value as the signature's dtype (strings as bytes, as ferry carries)."""
    array = np.asarray(value)
    if dtype == STRING_DTYPE:
        out = np.empty(array.shape, dtype=object)
        out.flat[:] = [v.encode() if isinstance(v, str) else v for v in array.flat]
        return out
    return array.astype(dtype, copy=False)
