"""TF Serving's JSON tensor format: request bodies to numpy arrays and back.

Row format (`instances`) and columnar format (`inputs`) requests; `predictions` and
`outputs` responses; `{"b64": ...}` for bytes. Dtypes come from the signature, not
from the JSON, as in TF Serving. Used by the REST protocol and by warm-up replay.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from ferry import tfserving_messages as messages
from ferry.codecs.float_rows import FloatRows, parse_float_rows
from ferry.codecs.json_parser import parse_json
from ferry.errors import InvalidArgument
from ferry.tensor_limits import MAX_RANK, TensorBudget, unlimited
from ferry.tensors import DEFAULT_SIGNATURE, STRING_DTYPE, Signature, convert_array

ROW = "row"
COLUMNAR = "columnar"


@dataclass(frozen=True)
class DecodedPredict:
    """A decoded `:predict` body: which signature, its input arrays, and the request format."""

    signature_name: str
    inputs: dict[str, np.ndarray]
    format: str


def signature_name_of(body: Any) -> str:
    """The requested signature name (`serving_default` when absent)."""
    if not isinstance(body, dict):
        raise messages.document_error(messages.JSON_NOT_OBJECT, body)
    name = body.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(name, str):
        raise messages.document_error(messages.SIGNATURE_NAME_NOT_STRING, body)
    return name


def decode_predict_body(
    body: Any, signatures: Mapping[str, Signature], budget: TensorBudget | None = None
) -> DecodedPredict:
    """Turn a parsed `:predict` body into checked input arrays for one signature, each
    charged to `budget` (the request's `--max_tensor_bytes`; None: no byte limit, for
    trusted bodies) before it is converted. Errors are TF Serving's, checked in its order."""
    budget = budget if budget is not None else unlimited()
    name = signature_name_of(body)
    signature = signatures.get(name)
    if signature is None:
        raise InvalidArgument(f'Serving signature name: "{name}" not found in signature def')
    has_instances = "instances" in body
    has_inputs = "inputs" in body
    if has_instances and has_inputs:
        raise messages.document_error(messages.BOTH_INPUTS_AND_INSTANCES, body)
    if has_instances:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise messages.document_error(messages.INSTANCES_NOT_A_LIST, body)
        if not instances:
            raise messages.document_error(messages.INSTANCES_EMPTY, body)
        inputs = _decode_rows(instances, signature, budget)
        request_format = ROW
    elif has_inputs:
        inputs = _decode_columns(body["inputs"], signature, budget)
        request_format = COLUMNAR
    else:
        raise InvalidArgument(messages.MISSING_INPUTS_OR_INSTANCES)
    signature.check_inputs(inputs)
    return DecodedPredict(name, inputs, request_format)


class PredictBody:
    """A `:predict` body, parsed before the model is known (so malformed JSON is
    reported first, as before) and decoded against the serving version's signatures
    after. Plain numeric rows take the simdjson path (`float_rows`); everything else,
    and rows the signature cannot take that way, the general path (`read`)."""

    __slots__ = ("_parsed", "_raw", "_read", "_rows")

    def __init__(
        self,
        raw: bytes,
        rows: FloatRows | None = None,
        read: Callable[[bytes], Any] = parse_json,
        may_be_rows: bool = True,
    ) -> None:
        """`rows`: the body's rows when the Rust front decoded them already. `read`: the
        general path's parser (SageMaker's payload rules read more than TF Serving's JSON);
        `may_be_rows` False keeps a body off the rows path (a CSV payload)."""
        self._raw = raw
        self._read = read
        self._rows: FloatRows | None = None
        if may_be_rows:
            self._rows = rows if rows is not None else parse_float_rows(raw)
        self._parsed: Any = None if self._rows is not None else read(raw)

    def decode(self, signatures: Mapping[str, Signature], budget: TensorBudget) -> DecodedPredict:
        if self._rows is not None:
            decoded = decode_float_rows(self._rows, signatures, budget)
            if decoded is not None:
                return decoded
            self._parsed = self._read(self._raw)
        return decode_predict_body(self._parsed, signatures, budget)


