"""Which signature a Classify, Regress or MultiInference task runs, and what its outputs
become: TF Serving's rules and messages (classifier.cc, regressor.cc, multi_inference.cc).

TF Serving serves classify or regress from any signature shaped for it, whatever its
method name (`--enable_signature_method_name_check` is off by default, so TF2 exports,
whose every signature says `tensorflow/serving/predict`, classify and regress too; with
it on, the signature must also declare the task's method, and Predict needs one of the
three: `check_predict_method`):
  classify: one input `inputs` (serialized tf.Examples); one or two outputs, among them
            `classes` (DT_STRING [examples, classes]) and/or `scores` (DT_FLOAT, same shape)
  regress:  one input `inputs`; one output `outputs` (DT_FLOAT [examples] or [examples, 1])
The outputs are checked against those shapes after the run, so a signature that only
looks right fails with TF Serving's sentence rather than a wrong answer.

Shared by the REST and gRPC protocols and by warm-up's replay of recorded requests, so
the three agree on every rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import text_format

from ferry import tfserving_messages
from ferry.codecs.tensor_proto import dtype_enum
from ferry.errors import InvalidArgument, Unimplemented
from ferry.protos import message_class
from ferry.tensors import DEFAULT_SIGNATURE, STRING_DTYPE, Signature, TensorSpec, tf_dtype_name

CLASSIFY, REGRESS = "classify", "regress"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
METHOD_NAMES = {CLASSIFY: CLASSIFY_METHOD, REGRESS: REGRESS_METHOD}
# TF's signature keys for classification and regression (signature_constants).
INPUTS, CLASSES, SCORES, OUTPUTS = "inputs", "classes", "scores", "outputs"


@dataclass(frozen=True)
class ExampleTask:
    """One classify or regress run: the signature it runs, fed the serialized tf.Examples
    as its input `inputs`."""

    method: str  # CLASSIFY or REGRESS
    signature_name: str
    signature: Signature

    def feeds(self, examples: np.ndarray) -> dict[str, np.ndarray]:
        """The runtime's inputs for this task (TF would refuse a non-string input).

        A session bundle's graph decides (`runtime_checks_shapes`): TF Serving feeds the
        serialized examples to the tensor the signature names whatever dtype its
        TensorInfo claims, so the SageMaker container's `half_plus_three` (a regress
        input declared DT_FLOAT on a string placeholder) regresses; a graph tensor that
        really is not a string fails in the run with TensorFlow's own sentence."""
        spec = self.signature.inputs[INPUTS]
        if spec.dtype != STRING_DTYPE and not self.signature.runtime_checks_shapes:
            raise InvalidArgument(
                f"Expects arg[0] to be {_type_name(spec.dtype)} but string is provided"
            )
        return {INPUTS: examples}


def example_task(
    signatures: Mapping[str, Signature],
    signature_name: str,
    method: str,
    check_method_name: bool = False,
) -> ExampleTask:
    """The task a Classify/Regress request runs (`signature_name` "" is serving_default);
    `check_method_name`: `--enable_signature_method_name_check`."""
    name = signature_name or DEFAULT_SIGNATURE
    signature = signatures.get(name)
    if signature is None:
        raise InvalidArgument(f"No signature was found with the name: {name}")
    check_signature(method, signature, check_method_name)
    return ExampleTask(method, name, signature)


def check_predict_method(signature: Signature, check_method_name: bool) -> None:
    """Predict's check under `--enable_signature_method_name_check` (none without it)."""
    if check_method_name and signature.method_name not in tfserving_messages.PREDICT_METHOD_NAMES:
        raise tfserving_messages.predict_method_name_mismatch(signature.method_name)


