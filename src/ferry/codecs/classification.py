"""Triton's classification extension: an output asked for with `classification: N`
comes back as BYTES strings `"score:index:label"` (`"score:index"` without labels).

Shared by the V2 REST and gRPC transports, which only read the request's parameter
and call `classify`. As in Triton: the top N classes of each batch row (the whole
tensor when the model has no batch dimension), highest score first, the index
counted within the row, the label the index-th line of the output's label file; the
score printed as C++'s `std::to_string` prints it (six decimals for FP32/FP64, plain
integers for integer types); other datatypes (FP16, BOOL, BYTES) are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ferry.errors import InvalidArgument
from ferry.tensors import STRING_DTYPE

# Triton refuses to rank rows larger than this (its "too large" check).
MAX_CLASSIFICATION_ELEMENTS = 1_000_000
_RANKED_KINDS = "iuf"


def class_count(value: object, output: str) -> int | None:
    """The `classification` parameter of a requested output as a count, None when absent;
    InvalidArgument when it is not a positive integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(
            f"Output '{output}': 'classification' must be a positive integer; got {value!r}"
        )
    return value


def classify(
    array: np.ndarray, count: int, labels: Sequence[str] = (), batched: bool = False
) -> np.ndarray:
    """The top `count` classes of `array` as a BYTES array: shape [batch, k] when
    `batched`, else [k], with k = min(count, elements per row)."""
    if (
        array.dtype == STRING_DTYPE
        or array.dtype.kind not in _RANKED_KINDS
        or (array.dtype == np.float16)
    ):
        from ferry.codecs.v2 import v2_datatype  # v2 imports this module

        raise InvalidArgument(
            "class result not available for output due to unsupported type "
            f"'{v2_datatype(array.dtype)}'"
        )
    rows = array.reshape(array.shape[0], -1) if batched and array.ndim > 0 else array.reshape(1, -1)
    if rows.shape[1] > MAX_CLASSIFICATION_ELEMENTS:
        raise InvalidArgument("classification output tensor too large")
    k = min(count, rows.shape[1])
    # Stable and descending: equal scores keep index order. Ranked as float64 (or int64)
    # so an unsigned tensor is not wrapped by the negation.
    is_float = array.dtype.kind == "f"
    keys = rows.astype(np.float64 if is_float else np.int64)
    order = np.argsort(-keys, axis=1, kind="stable")[:, :k]
    out = np.empty((rows.shape[0], k), dtype=object)
    for row, indices in enumerate(order):
        for column, index in enumerate(indices):
            value = rows[row, index]
            score = f"{float(value):.6f}" if is_float else str(int(value))
            text = f"{score}:{index}"
            if index < len(labels):
                text += f":{labels[index]}"
            out[row, column] = text.encode()
    return out if batched and array.ndim > 0 else out.reshape(k)


@dataclass
class ClassificationRequest:
    """The outputs a request wants classified, and, once a version was chosen, that
    version's labels and whether its dimension 0 is the batch (`bind`)."""

    counts: dict[str, int]
    labels: Mapping[str, Sequence[str]] = field(default_factory=dict)
    batched: bool = False

    def bind(self, labels: Mapping[str, Sequence[str]], batched: bool) -> None:
        self.labels, self.batched = labels, batched

    def apply(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`outputs` with each classified output replaced by its class strings."""
        result = dict(outputs)
        for name, count in self.counts.items():
            if name in result:
                result[name] = classify(
                    result[name], count, self.labels.get(name, ()), self.batched
                )
        return result
