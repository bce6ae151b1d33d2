"""TF Serving's error messages, in one table, worded and coded as TF Serving words them.

TF Serving's clients, its tests (`http_rest_api_handler_test.cc`, `json_tensor_test.cc`,
`tensorflow_model_server_test.py`) and scripts written against it match these texts, so
ferry answers with TF Serving's text first. Where ferry knows more (which instance,
which input), the detail follows TF Serving's text, so a substring match on TF
Serving's wording still succeeds. Sources: util/json_tensor.cc, predict_util.cc,
http_rest_api_handler.cc and http_rest_api_util.cc in TF Serving, and
tensorflow/cc/saved_model/util.cc (GetInputValues) in TensorFlow.

Each function returns the error to raise; the protocol modules turn it into their wire
form (HTTP status + `{"error": ...}`, gRPC status) as for every other FerryError.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import rapidjson

from ferry.errors import FailedPrecondition, InternalError, InvalidArgument

# -- the texts ---------------------------------------------------------------------------

SIGNATURE_KEY_NOT_FOUND = 'Serving signature key "{name}" not found.'
INPUT_SIZE_MISMATCH = (
    "input size does not match signature: {sent}!={expected} len({{{sent_names}}}) != "
    "len({{{expected_names}}}). Sent extra: {{{extra}}}. Missing but required: {{{missing}}}."
)
INPUT_ALIAS_NOT_FOUND = (
    "Signature input alias: {alias}(feed name: {feed_name}) not found in request and no "
    "default value provided. Inputs expected to be in the request {{{sent_names}}}, or "
    "default input alias set: "  # the signature's defaults: ferry's signatures have none
)
JSON_DOCUMENT_EMPTY = "JSON Parse error: The document is empty"
JSON_NOT_OBJECT = "JSON Value: {document} Is not object"
SIGNATURE_NAME_NOT_STRING = (
    "JSON Value: {document} not formatted correctly. 'signature_name' key must be a string value."
)
BOTH_INPUTS_AND_INSTANCES = (
    "JSON Value: {document} Not formatted correctly expecting only one of 'inputs' or "
    "'instances' keys to exist "
)
INSTANCES_NOT_A_LIST = "JSON Value: {document} Expecting 'instances' to be an list/array"
INSTANCES_EMPTY = "JSON Value: {document} No values in 'instances' array"
MISSING_INPUTS_OR_INSTANCES = "Missing 'inputs' or 'instances' key"
EXAMPLES_MISSING = (
    "JSON Value: {document} When method is classify, key 'examples' is expected and was not found"
)
EXAMPLES_NOT_A_LIST = "JSON Value: {document} Expecting 'examples' value to be an list/array"
EXAMPLES_EMPTY = "JSON Value: {document} 'examples' value is an empty array"
EXAMPLE_NOT_OBJECT = "Example must be JSON object but got JSON {json_type}"
VALUE_NOT_OF_TYPE = "JSON Value: {value} Type: {json_type} is not of expected type: {dtype}"
BASE64_NOT_FORMATTED = "JSON Value: {value} not formatted correctly for base64 data"
BASE64_UNDECODABLE = "Unable to base64 decode"
INSTANCE_FAILED = "Failed to process element: {index} of 'instances' list. Error: {error}"
INSTANCE_KEY_FAILED = (
    "Failed to process element: {index} key: {key} of 'instances' list. Error: {error}"
)
INSTANCE_KEYS_DIFFER = (
    "Failed to process element: {index} of 'instances' list. JSON object: {value} keys "
    "must be equal to: {names}"
)
NOT_A_NAMED_INPUT = "JSON object: does not have named input: {name}"
PLAIN_INSTANCES_FOR_SEVERAL_INPUTS = (
    "instances is a plain list, but expecting list of objects as multiple input tensors "
    "required as per tensorinfo_map"
)
PLAIN_INPUTS_FOR_SEVERAL_INPUTS = (
    "inputs is a plain value/list, but expecting an object as multiple input tensors "
    "required as per tensorinfo_map"
)
OBJECT_EXPECTED_AT_ITEM = "Expecting object but got list at item {index} of input list"
VALUE_EXPECTED_AT_ITEM = "Expecting value/list but got object at item {index} of input list"
MISSING_NAMED_INPUT = "Missing named input: {name} in 'inputs' object."
VERSION_NOT_NUMERIC = "Failed to convert version: {version} to numeric."
CONFIG_NOT_PARSED = "Error parsing text-format tensorflow.serving.ModelServerConfig: {detail}"
# server_core.cc, UpdateModelVersionLabelMap: a label moved to a version not AVAILABLE.
LABEL_VERSION_UNAVAILABLE = (
    "Request to assign label to version {version} of model {model}, which is not currently "
    "available for inference"
)

# TF Serving's `status.ToString()` prefix where it wraps one error in another.
_WRAPPED = "INVALID_ARGUMENT: "
# TF Serving prints at most this much of a JSON value in a message (kMaxJsonDebugStringBytes).
_MAX_VALUE_TEXT = 256
# The largest model version TF Serving's REST paths take (an int64).
MAX_VERSION = 2**63 - 1

# TensorFlow's DataTypeString: the dtype names in TF Serving's type errors.
_TYPE_NAMES: dict[np.dtype, str] = {
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.float16): "half",
    np.dtype(np.int8): "int8",
    np.dtype(np.int16): "int16",
    np.dtype(np.int32): "int32",
    np.dtype(np.int64): "int64",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.uint16): "uint16",
    np.dtype(np.uint32): "uint32",
    np.dtype(np.uint64): "uint64",
    np.dtype(np.bool_): "bool",
    np.dtype(object): "string",
}


# -- rendering values as TF Serving does -------------------------------------------------


def json_value_text(value: Any) -> str:
    """A JSON value as TF Serving prints it in a message: RapidJSON's pretty writer with
    single-line arrays, cut at 256 characters (TF Serving cuts at the first token past
    256 bytes, a few characters later). Only the value's head is written, so a message
    about a 64 MB body costs what one about a small body does."""
    try:
        text = rapidjson.dumps(
            _head(value, [_MAX_VALUE_TEXT], 0),
            indent=4,
            write_mode=rapidjson.WM_SINGLE_LINE_ARRAY,
            number_mode=rapidjson.NM_NAN,
        )
    except (TypeError, ValueError):  # bytes that are not UTF-8, from a decoded b64 leaf
        text = repr(value)
    return text[:_MAX_VALUE_TEXT]


def _head(value: Any, room: list[int], depth: int) -> Any:
    """A copy of `value` keeping its first `room[0]` items, depth first. Every item is
    written as at least one character, so the copy's text starts as the value's does for
    at least `room[0]` characters."""
    room[0] -= 1
    if isinstance(value, str | bytes):
        return value[:_MAX_VALUE_TEXT]
    if not isinstance(value, list | dict):
        return value
    if depth >= _MAX_VALUE_TEXT:  # each level wrote a bracket: the cut comes before this
        return None
    if isinstance(value, list):
        items = []
        for item in value:
            if room[0] <= 0:
                break
            items.append(_head(item, room, depth + 1))
        return items
    members = {}
    for key, item in value.items():
        if room[0] <= 0:
            break
        members[key[:_MAX_VALUE_TEXT]] = _head(item, room, depth + 1)
    return members


def json_type_name(value: Any) -> str:
    """RapidJSON's name for a JSON value's type, as in TF Serving's type errors."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def type_name(dtype: np.dtype) -> str:
    """TensorFlow's DataTypeString of a numpy dtype (`float` for float32)."""
    return _TYPE_NAMES.get(np.dtype(dtype), str(dtype))


