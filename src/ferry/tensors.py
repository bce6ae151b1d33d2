"""Tensor types shared by every protocol and runtime: dtypes, specs and signatures.

A `Signature` is what a model promises: named inputs and outputs with dtypes and
shapes (-1 for a dimension of any size). Protocols decode wire data into numpy
arrays and call `Signature.check_inputs` before a request is queued, so a bad
request fails alone and never joins a batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ferry.edge.signature import shape_mismatch
from ferry.errors import InvalidArgument
from ferry.tensor_limits import REFERENCE_BYTES, TensorBudget, unlimited

# TF DataType names (used on the wire by TF Serving) for each numpy dtype ferry serves.
# Strings are numpy object arrays holding `bytes`.
_TF_NAME_BY_NUMPY: dict[np.dtype, str] = {
    np.dtype(np.float32): "DT_FLOAT",
    np.dtype(np.float64): "DT_DOUBLE",
    np.dtype(np.float16): "DT_HALF",
    np.dtype(np.int8): "DT_INT8",
    np.dtype(np.int16): "DT_INT16",
    np.dtype(np.int32): "DT_INT32",
    np.dtype(np.int64): "DT_INT64",
    np.dtype(np.uint8): "DT_UINT8",
    np.dtype(np.uint16): "DT_UINT16",
    np.dtype(np.uint32): "DT_UINT32",
    np.dtype(np.uint64): "DT_UINT64",
    np.dtype(np.bool_): "DT_BOOL",
    np.dtype(object): "DT_STRING",
}
_NUMPY_BY_TF_NAME = {name: dtype for dtype, name in _TF_NAME_BY_NUMPY.items()}

STRING_DTYPE = np.dtype(object)


def tf_dtype_name(dtype: np.dtype) -> str:
    """TF Serving's name for a numpy dtype (`DT_FLOAT` for float32)."""
    return _TF_NAME_BY_NUMPY.get(np.dtype(dtype), "DT_INVALID")


def numpy_dtype(tf_name: str) -> np.dtype:
    """The numpy dtype for a TF DataType name; raises InvalidArgument for unknown names."""
    try:
        return _NUMPY_BY_TF_NAME[tf_name]
    except KeyError:
        raise InvalidArgument(f"Unsupported data type: {tf_name}") from None


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a signature. `shape` is None when the rank is unknown.

    `tensor_name` is the graph tensor behind the signature key (TF's `x:0`), which TF
    Serving's metadata reports; empty for formats without one (the key is reported).
    It takes no part in equality: two specs that accept the same arrays are equal.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int, ...] | None
    tensor_name: str = field(default="", compare=False)

    @property
    def reported_name(self) -> str:
        """The name metadata reports: the graph tensor's where known, else the key."""
        return self.tensor_name or self.name

    @property
    def has_batch_dimension(self) -> bool:
        """True when dimension 0 may take any size, so requests can be stacked along it."""
        return self.shape is not None and len(self.shape) >= 1 and self.shape[0] == -1

    def check(self, array: np.ndarray) -> None:
        """Raise InvalidArgument naming the problem if `array` does not fit this spec."""
        problem = shape_mismatch(self.name, array.shape, self.shape)
        if problem is not None:
            raise InvalidArgument(problem)


