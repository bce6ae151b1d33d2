"""TensorFlow Serving's gRPC API, answered as TF Serving answers it.

Services (TF Serving's names, so its generated stubs call ferry unchanged):
  tensorflow.serving.PredictionService  Predict, GetModelMetadata; Classify, Regress and
                                        MultiInference (tf.Examples in, for signatures
                                        shaped for them: codecs/example_tasks.py)
  tensorflow.serving.ModelService       GetModelStatus, HandleReloadConfigRequest

Handlers take the raw request bytes and parse them here, so a corrupt message is
answered INVALID_ARGUMENT with the reason (grpc's own deserialization failure would
give the client nothing useful). Errors are FerryErrors turned into the gRPC status
of the same number, with the message, in one place (`_answer`). The client's deadline
becomes the request's timeout on the shared request path.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import text_format
from google.protobuf.message import Message

from ferry import tfserving_messages
from ferry.codecs.example_tasks import (
    CLASSIFY,
    REGRESS,
    ExampleTask,
    check_predict_method,
    classify_results,
    example_task,
    multi_inference_tasks,
    regress_results,
)
from ferry.codecs.tensor_proto import decode_inputs, dtype_enum, encode_tensor
from ferry.codecs.tf_example import examples_from_input, serialized_examples
from ferry.errors import FerryError, InvalidArgument, NotFound
from ferry.inference import InferenceService
from ferry.manager import ModelManager
from ferry.model_config import ConfigError, parse_model_config
from ferry.model_control import RELOAD_API, ModelControl
from ferry.protocols.grpc_util import Handler, unary_method
from ferry.protos import message_class
from ferry.repository.catalog import FixedCatalog
from ferry.repository.watcher import RepositoryWatcher
from ferry.served_version import ServedVersion, VersionState
from ferry.tensor_limits import RequestLimits
from ferry.tensors import DEFAULT_SIGNATURE, TensorSpec

log = logging.getLogger(__name__)

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
SIGNATURE_DEF_FIELD = "signature_def"
# How often a MultiInference starts over when its version retires between its tasks.
_MULTI_INFERENCE_ATTEMPTS = 3


def _msg(name: str) -> type[Message]:
    return message_class(f"tensorflow.serving.{name}")


class TFServingGrpc:
    """TF Serving's two gRPC services over one manager, inference service and watcher."""

    def __init__(
        self,
        manager: ModelManager,
        inference: InferenceService,
        watcher: RepositoryWatcher,
        control: ModelControl,
        limits: RequestLimits,
        *,
        outputs_as_tensor_content: bool = False,
        check_method_names: bool = False,
    ) -> None:
        self.manager = manager
        self.inference = inference
        self.watcher = watcher
        self.control = control
        self.limits = limits
        # --enable_serialization_as_tensor_content: Predict outputs in tensor_content
        # rather than in the typed *_val fields (TF Serving's default, and ferry's).
        self.outputs_as_tensor_content = outputs_as_tensor_content
        # --enable_signature_method_name_check (ferry.codecs.example_tasks).
        self.check_method_names = check_method_names

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """Generic handlers for grpc.aio; request bytes are parsed by ferry, not grpc."""
        prediction = {
            "Predict": self._method(self.predict, "PredictRequest"),
            "GetModelMetadata": self._method(self.get_model_metadata, "GetModelMetadataRequest"),
            "Classify": self._method(self.classify, "ClassificationRequest"),
            "Regress": self._method(self.regress, "RegressionRequest"),
            "MultiInference": self._method(self.multi_inference, "MultiInferenceRequest"),
        }
        models = {
            "GetModelStatus": self._method(self.get_model_status, "GetModelStatusRequest"),
            "HandleReloadConfigRequest": self._method(self.reload_config, "ReloadConfigRequest"),
        }
        return [
            grpc.method_handlers_generic_handler(PREDICTION_SERVICE, prediction),
            grpc.method_handlers_generic_handler(MODEL_SERVICE, models),
        ]

    def _method(self, handler: Handler, request_type: str) -> grpc.RpcMethodHandler:
        return unary_method(handler, _msg(request_type))

    # -- PredictionService ----------------------------------------------------------------

    async def predict(self, request: Message, context: grpc.aio.ServicerContext) -> Message:
        spec = _model_spec(request)
        version, label = _version_choice(spec)
        signature_name = spec.signature_name or DEFAULT_SIGNATURE
        output_filter = list(request.output_filter)

        def decode(served: ServedVersion) -> tuple[str, dict]:
            # TF Serving's order of checks: signature, inputs, then the output filter.
            signature = served.signatures.get(signature_name)
            if signature is None:
                raise tfserving_messages.signature_key_not_found(signature_name)
            check_predict_method(signature, self.check_method_names)
            inputs = decode_inputs(request.inputs, signature, self.limits.budget())
            _check_output_filter(output_filter, signature.outputs)
            return signature_name, inputs

        prediction = await self.inference.predict(
            "grpc", spec.name, version, label, decode, _timeout(context)
        )
        response = _msg("PredictResponse")()
        outputs = prediction.outputs
        for name in output_filter or outputs:
            encode_tensor(
                outputs[name],
                name,
                into=response.outputs[name],
                tensor_content=self.outputs_as_tensor_content,
            )
        _fill_spec(response.model_spec, spec.name, prediction.version, signature_name)
        return response

    async def get_model_metadata(
        self, request: Message, context: grpc.aio.ServicerContext
    ) -> Message:
        spec = _model_spec(request)
        fields = list(request.metadata_field)
        if not fields:
            raise InvalidArgument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in fields:
            if field != SIGNATURE_DEF_FIELD:
                raise InvalidArgument(f"Metadata field {field} is not supported")
        version, label = _version_choice(spec)
        served = self.manager.acquire(spec.name, version, label)
        try:
            signature_defs = _msg("SignatureDefMap")()
            for name, signature in served.signatures.items():
                entry = signature_defs.signature_def[name]
                entry.method_name = signature.method_name
                for input_name, tensor in signature.inputs.items():
                    _fill_tensor_info(entry.inputs[input_name], tensor)
                for output_name, tensor in signature.outputs.items():
                    _fill_tensor_info(entry.outputs[output_name], tensor)
            response = _msg("GetModelMetadataResponse")()
            response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_defs)
            _fill_spec(response.model_spec, served.model_name, served.version, "")
            return response
        finally:
            served.release()

    async def classify(self, request: Message, context: grpc.aio.ServicerContext) -> Message:
        response = _msg("ClassificationResponse")()
        outputs, examples, version, name = await self._run_examples(CLASSIFY, request, context)
        _fill_classifications(response.result, classify_results(outputs, examples))
        _fill_spec(response.model_spec, request.model_spec.name, version, name)
        return response

    async def regress(self, request: Message, context: grpc.aio.ServicerContext) -> Message:
        response = _msg("RegressionResponse")()
        outputs, examples, version, name = await self._run_examples(REGRESS, request, context)
        _fill_regressions(response.result, regress_results(outputs, examples))
        _fill_spec(response.model_spec, request.model_spec.name, version, name)
        return response

    async def _run_examples(
        self, method: str, request: Message, context: grpc.aio.ServicerContext
    ) -> tuple[dict, int, int, str]:
        """Classify/Regress: the request's tf.Examples become the signature's serialized
        input and take the Predict path (same checks, batch queue and deadline). Returns
        the outputs, the number of examples, the version and the signature name."""
        spec = _model_spec(request)
        version, label = _version_choice(spec)
        budget = self.limits.budget()
        examples = examples_from_input(request.input, budget)

        def decode(served: ServedVersion) -> tuple[str, dict]:
            task = example_task(
                served.signatures, spec.signature_name, method, self.check_method_names
            )
            return task.signature_name, task.feeds(serialized_examples(examples, budget=budget))

        prediction = await self.inference.predict(
            "grpc", spec.name, version, label, decode, _timeout(context)
        )
        return prediction.outputs, len(examples), prediction.version, prediction.signature_name

    async def multi_inference(self, request: Message, context: grpc.aio.ServicerContext) -> Message:
        """Several classify/regress tasks over one set of tf.Examples, on one version of
        one model (the first task's), each answered as its own Classify/Regress would be.

        Each task is one run of its signature on the Predict path. The version is chosen
        once and the other tasks name it; should it retire between the runs (a newer one
        arrived), the request starts over on the new one, a few times at most."""
        spec = request.tasks[0].model_spec if request.tasks else _msg("ModelSpec")()
        version, label = _version_choice(spec)
        budget = self.limits.budget()
        examples = examples_from_input(request.input, budget)
        tensor: np.ndarray | None = None  # built once the tasks passed their checks
        for attempt in range(_MULTI_INFERENCE_ATTEMPTS):
            served = self.manager.acquire(spec.name, version, label)
            try:
                tasks = multi_inference_tasks(
                    request.tasks, served.signatures, self.check_method_names
                )
                pinned = served.version
            finally:
                served.release()
            if tensor is None:
                tensor = serialized_examples(examples, budget=budget)
            try:
                predictions = await asyncio.gather(
                    *(self._run_task(spec.name, pinned, task, tensor, context) for task in tasks)
                )
                break
            except NotFound:
                if version is not None or attempt == _MULTI_INFERENCE_ATTEMPTS - 1:
                    raise
        response = _msg("MultiInferenceResponse")()
        for task, outputs in zip(tasks, predictions, strict=True):
            result = response.results.add()
            if task.method == CLASSIFY:
                _fill_classifications(
                    result.classification_result, classify_results(outputs, len(examples))
                )
            else:
                _fill_regressions(result.regression_result, regress_results(outputs, len(examples)))
            _fill_spec(result.model_spec, spec.name, pinned, task.signature_name)
        return response

    async def _run_task(
        self,
        model: str,
        version: int,
        task: ExampleTask,
        examples: np.ndarray,
        context: grpc.aio.ServicerContext,
    ) -> dict[str, np.ndarray]:
        def decode(served: ServedVersion) -> tuple[str, dict]:
            return task.signature_name, task.feeds(examples)

        prediction = await self.inference.predict(
            "grpc", model, version, None, decode, _timeout(context)
        )
        return prediction.outputs

    # -- ModelService ---------------------------------------------------------------------

    async def get_model_status(
        self, request: Message, context: grpc.aio.ServicerContext
    ) -> Message:
        spec = _model_spec(request)
        version, label = _version_choice(spec)
        records = self.manager.version_status(spec.name, version, label)
        response = _msg("GetModelStatusResponse")()
        for record in records:
            status = response.model_version_status.add()
            status.version = record.version
            status.state = record.state.value
            status.status.error_code = record.error_code.value
            status.status.error_message = record.error_message
        return response

    async def reload_config(self, request: Message, context: grpc.aio.ServicerContext) -> Message:
        """Serve exactly the request's models; answers once they loaded (or failed to).

        Only with --enable_model_control, and only from base paths under the operator's
        roots (checked before anything changes). An empty model_config_list unloads
        every model, as in TF Serving: the operator who enabled control allowed that."""
        self.control.require(RELOAD_API)
        config = request.config
        if config.WhichOneof("config") != "model_config_list":
            raise InvalidArgument(
                "ReloadConfigRequest: only model_config_list is supported "
                "(custom_model_config and an empty config are not)"
            )
        try:
            # The text form goes through the same parser and checks as --model_config_file.
            # A client chose these models: they never get consent to run code (ModelSpec).
            specs = parse_model_config(
                text_format.MessageToString(config), Path.cwd(), trusted=False
            )
        except ConfigError as exc:
            raise InvalidArgument(str(exc)) from None
        specs = self.control.allowed_specs(specs)
        timeout = context.time_remaining()
        done = await asyncio.to_thread(self.watcher.replace_catalog, FixedCatalog(specs), timeout)
        response = _msg("ReloadConfigResponse")()
        if not done:
            response.status.error_code = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
            response.status.error_message = "the new config is in force; its models are loading"
            return response
        for spec in specs:
            problem = self._load_problem(spec.name)
            if problem is not None:
                response.status.error_code, response.status.error_message = problem
                break
        return response

    def _load_problem(self, model: str) -> tuple[int, str] | None:
        """Why `model` serves no version after a reload (None when one is AVAILABLE)."""
        try:
            records = self.manager.version_status(model)
        except FerryError:
            return NotFound.code.value, f"model {model}: no version found under its base_path"
        if any(r.state is VersionState.AVAILABLE for r in records):
            return None
        failed = next((r for r in records if r.error_message), None)
        if failed is None:
            return NotFound.code.value, f"model {model}: no version is available"
        return failed.error_code.value, f"model {model}: {failed.error_message}"