def decode_float_rows(
    rows: FloatRows, signatures: Mapping[str, Signature], budget: TensorBudget | None = None
) -> DecodedPredict | None:
    """`decode_predict_body` for a body `parse_float_rows` took: the same arrays and
    errors, or None when the signature needs the general path (several inputs, or an
    input that is not floating point: integers must be checked for fractions)."""
    name = DEFAULT_SIGNATURE if rows.signature_name is None else rows.signature_name
    signature = signatures.get(name)
    if signature is None or len(signature.inputs) != 1:
        return None
    ((input_name, spec),) = signature.inputs.items()
    if spec.dtype.kind != "f":  # strings (object dtype), integers, bools
        return None
    (budget if budget is not None else unlimited()).admit(
        input_name, rows.rows.shape, spec.dtype.itemsize
    )
    inputs = {input_name: rows.rows.astype(spec.dtype, copy=False)}
    signature.check_inputs(inputs)
    return DecodedPredict(name, inputs, ROW)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _decode_rows(
    instances: list[Any], signature: Signature, budget: TensorBudget
) -> dict[str, np.ndarray]:
    input_names = list(signature.inputs)
    if not isinstance(instances[0], dict) and len(input_names) > 1:
        raise InvalidArgument(
            f"{messages.PLAIN_INSTANCES_FOR_SEVERAL_INPUTS} (the model's inputs: "
            f"{', '.join(sorted(input_names))})"
        )
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not named:
        for index, instance in enumerate(instances):
            if isinstance(instance, dict) and not _is_b64(instance):
                raise InvalidArgument(messages.VALUE_EXPECTED_AT_ITEM.format(index=index))
        name = input_names[0]
        return {name: _to_array(instances, signature, name, budget, rows=True)}
    expected = set(input_names)
    columns: dict[str, list[Any]] = {name: [] for name in input_names}
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict) or _is_b64(instance):
            raise InvalidArgument(messages.OBJECT_EXPECTED_AT_ITEM.format(index=index))
        unknown = [key for key in instance if key not in expected]
        if unknown:
            error = messages.NOT_A_NAMED_INPUT.format(name=unknown[0])
            raise messages.instance_failed(index, error, key=unknown[0])
        if instance.keys() != expected:
            missing = sorted(expected - instance.keys())
            raise InvalidArgument(
                f"{messages.instance_keys_differ(index, instance, input_names)} "
                f"(missing: {', '.join(missing)})"
            )
        for name in input_names:
            columns[name].append(instance[name])
    return {
        name: _to_array(values, signature, name, budget, rows=True, key=name)
        for name, values in columns.items()
    }


def _decode_columns(
    inputs: Any, signature: Signature, budget: TensorBudget
) -> dict[str, np.ndarray]:
    input_names = list(signature.inputs)
    if isinstance(inputs, dict) and not _is_b64(inputs):
        for name in input_names:
            if name not in inputs:
                raise InvalidArgument(messages.MISSING_NAMED_INPUT.format(name=name))
        unknown = sorted(set(inputs) - set(input_names))
        if unknown:
            raise InvalidArgument(
                f"Unknown input(s) {unknown} in 'inputs' object; the model expects "
                f"{sorted(input_names)}"
            )
        return {name: _to_array(inputs[name], signature, name, budget) for name in input_names}
    if len(input_names) != 1:
        raise InvalidArgument(
            f"{messages.PLAIN_INPUTS_FOR_SEVERAL_INPUTS} (the model's inputs: "
            f"{', '.join(sorted(input_names))})"
        )
    name = input_names[0]
    return {name: _to_array(inputs, signature, name, budget)}


class _LeafError(Exception):
    """A JSON leaf the input cannot hold: TF Serving's text, and which instance it is in
    (the leaf's index in the outermost list; None for a bare value)."""

    def __init__(self, text: str, index: int | None) -> None:
        super().__init__(text)
        self.text = text
        self.index = index


