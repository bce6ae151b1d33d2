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

from ferry.codecs.v2 import (
    array_from_raw,
    array_from_values,
    check_against,
    check_outputs,
    checked_shape,
    numpy_dtype,
    raw_bytes,
    v2_datatype,
)
from ferry.errors import InvalidArgument
from ferry.inference import InferenceService
from ferry.protocols.grpc_util import Handler, unary_method
from ferry.protocols.v2_models import V2Models, parse_version, signature_name_of, signature_of
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
        self, models: V2Models, inference: InferenceService, limits: RequestLimits
    ) -> None:
        self.models = models
        self.inference = inference
        self.limits = limits

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
        await self.models.load(request.model_name)
        return _msg("RepositoryModelLoadResponse")()

    async def unload(self, request: Message, context) -> Message:
        await self.models.unload(request.model_name)
        return _msg("RepositoryModelUnloadResponse")()

    # -- inference ----------------------------------------------------------------------------

    async def model_infer(self, request: Message, context: grpc.aio.ServicerContext) -> Message:
        inputs = _decode_inputs(request, self.limits.budget())
        requested = [output.name for output in request.outputs]

        def decode(served: ServedVersion) -> tuple[str, dict]:
            signature = signature_of(served)
            check_against(signature, inputs)
            check_outputs(signature, requested)
            return signature_name_of(served), inputs

        remaining = context.time_remaining()
        prediction = await self.inference.predict(
            "v2_grpc",
            request.model_name,
            parse_version(request.model_version),
            None,
            decode,
            remaining if remaining is not None and remaining > 0 else None,
        )
        response = _msg("ModelInferResponse")(
            model_name=prediction.model,
            model_version=str(prediction.version),
            id=request.id,
        )
        for name in requested or prediction.outputs:
            array = prediction.outputs[name]
            response.outputs.add(name=name, datatype=v2_datatype(array.dtype), shape=array.shape)
            response.raw_output_contents.append(raw_bytes(array))
        return response


def _decode_inputs(request: Message, budget: TensorBudget) -> dict[str, np.ndarray]:
    """The request's input tensors, each sized against `budget` before it is built."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{len(request.inputs)} inputs; send one entry per input, in input order"
        )
    if not request.inputs:
        raise InvalidArgument("The request has no inputs")
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in inputs:
            raise InvalidArgument(f"Input '{name}' is given twice")
        shape = checked_shape(list(tensor.shape), name)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidArgument(
                    f"Input '{name}' sets contents although raw_input_contents is used"
                )
            inputs[name] = array_from_raw(name, tensor.datatype, shape, raw[index], budget)
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
    return array.reshape(shape)