def _fill_classifications(result: Message, rows: list[list[tuple[bytes, float]]]) -> None:
    for row in rows:
        entry = result.classifications.add()
        for label, score in row:
            entry.classes.add(label=label.decode("utf-8", "replace"), score=score)


def _fill_regressions(result: Message, values: list[float]) -> None:
    for value in values:
        result.regressions.add(value=value)


def _model_spec(request: Message) -> Message:
    if not request.HasField("model_spec"):
        raise InvalidArgument("Missing ModelSpec")
    spec = request.model_spec
    if not spec.name:
        raise InvalidArgument("ModelSpec.name must be set")
    return spec


def _version_choice(spec: Message) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


def _check_output_filter(names: list[str], outputs: dict[str, TensorSpec]) -> None:
    seen: set[str] = set()
    for name in names:
        if name not in outputs:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {name} Outputs expected to be "
                f"in the set {{{','.join(sorted(outputs))}}}."
            )
        if name in seen:
            raise InvalidArgument(f"duplicate output tensor alias: {name}")
        seen.add(name)


def _timeout(context: grpc.aio.ServicerContext) -> float | None:
    """Seconds left before the client's deadline (None: no deadline, the server's default)."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    # A deadline already past still gets a sliver, so the request fails as a timeout.
    return max(remaining, 1e-3)


def _fill_spec(spec: Message, name: str, version: int, signature_name: str) -> None:
    spec.name = name
    spec.version.value = version
    spec.signature_name = signature_name


def _fill_tensor_info(info: Message, tensor: TensorSpec) -> None:
    info.name = tensor.reported_name  # the graph tensor's (`x:0`) where the model has one
    info.dtype = dtype_enum(tensor.dtype)
    if tensor.shape is None:
        info.tensor_shape.unknown_rank = True
    else:
        for size in tensor.shape:
            info.tensor_shape.dim.add(size=size)
