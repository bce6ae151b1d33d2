"""What every ferry gRPC method shares: parse the request bytes, call the handler, and
answer a failure as a gRPC status.

Handlers receive raw bytes (no grpc deserializer) so that a corrupt message gets
INVALID_ARGUMENT with the reason rather than grpc's own opaque failure. FerryError codes
are the canonical status codes, which have gRPC's numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError, Message

from ferry.errors import FerryError, InvalidArgument, unexpected

log = logging.getLogger(__name__)

GRPC_CODE = {code.value[0]: code for code in grpc.StatusCode}

Handler = Callable[[Message, grpc.aio.ServicerContext], Awaitable[Message]]


def unary_method(handler: Handler, request_class: type[Message]) -> grpc.RpcMethodHandler:
    """A unary grpc.aio method around `handler`, which takes and returns parsed messages."""
    request_type = request_class.DESCRIPTOR.name

    async def answer(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            try:
                request = request_class.FromString(data)
            except DecodeError as exc:
                raise InvalidArgument(
                    f"Could not parse {request_type}: not a valid {request_type} message ({exc})"
                ) from None
            response = await handler(request, context)
            return response.SerializeToString()
        except FerryError as exc:
            error = exc
        except grpc.aio.AbortError:
            raise  # the handler answered with its own status
        except Exception as exc:  # a bug must cost one request, never the server
            log.exception("unexpected error serving %s", request_type)
            error = unexpected(exc)
        await context.abort(GRPC_CODE.get(error.code.value, grpc.StatusCode.UNKNOWN), error.message)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    return grpc.unary_unary_rpc_method_handler(answer)
