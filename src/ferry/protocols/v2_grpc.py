"""The Open Inference Protocol's gRPC service `inference.GRPCInferenceService`.

Core RPCs (ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata,
ModelInfer) and Triton's extensions (ModelConfig, ModelStatistics, RepositoryIndex,
RepositoryModelLoad, RepositoryModelUnload), with Triton's message layout so
tritonclient and perf_analyzer work unchanged.

ModelInfer takes inputs as typed `contents` or as `raw_input_contents` (one entry per
input, in order) and answers every output in `raw_output_contents`, which is what
Triton does and what its clients read. Handlers receive raw bytes and parse them here,
so a corrupt message gets INVALID_ARGUMENT with the reason. Errors map to the gRPC
status of the same number (unknown model NOT_FOUND, bad input INVALID_ARGUMENT, full
queue UNAVAILABLE); the client's deadline becomes the request's timeout.
"""

from __future__ import annotations

import logging

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message

from ferry import triton_messages
from ferry.codecs.aligned import aligned
from ferry.codecs.classification import ClassificationRequest, class_count
from ferry.codecs.v2 import (
    array_from_raw,
    array_from_region,
    array_from_values,
    check_against,
    check_outputs,
    checked_shape,
    numpy_dtype,
    raw_bytes,
    v2_datatype,
    write_to_region,
)
from ferry.codecs.v2_shared_memory import REGION, Window, check_output_window, grpc_window
from ferry.errors import InvalidArgument, NotFound
from ferry.inference import InferenceService
from ferry.protocols.grpc_util import Handler, unary_method
from ferry.protocols.shared_memory import ClientRegions, grpc_client
from ferry.protocols.v2_models import (
    V2Models,
    classification_labels,
    is_batched,
    parse_version,
    signature_name_of,
    signature_of,
)
from ferry.protocols.v2_shared_memory_api import SharedMemoryApi
from ferry.protocols.v2_stream import DEFAULT_MAX_IN_FLIGHT, ModelStream
from ferry.protocols.v2_unsupported import refuse_sequence_grpc
from ferry.protos import message_class
from ferry.served_version import ServedVersion
from ferry.tensor_limits import RequestLimits, TensorBudget

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
# Which InferTensorContents field carries each datatype (FP16 travels raw only).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _msg(name: str) -> type[Message]:
    return message_class(f"inference.{name}")


