"""Triton's shared memory APIs over V2 REST and gRPC: register, unregister, status.

REST (Triton's paths, http_server.cc):
  POST /v2/systemsharedmemory/region/{name}/register   {"key", "offset", "byte_size"}
  POST /v2/systemsharedmemory[/region/{name}]/unregister
  GET  /v2/systemsharedmemory[/region/{name}]/status
  and the same under /v2/cudasharedmemory/
gRPC: SystemSharedMemory{Status,Register,Unregister} and CudaSharedMemory{...}.

System shared memory is served by `ferry.protocols.shared_memory`. CUDA shared memory
is not: ferry answers as a Triton built without GPU support does (registering fails
with its "GPUs not supported" error, status lists nothing, unregistering succeeds).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import grpc
import orjson
from google.protobuf import json_format
from google.protobuf.message import Message

from ferry.errors import InvalidArgument, NotFound
from ferry.protocols.grpc_util import unary_method
from ferry.protocols.http_util import json_object_body
from ferry.protocols.shared_memory import Client, SharedMemoryRegistry, grpc_client
from ferry.protos import message_class

# Triton's route: the region part is optional for status and unregister.
PATH = re.compile(
    r"/v2/(?P<kind>system|cuda)sharedmemory(?:/region/(?P<name>[^/]+))?"
    r"/(?P<action>status|register|unregister)"
)
PREFIXES = ("/v2/systemsharedmemory", "/v2/cudasharedmemory")


def _msg(name: str) -> type[Message]:
    return message_class(f"inference.{name}")


def _uint(body: dict, key: str, required: bool) -> int:
    if key not in body:
        if required:
            raise InvalidArgument(f"Shared memory register request has no '{key}' field")
        return 0
    value = body[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgument(f"Unable to parse '{key}': expected an unsigned integer")
    return value


class SharedMemoryApi:
    """The register/unregister/status answers of both transports over one registry."""

    def __init__(self, registry: SharedMemoryRegistry) -> None:
        self.registry = registry

    # -- shared by REST and gRPC -----------------------------------------------------------

    def system_status(self, client: Client, name: str) -> list[dict]:
        if self.registry.options.enabled:
            self.registry.check_client(client)  # keys name other clients' objects
        return self.registry.status(name)

    def cuda_register(self, client: Client, name: str) -> None:
        self.registry.check_client(client)
        if not name:
            raise InvalidArgument(
                "'region name' is necessary to register cuda shared memory region"
            )
        raise InvalidArgument(
            f"failed to register CUDA shared memory region: '{name}', GPUs not supported"
        )

    def cuda_unregister(self, client: Client, name: str) -> None:
        self.registry.check_client(client)  # nothing is registered: nothing to do

    def cuda_status(self, client: Client, name: str) -> list[dict]:
        if not name:
            return []
        if any(region["name"] == name for region in self.registry.status("")):
            raise NotFound(
                f"The region named '{name}' is registered as system shared memory, "
                "not CUDA shared memory"
            )
        raise NotFound(f"Unable to find cuda shared memory region: '{name}'")

    # -- REST ------------------------------------------------------------------------------

    def rest_post(self, path: str, body: bytes, client: Client) -> bytes:
        """A POST under a shared memory prefix: the answer body (empty on success)."""
        match = PATH.fullmatch(unquote(path))
        if match is None:
            raise NotFound(f"Not found: POST {path}")
        kind, name, action = match["kind"], match["name"] or "", match["action"]
        if action == "status":
            raise InvalidArgument("Method Not Allowed")
        if kind == "cuda":
            if action == "register":
                self.cuda_register(client, name)
            self.cuda_unregister(client, name)
            return b""
        if action == "unregister":
            self.registry.unregister(client, name)
            return b""
        self.registry.check_client(client)
        if not name:
            raise InvalidArgument(
                "'region name' is necessary to register system shared memory region"
            )
        request = json_object_body(body)
        key = request.get("key")
        if "key" not in request:
            raise InvalidArgument("Shared memory register request has no 'key' field")
        if not isinstance(key, str):
            raise InvalidArgument("Unable to parse 'key': expected a string")
        offset = _uint(request, "offset", required=False)
        byte_size = _uint(request, "byte_size", required=True)
        self.registry.register(client, name, key, offset, byte_size)
        return b""

    def rest_get(self, path: str, client: Client) -> bytes:
        """A GET under a shared memory prefix: the status array as JSON."""
        match = PATH.fullmatch(path)
        if match is None or match["action"] != "status":
            raise NotFound(f"Not found: GET {path}")
        name = match["name"] or ""
        if match["kind"] == "cuda":
            return orjson.dumps(self.cuda_status(client, name))
        return orjson.dumps(self.system_status(client, name))

    # -- gRPC ------------------------------------------------------------------------------

    def grpc_methods(self) -> dict[str, grpc.RpcMethodHandler]:
        def method(handler, request_type: str) -> grpc.RpcMethodHandler:
            return unary_method(handler, _msg(request_type))

        return {
            "SystemSharedMemoryStatus": method(
                self._system_status, "SystemSharedMemoryStatusRequest"
            ),
            "SystemSharedMemoryRegister": method(
                self._system_register, "SystemSharedMemoryRegisterRequest"
            ),
            "SystemSharedMemoryUnregister": method(
                self._system_unregister, "SystemSharedMemoryUnregisterRequest"
            ),
            "CudaSharedMemoryStatus": method(self._cuda_status, "CudaSharedMemoryStatusRequest"),
            "CudaSharedMemoryRegister": method(
                self._cuda_register, "CudaSharedMemoryRegisterRequest"
            ),
            "CudaSharedMemoryUnregister": method(
                self._cuda_unregister, "CudaSharedMemoryUnregisterRequest"
            ),
        }

    async def _system_status(self, request: Message, context) -> Message:
        regions = self.system_status(grpc_client(context.peer()), request.name)
        return json_format.ParseDict(
            {"regions": {region["name"]: region for region in regions}},
            _msg("SystemSharedMemoryStatusResponse")(),
        )

    async def _system_register(self, request: Message, context) -> Message:
        self.registry.register(
            grpc_client(context.peer()),
            request.name,
            request.key,
            request.offset,
            request.byte_size,
        )
        return _msg("SystemSharedMemoryRegisterResponse")()

    async def _system_unregister(self, request: Message, context) -> Message:
        self.registry.unregister(grpc_client(context.peer()), request.name)
        return _msg("SystemSharedMemoryUnregisterResponse")()

    async def _cuda_status(self, request: Message, context) -> Message:
        self.cuda_status(grpc_client(context.peer()), request.name)
        return _msg("CudaSharedMemoryStatusResponse")()

    async def _cuda_register(self, request: Message, context) -> Message:
        self.cuda_register(grpc_client(context.peer()), request.name)
        return _msg("CudaSharedMemoryRegisterResponse")()  # unreachable: register raises

    async def _cuda_unregister(self, request: Message, context) -> Message:
        self.cuda_unregister(grpc_client(context.peer()), request.name)
        return _msg("CudaSharedMemoryUnregisterResponse")()
