"""Signatures for the edge runtime: input names, dtypes and shapes, checked as the server does.

This module must import nothing but numpy: `ferry.edge` runs where only numpy and one
inference runtime are installed, and a bundle carries a copy of this package. The
rules (and messages) follow `ferry.tensors`, so a request that the server refuses is
refused on the device too: missing or unknown input names, a rank or a fixed dimension
that differs from the model's, a value that does not convert to the input's dtype
without losing meaning (strings for numbers, fractions for integers).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The TF DataType names that signature.json uses (see ferry.convert.save.record_signature).
_NUMPY_BY_TF_NAME: dict[str, np.dtype] = {
    "DT_FLOAT": np.dtype(np.float32),
    "DT_DOUBLE": np.dtype(np.float64),
    "DT_HALF": np.dtype(np.float16),
    "DT_INT8": np.dtype(np.int8),
    "DT_INT16": np.dtype(np.int16),
    "DT_INT32": np.dtype(np.int32),
    "DT_INT64": np.dtype(np.int64),
    "DT_UINT8": np.dtype(np.uint8),
    "DT_UINT16": np.dtype(np.uint16),
    "DT_UINT32": np.dtype(np.uint32),
    "DT_UINT64": np.dtype(np.uint64),
    "DT_BOOL": np.dtype(np.bool_),
    "DT_STRING": np.dtype(object),
}
_TF_NAME_BY_NUMPY = {dtype: name for name, dtype in _NUMPY_BY_TF_NAME.items()}


class EdgeInputError(ValueError):
    """The inputs do not fit the model's signature; the message says what was expected."""


@dataclass(frozen=True)
class TensorInfo:
    """One named tensor; `shape` uses -1 for a dimension of any size (None: rank unknown)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "dtype": _TF_NAME_BY_NUMPY.get(self.dtype, "DT_INVALID"),
            "shape": list(self.shape or []),
        }


@dataclass(frozen=True)
class EdgeSignature:
    """The model's inputs and outputs, in the model's order."""

    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]

    def to_json(self) -> dict[str, Any]:
        """The layout of ferry's signature.json, so a bundle reads like a version folder."""
        return {
            "signatures": {
                "serving_default": {
                    "inputs": {n: t.to_json() for n, t in self.inputs.items()},
                    "outputs": {n: t.to_json() for n, t in self.outputs.items()},
                    "method_name": "tensorflow/serving/predict",
                }
            }
        }

    def prepare(self, inputs: Any) -> dict[str, np.ndarray]:
        """Checked arrays for `inputs`: one array (or nested list) for a single-input model,
        or a mapping by input name. Raises EdgeInputError naming the problem."""
        if not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise EdgeInputError(
                    f"The model has {len(self.inputs)} inputs {sorted(self.inputs)}: pass a "
                    "dict keyed by input name"
                )
            inputs = {next(iter(self.inputs)): inputs}
        missing = [name for name in self.inputs if name not in inputs]
        if missing:
            raise EdgeInputError(
                f"Missing input(s) {sorted(missing)}; the model expects {sorted(self.inputs)}"
            )
        unknown = [name for name in inputs if name not in self.inputs]
        if unknown:
            raise EdgeInputError(
                f"Unknown input(s) {sorted(unknown)}; the model expects {sorted(self.inputs)}"
            )
        prepared = {}
        for name, info in self.inputs.items():
            array = _convert(inputs[name], info)
            _check_shape(array, info)
            prepared[name] = array
        return prepared


def read_signature_json(path: Path) -> EdgeSignature:
    """The `serving_default` signature recorded in a signature.json file."""
    description = json.loads(path.read_text())
    entry = description["signatures"]["serving_default"]

    def specs(part: dict[str, Any]) -> dict[str, TensorInfo]:
        return {
            name: TensorInfo(name, _NUMPY_BY_TF_NAME[spec["dtype"]], tuple(spec["shape"]))
            for name, spec in part.items()
        }

    return EdgeSignature(specs(entry["inputs"]), specs(entry["outputs"]))


def _convert(value: Any, info: TensorInfo) -> np.ndarray:
    try:
        raw = np.asarray(value)
    except ValueError as exc:
        raise EdgeInputError(f"Input '{info.name}' is ragged or malformed: {exc}") from None
    target = info.dtype
    if raw.dtype == target:
        return raw
    kind = raw.dtype.kind
    if target.kind == "O":
        if kind not in "SUO":
            raise EdgeInputError(f"Input '{info.name}' must hold strings")
        return raw.astype(object)
    if kind in "SUO":
        raise EdgeInputError(
            f"Input '{info.name}' holds {raw.dtype} values but the model expects {target}"
        )
    if target.kind in "iu" and kind == "f" and not np.all(raw == np.floor(raw)):
        raise EdgeInputError(
            f"Input '{info.name}' holds non-integer numbers but the model expects {target}"
        )
    if kind == "b" and target.kind != "b":
        raise EdgeInputError(
            f"Input '{info.name}' holds true/false values but the model expects {target}"
        )
    return raw.astype(target)


def _check_shape(array: np.ndarray, info: TensorInfo) -> None:
    problem = shape_mismatch(info.name, array.shape, info.shape)
    if problem is not None:
        raise EdgeInputError(problem)


def shape_mismatch(
    name: str, shape: tuple[int, ...], expected: tuple[int, ...] | None
) -> str | None:
    """Why an input of `shape` does not fit `expected` (-1: any size; None: any
    shape), or None when it fits. The server (`ferry.tensors`) uses it too, so both
    refuse the same inputs with the same words."""
    if expected is None:
        return None
    if len(shape) != len(expected):
        return (
            f"Input '{name}' has rank {len(shape)} (shape {list(shape)}) "
            f"but the model expects rank {len(expected)} (shape {list(expected)})"
        )
    for axis, (got, want) in enumerate(zip(shape, expected, strict=True)):
        if want != -1 and got != want:
            return (
                f"Input '{name}' has shape {list(shape)} but the model expects "
                f"{list(expected)} (dimension {axis} must be {want})"
            )
    return None