@dataclass(frozen=True)
class Signature:
    """Named inputs and outputs of one model entry point (TF's SignatureDef)."""

    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method_name: str = "tensorflow/serving/predict"
    #: True where the runtime's graph decides which shapes it takes, as TF Serving lets
    #: TensorFlow decide for a session bundle: `check_inputs` then checks names only
    #: (dtypes are the codecs' job), and a shape the graph cannot take fails in the
    #: runtime with TensorFlow's own message. The declared shapes still decide stacking.
    runtime_checks_shapes: bool = False
    batchable: bool = field(init=False)

    def __post_init__(self) -> None:
        # Stacking requests is only safe when every tensor is batch-major.
        batchable = all(s.has_batch_dimension for s in self.inputs.values()) and all(
            s.has_batch_dimension for s in self.outputs.values()
        )
        object.__setattr__(self, "batchable", batchable)

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Raise InvalidArgument unless `inputs` holds exactly this signature's inputs, well
        shaped (shapes: unless `runtime_checks_shapes`).

        Dtypes are assumed converted already (codecs convert to the spec's dtype).
        """
        missing = [name for name in self.inputs if name not in inputs]
        if missing:
            raise InvalidArgument(
                f"Missing input(s) {sorted(missing)}; the model expects {sorted(self.inputs)}"
            )
        unknown = [name for name in inputs if name not in self.inputs]
        if unknown:
            raise InvalidArgument(
                f"Unknown input(s) {sorted(unknown)}; the model expects {sorted(self.inputs)}"
            )
        if self.runtime_checks_shapes:
            return
        for name, spec in self.inputs.items():
            spec.check(inputs[name])


DEFAULT_SIGNATURE = "serving_default"


def convert_array(
    value: object, dtype: np.dtype, name: str, budget: TensorBudget | None = None
) -> np.ndarray:
    """Convert nested lists/scalars from a decoded request into an array of `dtype`,
    charged to `budget` (None: no byte limit) before the conversion allocates.

    Refuses what TF Serving refuses: ragged lists, strings where numbers are expected,
    numbers where strings are expected, fractional values for integer inputs.
    """
    budget = budget if budget is not None else unlimited()
    if dtype == STRING_DTYPE:
        return _convert_strings(value, name, budget)
    try:
        raw = np.asarray(value)
    except ValueError as exc:  # ragged nesting
        raise InvalidArgument(f"Input '{name}' is ragged or malformed: {exc}") from None
    # `raw` holds what the body held (so the body limit bounds it); the conversion to
    # the model's dtype may widen it, so the budget is charged at the target's size.
    budget.admit(name, raw.shape, np.dtype(dtype).itemsize)
    kind = raw.dtype.kind
    if kind == "O":
        raise InvalidArgument(
            f"Input '{name}' is ragged (lists of different lengths) or mixes types"
        )
    if kind in "US" and raw.size:
        raise InvalidArgument(
            f"Input '{name}' holds strings but the model expects {tf_dtype_name(dtype)}"
        )
    target = np.dtype(dtype)
    if kind == "b" and target.kind != "b" and raw.size:
        raise InvalidArgument(
            f"Input '{name}' holds true/false values but the model expects {tf_dtype_name(target)}"
        )
    if (
        target.kind in "iu"
        and kind == "f"
        and raw.size
        and (not np.all(np.isfinite(raw)) or not np.all(raw == np.floor(raw)))
    ):
        raise InvalidArgument(
            f"Input '{name}' holds non-integer numbers but the model expects "
            f"{tf_dtype_name(target)}"
        )
    if target.kind == "b" and kind not in "b" and raw.size:
        raise InvalidArgument(f"Input '{name}' must hold true/false values (DT_BOOL)")
    try:
        return raw.astype(target, copy=False)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(f"Input '{name}' cannot be converted to {target}: {exc}") from None


def _convert_strings(value: object, name: str, budget: TensorBudget) -> np.ndarray:
    """Build an object array of bytes; every leaf must already be str or bytes."""
    try:
        raw = np.array(value, dtype=object)
    except ValueError as exc:
        raise InvalidArgument(f"Input '{name}' is ragged or malformed: {exc}") from None
    budget.admit(name, raw.shape, REFERENCE_BYTES)
    flat = raw.reshape(-1)
    for index, item in enumerate(flat):
        if isinstance(item, str):
            flat[index] = item.encode()
        elif not isinstance(item, bytes):
            raise InvalidArgument(
                f"Input '{name}' must hold strings (DT_STRING); found {type(item).__name__}"
            )
    return raw
