"""TF Serving's Classify and Regress APIs: tf.Example inputs in, classes/scores/values out.

A classify or regress signature (method name `tensorflow/serving/classify` or
`.../regress`, as TF1 `classification_signature_def` / `regression_signature_def` and
Estimator exports write them) takes one string tensor of serialized `tf.Example`
protos. So these requests need no runtime support of their own: this module turns the
REST JSON examples or the gRPC `Input` message into that tensor, the request takes the
same path as a Predict (checks, batch queue, deadline, metrics), and the outputs
(`classes` and `scores`, or `outputs`) are turned into TF Serving's results.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import numpy as np

from ferry.errors import InvalidArgument, Unimplemented
from ferry.protos import message_class
from ferry.tensor_limits import REFERENCE_BYTES, TensorBudget
from ferry.tensors import STRING_DTYPE, Signature

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
METHOD_NAMES = {"classify": CLASSIFY_METHOD, "regress": REGRESS_METHOD}
# TF's output keys for classification and regression signatures (signature_constants).
CLASSES, SCORES, OUTPUTS = "classes", "scores", "outputs"


def example_input(
    signatures: Mapping[str, Signature], signature_name: str, method: str
) -> tuple[Signature, str]:
    """The signature a classify/regress request runs and the name of its examples input.

    UNIMPLEMENTED when the model has no signature of that method at all (ONNX models,
    Keras-exported SavedModels): there is nothing a client could change in the request.
    INVALID_ARGUMENT, in TF Serving's words, when the named signature is missing or is
    of another method.
    """
    wanted = METHOD_NAMES[method]
    if not any(s.method_name == wanted for s in signatures.values()):
        raise Unimplemented(
            f"{method} needs a model with a {method} signature (method_name {wanted}) that "
            "reads tf.Example inputs; this model has none. "
            "Use Predict (REST: :predict) for this model."
        )
    signature = signatures.get(signature_name)
    if signature is None:
        raise InvalidArgument(
            f'Serving signature name: "{signature_name}" not found in signature def'
        )
    if signature.method_name != wanted:
        kind = "classification" if method == "classify" else "regression"
        raise InvalidArgument(
            f"Expected {kind} signature method_name to be {wanted}. Was: {signature.method_name}"
        )
    strings = [name for name, spec in signature.inputs.items() if spec.dtype == STRING_DTYPE]
    if len(signature.inputs) != 1 or len(strings) != 1:
        raise InvalidArgument(
            f"Expected one input Tensor of serialized tf.Examples in signature "
            f"'{signature_name}'; found {sorted(signature.inputs)}"
        )
    return signature, strings[0]


def serialized_examples(
    examples: list[bytes], name: str = "examples", budget: TensorBudget | None = None
) -> np.ndarray:
    """The 1-D string tensor a classify/regress signature reads (input `name`), charged
    to `budget` like any input tensor. The examples themselves were serialized from the
    request, so its size limit bounds them."""
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
        raise InvalidArgument("JSON Value: the request body must be a JSON object")
    examples = body.get("examples")
    if not isinstance(examples, list):
        raise InvalidArgument("'examples' must be specified as a JSON array of objects")
    context = body.get("context")
    if context is not None and not isinstance(context, dict):
        raise InvalidArgument("'context' must be a JSON object")
    context_bytes = _example(context, "context").SerializeToString() if context else b""
    serialized = []
    for index, features in enumerate(examples):
        if not isinstance(features, dict):
            raise InvalidArgument(f"examples[{index}] must be a JSON object")
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


def results_json(method: str, outputs: Mapping[str, np.ndarray]) -> list[Any]:
    """TF Serving's REST `results`: per example `[[label, score], ...]` for classify,
    one number for regress."""
    if method == "classify":
        return [
            [[label.decode("utf-8", "replace"), score] for label, score in row]
            for row in classifications(outputs)
        ]
    return regressions(outputs)


# -- results shared by REST and gRPC ----------------------------------------------------


def classifications(outputs: Mapping[str, np.ndarray]) -> list[list[tuple[bytes, float]]]:
    """Per example, its (label, score) pairs; a missing `classes` output gives empty
    labels and a missing `scores` output zero scores, as in TF Serving."""
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    if classes is None and scores is None:
        raise InvalidArgument(
            f"classification signature has neither a '{CLASSES}' nor a '{SCORES}' output"
        )
    reference = scores if scores is not None else classes
    assert reference is not None
    if reference.ndim != 2:
        raise InvalidArgument(
            "expected classification outputs of shape [examples, classes]; "
            f"got {list(reference.shape)}"
        )
    rows, width = reference.shape
    return [
        [
            (
                bytes(classes[i, j]) if classes is not None else b"",
                float(scores[i, j]) if scores is not None else 0.0,
            )
            for j in range(width)
        ]
        for i in range(rows)
    ]


def regressions(outputs: Mapping[str, np.ndarray]) -> list[float]:
    """One value per example from the `outputs` tensor ([examples] or [examples, 1])."""
    values = outputs.get(OUTPUTS)
    if values is None:
        raise InvalidArgument(f"regression signature has no '{OUTPUTS}' output")
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise InvalidArgument(
            f"expected regression outputs of shape [examples]; got {list(values.shape)}"
        )
    return [float(v) for v in values]


# -- gRPC -------------------------------------------------------------------------------


def examples_from_input(input_message: Any, budget: TensorBudget | None = None) -> list[bytes]:
    """A `tensorflow.serving.Input` (ExampleList or ExampleListWithContext) serialized
    per example, the context merged into each (charged to `budget` first)."""
    kind = input_message.WhichOneof("kind")
    if kind == "example_list":
        return [e.SerializeToString() for e in input_message.example_list.examples]
    if kind == "example_list_with_context":
        with_context = input_message.example_list_with_context
        context = with_context.context.SerializeToString()
        examples = [e.SerializeToString() for e in with_context.examples]
        return _merged(context, examples, budget)
    raise InvalidArgument("Input is empty")