def _to_array(
    value: Any,
    signature: Signature,
    name: str,
    budget: TensorBudget,
    rows: bool = False,
    key: str | None = None,
) -> np.ndarray:
    """One input's JSON value as an array of the signature's dtype. A leaf of the wrong
    type gets TF Serving's error, wrapped as TF Serving wraps it for the row format
    (`rows`; `key` is the input's name when instances are objects)."""
    dtype = signature.inputs[name].dtype
    try:
        if dtype == STRING_DTYPE:
            value = _decode_b64_leaves(value, name, 0, None)
        try:
            return convert_array(value, dtype, name, budget)
        except InvalidArgument as exc:
            mistyped = _first_mistyped_leaf(value, dtype)
            if mistyped is None:
                raise
            index, leaf = mistyped
            raise _LeafError(
                f"{messages.value_not_of_type(leaf, dtype)} ({exc.message})", index
            ) from None
    except _LeafError as leaf_error:
        if rows and leaf_error.index is not None:
            raise messages.instance_failed(leaf_error.index, leaf_error.text, key) from None
        raise InvalidArgument(leaf_error.text) from None


def _holds(leaf: Any, dtype: np.dtype) -> bool:
    """Whether ferry takes this JSON leaf for `dtype` (integral floats count as integers,
    which TF Serving refuses: ferry is the more lenient there)."""
    if dtype == STRING_DTYPE:
        return isinstance(leaf, str | bytes)
    if dtype.kind == "b":
        return isinstance(leaf, bool)
    if isinstance(leaf, bool) or not isinstance(leaf, int | float):
        return False
    return dtype.kind == "f" or isinstance(leaf, int) or float(leaf).is_integer()


def _first_mistyped_leaf(value: Any, dtype: np.dtype) -> tuple[int | None, Any] | None:
    """The first leaf (depth first, at most MAX_RANK deep) that `dtype` cannot hold, with
    its index in the outermost list; None when every leaf fits (the error was another)."""
    stack: list[tuple[Any, int, int | None]] = [(value, 0, None)]
    while stack:
        item, depth, index = stack.pop()
        if isinstance(item, list):
            if depth >= MAX_RANK:
                return None
            stack.extend(
                (child, depth + 1, position if depth == 0 else index)
                for position, child in reversed(list(enumerate(item)))
            )
        elif not _holds(item, dtype):
            return index, item
    return None


def _decode_b64_leaves(value: Any, name: str, depth: int, index: int | None) -> Any:
    if isinstance(value, list):
        # Bounded, so a deeply nested body is refused here rather than by Python's
        # recursion limit (a RecursionError would be a 500).
        if depth >= MAX_RANK:
            raise InvalidArgument(
                f"Input '{name}' is nested deeper than {MAX_RANK} levels, the largest rank "
                "a tensor may have"
            )
        return [
            _decode_b64_leaves(item, name, depth + 1, position if depth == 0 else index)
            for position, item in enumerate(value)
        ]
    if isinstance(value, dict):
        encoded = value.get("b64")
        if len(value) != 1 or not isinstance(encoded, str):
            text = messages.BASE64_NOT_FORMATTED.format(value=messages.json_value_text(value))
            raise _LeafError(text, index)
        try:
            return base64.b64decode(_padded(encoded), validate=True)
        except binascii.Error as exc:
            raise _LeafError(
                f"{messages.BASE64_UNDECODABLE} (input '{name}': {exc})", index
            ) from None
    return value


def _padded(encoded: str) -> str:
    """Base64 text with its '=' padding restored: TF Serving (absl::Base64Unescape)
    takes it with or without."""
    return encoded + "=" * (-len(encoded) % 4)


# -- responses ---------------------------------------------------------------------------


def encode_predict_response(outputs: Mapping[str, np.ndarray], request_format: str) -> bytes:
    """`{"predictions": ...}` for row requests, `{"outputs": ...}` for columnar ones."""
    if request_format == ROW:
        body = {"predictions": _row_predictions(outputs)}
    else:
        body = {"outputs": _columnar_outputs(outputs)}
    finite = all(a.dtype.kind != "f" or np.isfinite(a).all() for a in outputs.values())
    return dumps(body, may_be_non_finite=not finite)