def _joined(names: Iterable[str]) -> str:
    return ",".join(sorted(names))


# -- the errors --------------------------------------------------------------------------


# `--enable_signature_method_name_check`: a signature must declare the method it serves
# (predict_util.cc, classifier.cc, regressor.cc). Predict accepts any of the three.
PREDICT_METHOD_NAMES = (
    "tensorflow/serving/predict",
    "tensorflow/serving/classify",
    "tensorflow/serving/regress",
)


def predict_method_name_mismatch(method_name: str) -> InternalError:
    """Predict on a signature whose method name is none of TF Serving's three (INTERNAL)."""
    return InternalError(
        "Expected prediction signature method_name to be one of "
        f"{{{', '.join(PREDICT_METHOD_NAMES)}}}. Was: {method_name}"
    )


def method_name_mismatch(task: str, expected: str, method_name: str) -> InvalidArgument:
    """Classify ("classification") or Regress ("regression") on a signature declaring
    another method."""
    return InvalidArgument(
        f"Expected {task} signature method_name to be {expected}. Was: {method_name}"
    )


def signature_key_not_found(name: str) -> FailedPrecondition:
    """gRPC Predict for a signature the model lacks (REST words it differently)."""
    return FailedPrecondition(SIGNATURE_KEY_NOT_FOUND.format(name=name))


