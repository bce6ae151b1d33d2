"""`signature.json`: a model's signatures written beside its files.

Some formats do not describe their own inputs and outputs (TorchScript records neither
names, dtypes nor shapes; a custom `model.py` is arbitrary code), so their runtimes read
the signature from this file. `ferry save` writes it for every model it saves; people
who write a custom model by hand may write it themselves:

    {"signatures": {"serving_default": {
        "inputs":  {"x": {"dtype": "float32", "shape": [-1, 4]}},
        "outputs": {"y": {"dtype": "DT_FLOAT", "shape": [-1, 2]}}}}}

The outer `"signatures"` level may be left out for a single `serving_default`
signature. Dtypes are TF names (`DT_FLOAT`, as `ferry save` writes) or numpy names
(`float32`); -1 is a dimension of any size (dimension 0 of every tensor -1: requests
may be stacked into batches); `"shape": null` is a tensor of unknown rank. The order
of the inputs is the order in which positional runtimes (TorchScript) pass them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ferry.errors import InvalidArgument
from ferry.tensors import (
    DEFAULT_SIGNATURE,
    STRING_DTYPE,
    Signature,
    TensorSpec,
    numpy_dtype,
    tf_dtype_name,
)

SIGNATURE_FILE = "signature.json"


class SignatureFileError(ValueError):
    """A signature file or attribute is malformed; the message names the file and field."""


def read_signature_file(path: Path) -> dict[str, Signature]:
    """The signatures in `path`; raises SignatureFileError naming what is wrong."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SignatureFileError(f"{path}: {exc}") from None
    try:
        return parse_signatures(raw)
    except SignatureFileError as exc:
        raise SignatureFileError(f"{path}: {exc}") from None


def parse_signatures(raw: Any) -> dict[str, Signature]:
    """Signatures from the JSON form above (a parsed object, not text)."""
    if not isinstance(raw, dict):
        raise SignatureFileError("expected a JSON object")
    if "signatures" in raw:
        described = raw["signatures"]
        if not isinstance(described, dict) or not described:
            raise SignatureFileError("'signatures' must be a non-empty object")
    else:
        described = {DEFAULT_SIGNATURE: raw}
    return {name: _signature(name, value) for name, value in described.items()}


def _signature(name: str, raw: Any) -> Signature:
    if not isinstance(raw, dict) or not isinstance(raw.get("inputs"), dict):
        raise SignatureFileError(f"signature {name!r} needs an 'inputs' object")
    if not isinstance(raw.get("outputs"), dict):
        raise SignatureFileError(f"signature {name!r} needs an 'outputs' object")
    inputs = {n: _spec(name, n, s) for n, s in raw["inputs"].items()}
    outputs = {n: _spec(name, n, s) for n, s in raw["outputs"].items()}
    method = raw.get("method_name") or "tensorflow/serving/predict"
    return Signature(inputs, outputs, method)


def _spec(signature: str, name: str, raw: Any) -> TensorSpec:
    where = f"signature {signature!r}, tensor {name!r}"
    if not isinstance(raw, dict) or "dtype" not in raw:
        raise SignatureFileError(f"{where}: needs a 'dtype'")
    dtype = dtype_from_name(str(raw["dtype"]), where)
    shape = raw.get("shape")
    if shape is None:
        return TensorSpec(name, dtype, None)
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= -1 for d in shape):
        raise SignatureFileError(f"{where}: 'shape' must be a list of sizes (-1: any size)")
    return TensorSpec(name, dtype, tuple(shape))


def dtype_from_name(name: str, where: str = "") -> np.dtype:
    """A TF name (`DT_FLOAT`) or a numpy name (`float32`, `string`/`bytes` for strings)."""
    if name.upper().startswith("DT_"):
        try:
            return numpy_dtype(name.upper())
        except InvalidArgument:
            pass
    elif name in ("string", "bytes", "str", "object"):
        return STRING_DTYPE
    else:
        try:
            dtype = np.dtype(name)
        except TypeError:
            dtype = None
        if dtype is not None and dtype.kind in "biuf":
            return dtype
    raise SignatureFileError(f"{where}: unsupported dtype {name!r}")


def signatures_json(signatures: dict[str, Signature]) -> dict[str, Any]:
    """The JSON form of `signatures` (TF dtype names), as `ferry save` records it."""
    return {
        "signatures": {
            name: {
                "inputs": {n: _spec_json(s) for n, s in sig.inputs.items()},
                "outputs": {n: _spec_json(s) for n, s in sig.outputs.items()},
                "method_name": sig.method_name,
            }
            for name, sig in signatures.items()
        }
    }


def _spec_json(spec: TensorSpec) -> dict[str, Any]:
    return {
        "dtype": tf_dtype_name(spec.dtype),
        "shape": list(spec.shape) if spec.shape is not None else None,
    }