def _row_predictions(outputs: Mapping[str, np.ndarray]) -> Any:
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        return _jsonable(name, array)
    sizes = {array.shape[0] if array.ndim else None for array in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise InvalidArgument(
            "Output tensors have inconsistent batch size; use the columnar 'inputs' format"
        )
    columns = {name: _jsonable(name, array) for name, array in outputs.items()}
    (rows,) = sizes
    return [{name: column[i] for name, column in columns.items()} for i in range(rows)]


def _columnar_outputs(outputs: Mapping[str, np.ndarray]) -> Any:
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        return _jsonable(name, array)
    return {name: _jsonable(name, array) for name, array in outputs.items()}


def _jsonable(name: str, array: np.ndarray) -> Any:
    """Numeric arrays stay numpy (orjson writes them natively); strings become lists.

    TF Serving writes string outputs whose name ends in `_bytes` as `{"b64": ...}`.
    """
    if array.dtype == STRING_DTYPE or array.dtype.kind in "SU":
        as_b64 = name.endswith("_bytes")
        return _strings_to_list(array.tolist(), as_b64)
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return array


def _strings_to_list(value: Any, as_b64: bool) -> Any:
    if isinstance(value, list):
        return [_strings_to_list(item, as_b64) for item in value]
    if isinstance(value, str):
        value = value.encode()
    if as_b64:
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value.decode("utf-8", errors="replace")


_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


# TF Serving's tokens for NaN, +inf and -inf (RapidJSON's writer with kWriteNanAndInfFlag).
_TOKENS = (b"NaN", b"Infinity", b"-Infinity")
_TOKEN_ARRAY = np.array(_TOKENS, dtype=object)


def dumps(body: Any, may_be_non_finite: bool = True) -> bytes:
    """Serialise a response. Non-finite floats are written as NaN/Infinity tokens, as TF
    Serving does (orjson would write null): each float array holding any is written by
    orjson on its own, its nulls (its only nulls: a numeric array holds no strings)
    replaced by the tokens in order, and spliced in as an `orjson.Fragment`. The
    standard library, used before, took 1.3 s of the event loop for 2.3 M floats.

    Callers that checked their arrays pass `may_be_non_finite=False` to skip the scan.
    """
    try:
        encoded = orjson.dumps(body, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:  # what orjson cannot write (0-d arrays): rare and small
        return json.dumps(_plain(body)).encode()
    if may_be_non_finite and b"null" in encoded and _has_non_finite(body):
        return orjson.dumps(_with_tokens(body), option=_ORJSON_OPTIONS)
    return encoded


def _with_tokens(value: Any) -> Any:
    """`value` with every non-finite float (alone or in an array) as a Fragment of tokens."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not bool(np.isfinite(value).all()):
            return orjson.Fragment(_array_with_tokens(value))
        return value
    if isinstance(value, dict):
        return {k: _with_tokens(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_tokens(v) for v in value]
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return orjson.Fragment(_TOKENS[int(_token_index(np.array([value]))[0])])
    return value


def _array_with_tokens(array: np.ndarray) -> bytes:
    encoded = orjson.dumps(array, option=_ORJSON_OPTIONS)
    flat = array.reshape(-1)
    kinds = _token_index(flat[~np.isfinite(flat)])
    if (kinds == kinds[0]).all():  # the common case, all NaN (or all one infinity)
        return encoded.replace(b"null", _TOKENS[int(kinds[0])])
    pieces = encoded.split(b"null")
    tokens = _TOKEN_ARRAY[kinds].tolist()
    if len(tokens) + 1 != len(pieces):  # cannot happen: numbers and nulls only
        return json.dumps(array.tolist()).encode()
    # Interleaved by slice assignment, in C: a Python loop took seconds for 2 M NaNs.
    out: list[bytes] = [b""] * (len(pieces) + len(tokens))
    out[0::2] = pieces
    out[1::2] = tokens
    return b"".join(out)


def _token_index(non_finite: np.ndarray) -> np.ndarray:
    """0 for NaN, 1 for +inf, 2 for -inf: indexes into _TOKENS, in array order."""
    return np.where(np.isnan(non_finite), 0, np.where(non_finite > 0, 1, 2))


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind == "f" and not bool(np.isfinite(value).all())
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    # Row predictions hold numpy scalars (np.float32 is no `float`) when outputs are 1-D.
    return isinstance(value, float | np.floating) and not math.isfinite(value)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