def input_names_mismatch(sent: Iterable[str], expected: dict[str, str]) -> InvalidArgument | None:
    """gRPC Predict inputs against the signature's (alias -> graph tensor name): TF
    Serving's count check first, then TensorFlow's per-alias check. None when they match."""
    sent_names = set(sent)
    if sent_names == set(expected):
        return None
    if len(sent_names) != len(expected):
        return InvalidArgument(
            INPUT_SIZE_MISMATCH.format(
                sent=len(sent_names),
                expected=len(expected),
                sent_names=_joined(sent_names),
                expected_names=_joined(expected),
                extra=_joined(sent_names - set(expected)),
                missing=_joined(set(expected) - sent_names),
            )
        )
    alias = min(set(expected) - sent_names)
    return InvalidArgument(
        INPUT_ALIAS_NOT_FOUND.format(
            alias=alias, feed_name=expected[alias], sent_names=_joined(sent_names)
        )
    )


def document_error(template: str, document: Any) -> InvalidArgument:
    """One of the `JSON Value: {document} ...` errors about a whole request body."""
    return InvalidArgument(template.format(document=json_value_text(document)))


def value_not_of_type(value: Any, dtype: np.dtype) -> str:
    """The text of TF Serving's error for a JSON leaf the input's dtype cannot hold."""
    return VALUE_NOT_OF_TYPE.format(
        value=json_value_text(value), json_type=json_type_name(value), dtype=type_name(dtype)
    )


def instance_failed(index: int, error: str, key: str | None = None) -> InvalidArgument:
    """An error inside element `index` of `instances` (of its input `key`, for objects),
    wrapped as TF Serving wraps it."""
    if key is None:
        return InvalidArgument(INSTANCE_FAILED.format(index=index, error=_WRAPPED + error))
    return InvalidArgument(INSTANCE_KEY_FAILED.format(index=index, key=key, error=_WRAPPED + error))


def instance_keys_differ(index: int, instance: Any, input_names: Iterable[str]) -> str:
    return INSTANCE_KEYS_DIFFER.format(
        index=index, value=json_value_text(instance), names=_joined(input_names)
    )


def version_not_numeric(version: str) -> InvalidArgument:
    return InvalidArgument(VERSION_NOT_NUMERIC.format(version=version))


def rest_version(text: str | None) -> int | None:
    """A REST path's version number (None when absent); InvalidArgument in TF Serving's
    words beyond int64, where TF Serving's parse fails."""
    if text is None:
        return None
    version = int(text)
    if version > MAX_VERSION:
        raise version_not_numeric(text)
    return version
