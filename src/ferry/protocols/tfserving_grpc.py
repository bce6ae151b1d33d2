"""TensorFlow Serving's gRPC API, answered as TF Serving answers it.

Services (TF Serving's names, so its generated stubs call ferry unchanged):
  tensorflow.serving.PredictionService  Predict, GetModelMetadata; Classify and Regress
                                        (for models with a TF classify/regress signature;
                                        UNIMPLEMENTED for others); MultiInference answers
                                        UNIMPLEMENTED
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
from google.protobuf import text_format
from google.protobuf.message import Message

from ferry.codecs.tensor_proto import decode_inputs, dtype_enum, encode_tensor
from ferry.codecs.tf_example import (
    classifications,
    example_input,
    examples_from_input,
    regressions,
    serialized_examples,
)
from ferry.errors import FerryError, InvalidArgument, NotFound, Unimplemented
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
    ) -> None:
        self.manager = manager
        self.inference = inference
        self.watcher = watcher
        self.control = control
        self.limits = limits

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """Generic handlers for grpc.aio; request bytes are parsed by ferry, not grpc."""
        prediction = {
            "Predict": self._method(self.predict, "PredictRequest"),
            "GetModelMetadata": self._method(self.get_model_metadata, "GetModelMetadataRequest"),
            "Classify": self._method(self.classify, "ClassificationRequest"),
            "Regress": self._method(self.regress, "RegressionRequest"),
            "MultiInference": self._method(
                self._unimplemented("MultiInference"), "MultiInferenceRequest"
            ),
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
            signature = served.signature(signature_name)
            _check_output_filter(output_filter, signature.outputs)
            return signature_name, decode_inputs(request.inputs, signature, self.limits.budget())

        prediction = await self.inference.predict(
            "grpc", spec.name, version, label, decode, _timeout(context)
        )
        response = _msg("PredictResponse")()
        outputs = prediction.outputs
        for name in output_filter or outputs:
            encode_tensor(outputs[name], name, into=response.outputs[name])
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
        outputs, version, signature_name = await self._run_examples("classify", request, context)
        for row in classifications(outputs):
            entry = response.result.classifications.add()
            for label, score in row:
                entry.classes.add(label=label.decode("utf-8", "replace"), score=score)
        _fill_spec(response.model_spec, request.model_spec.name, version, signature_name)
        return response

    async def regress(self, request: Message, context: grpc.aio.ServicerContext) -> Message:
        response = _msg("RegressionResponse")()
        outputs, version, signature_name = await self._run_examples("regress", request, context)
        for value in regressions(outputs):
            response.result.regressions.add(value=value)
        _fill_spec(response.model_spec, request.model_spec.name, version, signature_name)
        return response

    async def _run_examples(
        self, method: str, request: Message, context: grpc.aio.ServicerContext
    ) -> tuple[dict, int, str]:
        """Classify/Regress: the request's tf.Examples become the signature's serialized
        input and take the Predict path (same checks, batch queue and deadline)."""
        spec = _model_spec(request)
        version, label = _version_choice(spec)
        signature_name = spec.signature_name or DEFAULT_SIGNATURE

        def decode(served: ServedVersion) -> tuple[str, dict]:
            _, input_name = example_input(served.signatures, signature_name, method)
            budget = self.limits.budget()
            examples = examples_from_input(request.input, budget)
            if not examples:
                raise InvalidArgument("Input is empty")
            return signature_name, {input_name: serialized_examples(examples, input_name, budget)}

        prediction = await self.inference.predict(
            "grpc", spec.name, version, label, decode, _timeout(context)
        )
        return prediction.outputs, prediction.version, signature_name

    def _unimplemented(self, method: str) -> Handler:
        async def refuse(request: Message, context: grpc.aio.ServicerContext) -> Message:
            names = (
                [task.model_spec.name for task in request.tasks]
                if method == "MultiInference"
                else [_model_spec(request).name]
            )
            for name in names:
                if not self.manager.has_model(name):
                    raise NotFound(f"Servable not found for request: Latest({name})")
            raise Unimplemented(
                f"{method} needs a model with a TensorFlow classify/regress signature that "
                "reads tf.Example inputs; ferry's ONNX models have none. Use Predict."
            )

        return refuse

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
    info.name = tensor.name
    info.dtype = dtype_enum(tensor.dtype)
    if tensor.shape is None:
        info.tensor_shape.unknown_rank = True
    else:
        for size in tensor.shape:
            info.tensor_shape.dim.add(size=size)
