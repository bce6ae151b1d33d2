"""gRPC's standard health service (`grpc.health.v1.Health/Check`), as TF Serving serves it
with `--enable_grpc_healthcheck_service`: the server as a whole ("") and TF Serving's two
service names answer SERVING while ferry is ready (ferry.readiness: started, its models
serving as --ready_when asks, not draining), else NOT_SERVING; any other name is
NOT_FOUND, as in gRPC's own health service (TF Serving uses that one).

Watch is not served (UNIMPLEMENTED): a stream per watcher held open for ever would take
a share of `--grpc_max_concurrent_rpcs` from the APIs; Kubernetes probes and
grpc_health_probe use Check.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from google.protobuf.message import Message

from ferry.errors import NotFound
from ferry.protocols.grpc_util import unary_method
from ferry.protos import message_class

SERVICE = "grpc.health.v1.Health"
# The names TF Serving registers (server.cc), and "" for the server as a whole.
SERVICE_NAMES = frozenset({"", "ModelService", "PredictionService"})
_SERVING, _NOT_SERVING = 1, 2


class GrpcHealth:
    """Answers Check from `is_serving` (ferry's readiness: models tried, not shutting down)."""

    def __init__(self, is_serving: Callable[[], bool]) -> None:
        self.is_serving = is_serving
        self._response = message_class("grpc.health.v1.HealthCheckResponse")

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        request = message_class("grpc.health.v1.HealthCheckRequest")
        methods = {"Check": unary_method(self.check, request)}
        return [grpc.method_handlers_generic_handler(SERVICE, methods)]

    async def check(self, request: Message, context: grpc.aio.ServicerContext) -> Message:
        if request.service not in SERVICE_NAMES:
            raise NotFound("service name unknown")  # gRPC C++'s words
        return self._response(status=_SERVING if self.is_serving() else _NOT_SERVING)