class V2Grpc:
    """The V2 gRPC service over the shared model queries and inference service."""

    def __init__(
        self,
        models: V2Models,
        inference: InferenceService,
        limits: RequestLimits,
        shared_memory: SharedMemoryApi | None = None,
        max_in_flight_per_stream: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.models = models
        self.inference = inference
        self.limits = limits
        self.shared_memory = shared_memory
        self.stream = ModelStream(self.model_infer, max_in_flight_per_stream)

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """One generic handler for grpc.aio; request bytes are parsed by ferry, not grpc."""
        methods = {
            "ServerLive": self._method(self.server_live, "ServerLiveRequest"),
            "ServerReady": self._method(self.server_ready, "ServerReadyRequest"),
            "ModelReady": self._method(self.model_ready, "ModelReadyRequest"),
            "ServerMetadata": self._method(self.server_metadata, "ServerMetadataRequest"),
            "ModelMetadata": self._method(self.model_metadata, "ModelMetadataRequest"),
            "ModelInfer": self._method(self.model_infer, "ModelInferRequest"),
            "ModelConfig": self._method(self.model_config, "ModelConfigRequest"),
            "ModelStatistics": self._method(self.model_statistics, "ModelStatisticsRequest"),
            "RepositoryIndex": self._method(self.repository_index, "RepositoryIndexRequest"),
            "RepositoryModelLoad": self._method(self.load, "RepositoryModelLoadRequest"),
            "RepositoryModelUnload": self._method(self.unload, "RepositoryModelUnloadRequest"),
            "ModelStreamInfer": self.stream.method(),
            **(self.shared_memory.grpc_methods() if self.shared_memory is not None else {}),
        }
        return [grpc.method_handlers_generic_handler(SERVICE, methods)]

    def _method(self, handler: Handler, request_type: str) -> grpc.RpcMethodHandler:
        return unary_method(handler, _msg(request_type))

    # -- health and metadata ---------------------------------------------------------------

    async def server_live(self, request: Message, context) -> Message:
        return _msg("ServerLiveResponse")(live=True)

    async def server_ready(self, request: Message, context) -> Message:
        return _msg("ServerReadyResponse")(ready=self.models.is_ready())

    async def model_ready(self, request: Message, context) -> Message:
        ready = self.models.model_ready(request.name, parse_version(request.version))
        return _msg("ModelReadyResponse")(ready=ready)

    async def server_metadata(self, request: Message, context) -> Message:
        return json_format.ParseDict(
            self.models.server_metadata(), _msg("ServerMetadataResponse")()
        )

    async def model_metadata(self, request: Message, context) -> Message:
        metadata = self.models.model_metadata(request.name, parse_version(request.version))
        return json_format.ParseDict(metadata, _msg("ModelMetadataResponse")())

    async def model_config(self, request: Message, context) -> Message:
        config = self.models.model_config(request.name, parse_version(request.version))
        return _msg("ModelConfigResponse")(
            config=json_format.ParseDict(config, _msg("ModelConfig")())
        )

    async def model_statistics(self, request: Message, context) -> Message:
        stats = self.models.statistics(request.name or None, parse_version(request.version))
        return json_format.ParseDict(stats, _msg("ModelStatisticsResponse")())

    # -- model repository extension ---------------------------------------------------------

    async def repository_index(self, request: Message, context) -> Message:
        index = self.models.repository_index(request.ready)
        return json_format.ParseDict({"models": index}, _msg("RepositoryIndexResponse")())

    async def load(self, request: Message, context) -> Message:
        parameters = {
            key: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
            for key, value in request.parameters.items()
        }
        await self.models.load(request.model_name, parameters, base64_files=False)
        return _msg("RepositoryModelLoadResponse")()

    async def unload(self, request: Message, context) -> Message:
        await self.models.unload(request.model_name)
        return _msg("RepositoryModelUnloadResponse")()

    # -- inference ----------------------------------------------------------------------------

    async def model_infer(self, request: Message, context: grpc.aio.ServicerContext) -> Message:
        # Triton's order: the version string, the model, then the inputs.
        model, version = request.model_name, parse_version(request.model_version)
        self.models.acquire(model, version).release()  # an unknown model: Triton's error
        refuse_sequence_grpc(request.parameters)
        regions = (
            ClientRegions(self.shared_memory.registry, grpc_client(context.peer()))
            if self.shared_memory is not None
            else None
        )
        inputs = _decode_inputs(request, self.limits.budget(), regions)
        shm_outputs = _output_windows(request, regions)
        requested = [output.name for output in request.outputs]
        classes = _classification_request(request)

        def decode(served: ServedVersion) -> tuple[str, dict]:
            signature = signature_of(served)
            check_against(signature, inputs, model, request.id, is_batched(served))
            check_outputs(signature, requested, model)
            if classes is not None:
                classes.bind(classification_labels(served), is_batched(served))
            return signature_name_of(served), inputs

        remaining = context.time_remaining()
        try:
            prediction = await self.inference.predict(
                "v2_grpc",
                model,
                version,
                None,
                decode,
                remaining if remaining is not None and remaining > 0 else None,
            )
        except NotFound:  # the version went away since the check above
            raise self.models.lookup_error(model, version) from None
        response = _msg("ModelInferResponse")(
            model_name=prediction.model,
            model_version=str(prediction.version),
            id=request.id,
        )
        outputs = prediction.outputs if classes is None else classes.apply(prediction.outputs)
        for name in requested or outputs:
            array = outputs[name]
            response.outputs.add(name=name, datatype=v2_datatype(array.dtype), shape=array.shape)
            window = shm_outputs.get(name)
            if window is None:
                response.raw_output_contents.append(raw_bytes(array))
            else:  # in its region; Triton still sends one (empty) entry per output
                write_to_region(name, array, window, regions)
                response.raw_output_contents.append(b"")
        return response


def _output_windows(request: Message, regions: ClientRegions | None) -> dict[str, Window]:
    """The requested outputs to write into shared memory, each checked against its
    region before the model runs (as Triton does)."""
    windows: dict[str, Window] = {}
    for output in request.outputs:
        window = grpc_window(output.parameters, output.name)
        if window is not None:
            check_output_window(dict(output.parameters), output.name, grpc=True)
            if regions is None:
                raise NotFound(f"Unable to find shared memory region: '{window.region}'")
            regions.check(window)
            windows[output.name] = window
    return windows


def _classification_request(request: Message) -> ClassificationRequest | None:
    """The outputs asked for with `parameters["classification"]` (Triton's extension)."""
    counts = {}
    for output in request.outputs:
        if "classification" in output.parameters:
            parameter = output.parameters["classification"]
            value = getattr(parameter, parameter.WhichOneof("parameter_choice") or "int64_param")
            count = class_count(value, output.name)
            if count is not None:
                counts[output.name] = count
    return ClassificationRequest(counts) if counts else None


def _decode_inputs(
    request: Message, budget: TensorBudget, regions: ClientRegions | None = None
) -> dict[str, np.ndarray]:
    """The request's input tensors, each sized against `budget` before it is built.
    Inputs in shared memory take no `raw_input_contents` entry (as in Triton)."""
    raw = request.raw_input_contents
    in_regions = sum(1 for tensor in request.inputs if REGION in tensor.parameters)
    if len(raw) > len(request.inputs) - in_regions:  # fewer: Triton's no-data error below
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{len(request.inputs)} inputs; send one entry per input, in input order"
        )
    if not request.inputs:
        raise InvalidArgument("The request has no inputs")
    inputs: dict[str, np.ndarray] = {}
    raw_index = 0
    for tensor in request.inputs:
        name = tensor.name
        if name in inputs:
            raise InvalidArgument(f"Input '{name}' is given twice")
        shape = checked_shape(list(tensor.shape), name)
        window = grpc_window(tensor.parameters, name)
        if window is not None:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    "unexpected 'content' provided when using shared memory for input "
                    f"tensor '{name}' for model '{request.model_name}'"
                )
            inputs[name] = array_from_region(name, tensor.datatype, shape, window, regions, budget)
        elif raw:
            if tensor.HasField("contents"):
                raise triton_messages.contents_with_raw(request.model_name, name)
            if raw_index >= len(raw):
                raise triton_messages.no_data_for_input(request.model_name, name)
            inputs[name] = array_from_raw(
                name, tensor.datatype, shape, raw[raw_index], budget, request.model_name, request.id
            )
            raw_index += 1
        elif not tensor.HasField("contents"):
            raise triton_messages.no_data_for_input(request.model_name, name)
        else:
            inputs[name] = _from_contents(name, tensor.datatype, shape, tensor.contents, budget)
    return inputs


def _from_contents(
    name: str, datatype: str, shape: tuple[int, ...], contents: Message, budget: TensorBudget
) -> np.ndarray:
    dtype = numpy_dtype(datatype, name)  # unknown datatype: the clearer error first
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidArgument(
            f"Input '{name}' of datatype {datatype} must be sent in raw_input_contents"
        )
    values = getattr(contents, field)
    for other in set(_CONTENTS_FIELD.values()) - {field}:
        if len(getattr(contents, other)):
            raise InvalidArgument(
                f"Input '{name}' is {datatype} but its contents are in '{other}'; use '{field}'"
            )
    if datatype == "BYTES":
        return array_from_values(name, datatype, shape, list(values), budget)
    count = budget.admit(name, shape, dtype.itemsize)
    if len(values) != count:
        raise InvalidArgument(
            f"Input '{name}' has {len(values)} elements in contents but shape {list(shape)} "
            f"needs {count}"
        )
    try:
        array = np.array(values, dtype=dtype)
    except OverflowError as exc:
        raise InvalidArgument(f"Input '{name}' contents do not fit {datatype}: {exc}") from None
    return aligned(array.reshape(shape))