def multi_inference_tasks(
    tasks: Iterable[Any], signatures: Mapping[str, Signature], check_method_name: bool = False
) -> list[ExampleTask]:
    """The tasks of a MultiInferenceRequest (`tensorflow.serving.InferenceTask` messages),
    checked as TF Serving checks them: one model for all, each signature at most once, each
    signature shaped for its task's method. All run on the same examples and version."""
    model_name = ""
    result: list[ExampleTask] = []
    for task in tasks:
        spec = task.model_spec
        if not spec.name:
            raise InvalidArgument("Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = spec.name
        elif spec.name != model_name:
            raise InvalidArgument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        name = spec.signature_name or DEFAULT_SIGNATURE
        if any(done.signature_name == name for done in result):
            raise InvalidArgument(f"Duplicate evaluation of signature: {name}")
        signature = signatures.get(name)
        if signature is None:
            raise InvalidArgument(f"Requested signature not found in model graph: {name}")
        method = next((m for m, full in METHOD_NAMES.items() if full == task.method_name), None)
        if method is None:
            raise Unimplemented(f"Unsupported signature method_name: {task.method_name}")
        check_signature(method, signature, check_method_name)
        result.append(ExampleTask(method, name, signature))
    return result


def check_signature(method: str, signature: Signature, check_method_name: bool = False) -> None:
    """INVALID_ARGUMENT, in TF Serving's words, unless `signature` is shaped for `method`
    (and, with `check_method_name`, declares it)."""
    if check_method_name and signature.method_name != METHOD_NAMES[method]:
        task = "classification" if method == CLASSIFY else "regression"
        raise tfserving_messages.method_name_mismatch(
            task, METHOD_NAMES[method], signature.method_name
        )
    if len(signature.inputs) != 1:
        raise InvalidArgument("Expected one input Tensor.")
    if method == CLASSIFY:
        if len(signature.outputs) not in (1, 2):
            raise InvalidArgument(
                f"Expected one or two output Tensors, found {len(signature.outputs)}"
            )
        if INPUTS not in signature.inputs:
            raise InvalidArgument(
                f"No classification inputs found in SignatureDef: {debug_string(signature)}"
            )
        if CLASSES not in signature.outputs and SCORES not in signature.outputs:
            raise InvalidArgument(
                "Expected classification signature outputs to contain at least one of "
                f'"{CLASSES}" or "{SCORES}". Signature was: {debug_string(signature)}'
            )
        return
    if len(signature.outputs) != 1:
        raise InvalidArgument("Expected one output Tensor.")
    if INPUTS not in signature.inputs:
        raise InvalidArgument(
            f"No regression inputs found in SignatureDef: {debug_string(signature)}"
        )
    if OUTPUTS not in signature.outputs:
        raise InvalidArgument(
            f"No regression outputs found in SignatureDef: {debug_string(signature)}"
        )


# -- results --------------------------------------------------------------------------


def classify_results(
    outputs: Mapping[str, np.ndarray], num_examples: int
) -> list[list[tuple[bytes, float]]]:
    """Per example its (label, score) pairs. Without a `classes` output labels are empty,
    without `scores` scores are 0, as TF Serving leaves those fields unset."""
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    for tensor, what, dtype_name in (
        (classes, "classes", "DT_STRING"),
        (scores, "scores", "DT_FLOAT"),
    ):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise InvalidArgument(
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape(tensor)}"
            )
        if tf_dtype_name(tensor.dtype) != dtype_name:
            raise InvalidArgument(
                f"Expected {what} Tensor of {dtype_name}. Got: {tf_dtype_name(tensor.dtype)}"
            )
        if tensor.shape[0] != num_examples:
            raise InvalidArgument(
                f"Expected {what} output batch size of {num_examples}. Got: {tensor.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidArgument(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    reference = scores if scores is not None else classes
    width = 0 if reference is None else reference.shape[1]
    return [
        [
            (
                bytes(classes[i, j]) if classes is not None else b"",
                float(scores[i, j]) if scores is not None else 0.0,
            )
            for j in range(width)
        ]
        for i in range(num_examples)
    ]


def regress_results(outputs: Mapping[str, np.ndarray], num_examples: int) -> list[float]:
    """One value per example from the `outputs` tensor, checked as TF Serving checks it."""
    values = outputs[OUTPUTS]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise InvalidArgument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {_shape(values)}"
        )
    if values.shape[0] != num_examples:
        raise InvalidArgument(
            "Input batch size did not match output batch size: "
            f"{num_examples} vs. {values.shape[0]}"
        )
    if tf_dtype_name(values.dtype) != "DT_FLOAT":
        raise InvalidArgument(
            f"Expected output Tensor of DT_FLOAT.  Got: {tf_dtype_name(values.dtype)}"
        )
    return [float(v) for v in values.reshape(-1)]


# -- TF's words -----------------------------------------------------------------------


def debug_string(signature: Signature) -> str:
    """The signature as TF's SignatureDef DebugString prints it (TF Serving's messages
    quote it)."""
    proto = message_class("tensorflow.SignatureDef")()
    for where, tensors in ((proto.inputs, signature.inputs), (proto.outputs, signature.outputs)):
        for key, spec in tensors.items():
            _fill_tensor_info(where[key], spec)
    proto.method_name = signature.method_name
    return text_format.MessageToString(proto)


def _fill_tensor_info(info: Any, spec: TensorSpec) -> None:
    info.name = spec.name
    info.dtype = dtype_enum(spec.dtype)
    if spec.shape is None:
        info.tensor_shape.unknown_rank = True
    else:
        for size in spec.shape:
            info.tensor_shape.dim.add(size=size)


def _shape(array: np.ndarray) -> str:
    """A shape as TF's TensorShape::DebugString writes it: `[2,3]`."""
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def _type_name(dtype: np.dtype) -> str:
    """TF's DataTypeString: `float` for DT_FLOAT, `string` for DT_STRING."""
    return tf_dtype_name(dtype).removeprefix("DT_").lower()
