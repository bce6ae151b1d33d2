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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from ferry.codecs.float_rows import FloatRows, parse_float_rows
from ferry.errors import InvalidArgument
from ferry.tensors import DEFAULT_SIGNATURE, STRING_DTYPE, Signature, convert_array

ROW = "row"
COLUMNAR = "columnar"


@dataclass(frozen=True)
class DecodedPredict:
    """A decoded `:predict` body: which signature, its input arrays, and the request format."""

    signature_name: str
    inputs: dict[str, np.ndarray]
    format: str


def parse_json(body: bytes) -> Any:
    """Parse a request body. Falls back to the standard library for the NaN/Infinity
    tokens that TF Serving accepts and strict JSON parsers refuse."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as fast_error:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise InvalidArgument(
                f"JSON Parse error: {fast_error.msg} at offset: {fast_error.pos}"
            ) from None


def signature_name_of(body: Any) -> str:
    """The requested signature name (`serving_default` when absent)."""
    if not isinstance(body, dict):
        raise InvalidArgument("JSON Value: the request body must be a JSON object")
    name = body.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(name, str):
        raise InvalidArgument("'signature_name' key must be a string value.")
    return name


def decode_predict_body(body: Any, signatures: Mapping[str, Signature]) -> DecodedPredict:
    """Turn a parsed `:predict` body into checked input arrays for one signature."""
    name = signature_name_of(body)
    signature = signatures.get(name)
    if signature is None:
        raise InvalidArgument(f'Serving signature name: "{name}" not found in signature def')
    has_instances = "instances" in body
    has_inputs = "inputs" in body
    if has_instances and has_inputs:
        raise InvalidArgument(
            "Expecting only one of 'inputs' or 'instances' keys to exist in the request"
        )
    if has_instances:
        inputs = _decode_rows(body["instances"], signature)
        request_format = ROW
    elif has_inputs:
        inputs = _decode_columns(body["inputs"], signature)
        request_format = COLUMNAR
    else:
        raise InvalidArgument("Missing 'inputs' or 'instances' key")
    signature.check_inputs(inputs)
    return DecodedPredict(name, inputs, request_format)


class PredictBody:
    """A `:predict` body, parsed before the model is known (so malformed JSON is
    reported first, as before) and decoded against the serving version's signatures
    after. Plain numeric rows take the simdjson path (`float_rows`); everything else,
    and rows the signature cannot take that way, the general orjson path."""

    __slots__ = ("_parsed", "_raw", "_rows")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._rows = parse_float_rows(raw)
        self._parsed: Any = None if self._rows is not None else parse_json(raw)

    def decode(self, signatures: Mapping[str, Signature]) -> DecodedPredict:
        if self._rows is not None:
            decoded = decode_float_rows(self._rows, signatures)
            if decoded is not None:
                return decoded
            self._parsed = parse_json(self._raw)
        return decode_predict_body(self._parsed, signatures)


def decode_float_rows(
    rows: FloatRows, signatures: Mapping[str, Signature]
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
    inputs = {input_name: rows.rows.astype(spec.dtype, copy=False)}
    signature.check_inputs(inputs)
    return DecodedPredict(name, inputs, ROW)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _decode_rows(instances: Any, signature: Signature) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise InvalidArgument("'instances' must be a non-empty JSON array")
    input_names = list(signature.inputs)
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not named:
        if len(input_names) != 1:
            raise InvalidArgument(
                f"The model has {len(input_names)} inputs {sorted(input_names)}: each instance "
                "must be a JSON object keyed by input name"
            )
        name = input_names[0]
        return {name: _to_array(instances, signature, name)}
    expected = set(input_names)
    columns: dict[str, list[Any]] = {name: [] for name in input_names}
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict) or _is_b64(instance):
            raise InvalidArgument(
                f"Instance {index} is not a JSON object, but instance 0 is: all instances "
                "must have the same form"
            )
        if instance.keys() != expected:
            missing = sorted(expected - instance.keys())
            extra = sorted(instance.keys() - expected)
            raise InvalidArgument(
                f"Instance {index} does not match the model's inputs "
                f"(missing {missing}, unknown {extra}; expected {sorted(expected)})"
            )
        for name in input_names:
            columns[name].append(instance[name])
    return {name: _to_array(values, signature, name) for name, values in columns.items()}


def _decode_columns(inputs: Any, signature: Signature) -> dict[str, np.ndarray]:
    input_names = list(signature.inputs)
    if isinstance(inputs, dict) and not _is_b64(inputs):
        for name in input_names:
            if name not in inputs:
                raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        unknown = sorted(set(inputs) - set(input_names))
        if unknown:
            raise InvalidArgument(
                f"Unknown input(s) {unknown} in 'inputs' object; the model expects "
                f"{sorted(input_names)}"
            )
        return {name: _to_array(inputs[name], signature, name) for name in input_names}
    if len(input_names) != 1:
        raise InvalidArgument(
            f"The model has {len(input_names)} inputs {sorted(input_names)}: 'inputs' must be "
            "a JSON object keyed by input name"
        )
    name = input_names[0]
    return {name: _to_array(inputs, signature, name)}


def _to_array(value: Any, signature: Signature, name: str) -> np.ndarray:
    dtype = signature.inputs[name].dtype
    if dtype == STRING_DTYPE:
        value = _decode_b64_leaves(value, name)
    return convert_array(value, dtype, name)


def _decode_b64_leaves(value: Any, name: str) -> Any:
    if isinstance(value, list):
        return [_decode_b64_leaves(item, name) for item in value]
    if _is_b64(value):
        encoded = value["b64"]
        if not isinstance(encoded, str):
            raise InvalidArgument(f"Input '{name}': a 'b64' value must be a string")
        try:
            return base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise InvalidArgument(f"Input '{name}': invalid base64 data: {exc}") from None
    return value


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


def dumps(body: Any, may_be_non_finite: bool = True) -> bytes:
    """Serialise a response. Non-finite floats are written as NaN/Infinity tokens, as TF
    Serving does (orjson would write null), through the slower standard library.

    Callers that checked their arrays pass `may_be_non_finite=False` to skip the scan.
    """
    try:
        encoded = orjson.dumps(body, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return json.dumps(_plain(body)).encode()
    if may_be_non_finite and b"null" in encoded and _has_non_finite(body):
        return json.dumps(_plain(body)).encode()
    return encoded


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
