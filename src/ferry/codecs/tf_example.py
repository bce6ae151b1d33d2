"""TF Serving's Classify and Regress wire forms: tf.Example inputs in, results out.

A classify or regress signature takes one string tensor of serialized `tf.Example`
protos (see example_tasks.py for which signatures qualify). So these requests need no
runtime support of their own: this module turns the REST JSON examples or the gRPC
`Input` message into that tensor, the request takes the same path as a Predict (checks,
batch queue, deadline, metrics), and the outputs become TF Serving's REST results.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import numpy as np

from ferry import tfserving_messages as messages
from ferry.codecs.example_tasks import CLASSIFY, INPUTS, classify_results, regress_results
from ferry.errors import InvalidArgument
from ferry.protos import message_class
from ferry.tensor_limits import REFERENCE_BYTES, TensorBudget

# TF Serving's answer to a request without examples (util.cc).
EMPTY_INPUT = "Input is empty."


def serialized_examples(
    examples: list[bytes], name: str = INPUTS, budget: TensorBudget | None = None
) -> np.ndarray:
    """The 1-D string tensor a classify/regress signature reads (input `name`), charged
    to `budget` like any input tensor. The examples themselves were serialized from the
    request, so its size limit bounds them. No examples: TF Serving's INVALID_ARGUMENT."""
    if not examples:
        raise InvalidArgument(EMPTY_INPUT)
    if budget is not None:
        budget.admit(name, (len(examples),), REFERENCE_BYTES)
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    return array


# -- REST -------------------------------------------------------------------------------


def examples_from_json(body: Any, budget: TensorBudget | None = None) -> list[bytes]:
    """`{"context": {...}, "examples": [{...}, ...]}` as serialized tf.Example protos.

    Feature values are numbers, strings, `{"b64": ...}` or lists of those; integers
    become int64 lists, any fractional number makes a float list, strings bytes lists.
    Context features are added to every example (they must not repeat in an example),
    so the result is charged to `budget` before the context is copied into each.
    """
    if not isinstance(body, dict):
        raise messages.document_error(messages.JSON_NOT_OBJECT, body)
    if "examples" not in body:
        raise messages.document_error(messages.EXAMPLES_MISSING, body)
    examples = body["examples"]
    if not isinstance(examples, list):
        raise messages.document_error(messages.EXAMPLES_NOT_A_LIST, body)
    if not examples:
        raise messages.document_error(messages.EXAMPLES_EMPTY, body)
    context = body.get("context")
    if context is not None and not isinstance(context, dict):
        raise InvalidArgument("'context' must be a JSON object")
    context_bytes = _example(context, "context").SerializeToString() if context else b""
    serialized = []
    for index, features in enumerate(examples):
        if not isinstance(features, dict):
            raise InvalidArgument(
                messages.EXAMPLE_NOT_OBJECT.format(json_type=messages.json_type_name(features))
                + f" (examples[{index}])"
            )
        repeated = sorted(set(features) & set(context or {}))
        if repeated:
            raise InvalidArgument(
                f"examples[{index}] repeats context feature(s) {repeated}; a feature "
                "belongs to the context or to the examples, not both"
            )
        serialized.append(_example(features, f"examples[{index}]").SerializeToString())
    return _merged(context_bytes, serialized, budget)


def _merged(context: bytes, examples: list[bytes], budget: TensorBudget | None) -> list[bytes]:
    """Each serialized example with the context in front (serialized protos concatenate
    as a merge: context + example has both features). A small request can repeat a large
    context many times, so the total is charged before any copy is made."""
    if not context:
        return examples
    if budget is not None:
        total = len(context) * len(examples) + sum(len(e) for e in examples)
        budget.charge(
            f"{len(examples)} tf.Examples with the {len(context)}-byte context merged into each",
            total,
        )
    return [context + example for example in examples]


def _example(features: Mapping[str, Any], where: str) -> Any:
    example = message_class("tensorflow.Example")()
    for name, value in features.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[name]
        if all(isinstance(v, str | dict) for v in values) and values:
            feature.bytes_list.value.extend(_bytes(v, f"{where}.{name}") for v in values)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values) and values:
            try:
                feature.int64_list.value.extend(values)
            except ValueError:  # found by tests/codecs/test_codec_fuzz.py: a 500 before
                raise InvalidArgument(
                    f"{where}.{name}: an integer feature value does not fit int64"
                ) from None
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            feature.float_list.value.extend(values)
        else:
            raise InvalidArgument(
                f"{where}.{name}: feature values must be numbers or strings (or lists of one kind)"
            )
    return example


def _bytes(value: str | dict, where: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise InvalidArgument(f'{where}: an object value must be {{"b64": "..."}}')
    try:
        return base64.b64decode(value["b64"], validate=True)
    except binascii.Error as exc:
        raise InvalidArgument(f"{where}: invalid base64: {exc}") from None


def results_json(method: str, outputs: Mapping[str, np.ndarray], num_examples: int) -> list[Any]:
    """TF Serving's REST `results`: per example `[[label, score], ...]` for classify,
    one number for regress."""
    if method == CLASSIFY:
        return [
            [[label.decode("utf-8", "replace"), score] for label, score in row]
            for row in classify_results(outputs, num_examples)
        ]
    return regress_results(outputs, num_examples)


# -- gRPC -------------------------------------------------------------------------------


def examples_from_input(input_message: Any, budget: TensorBudget | None = None) -> list[bytes]:
    """A `tensorflow.serving.Input` (ExampleList or ExampleListWithContext) serialized
    per example, the context merged into each (charged to `budget` first). An Input of
    neither kind has no examples: `serialized_examples` refuses it, after the signature
    checks, as TF Serving does."""
    kind = input_message.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in input_message.example_list.examples]
    if kind == "example_list_with_context":
        with_context = input_message.example_list_with_context
        context = with_context.context.SerializeToString()
        examples = [e.SerializeToString() for e in with_context.examples]
        return _merged(context, examples, budget)
    return []
