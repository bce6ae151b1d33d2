"""Triton's `ModelStreamInfer`: a bidirectional stream of ModelInferRequest in and
ModelStreamInferResponse out, for ordinary (non-decoupled) models.

What it keeps, as Triton's stream handler does for non-decoupled models
(src/grpc/stream_infer_handler.cc):
- one response per request, written in the order the requests arrived (requests run
  concurrently, through the same batch queues and limits as unary ModelInfer);
- a failed request is answered with `error_message` and an `infer_response` holding only
  the request's `id`; the stream stays open for the next request;
- the stream ends (OK) after the client half-closes and every answer is written.

What it adds: at most `max_in_flight` requests of one stream are read and not yet
answered (`--grpc_max_in_flight_per_stream`). At the bound the handler stops reading,
so gRPC's flow control pushes back on the client instead of the server queueing
unbounded work for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError, Message

from ferry.errors import FerryError, unexpected
from ferry.protos import message_class

log = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = 16

Infer = Callable[[Message, grpc.aio.ServicerContext], Awaitable[Message]]
_END = None  # what the reader queues after the client's last request


class ModelStream:
    """The ModelStreamInfer method over a unary infer handler (V2Grpc.model_infer)."""

    def __init__(self, infer: Infer, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self.infer = infer
        self.max_in_flight = max_in_flight
        self.request_class = message_class("inference.ModelInferRequest")
        self.response_class = message_class("inference.ModelStreamInferResponse")

    def method(self) -> grpc.RpcMethodHandler:
        """A stream-stream grpc.aio handler on raw bytes (ferry parses the messages)."""
        return grpc.stream_stream_rpc_method_handler(self.answer)

    async def answer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Read requests, run each as it arrives, yield their answers in order."""
        slots = asyncio.Semaphore(self.max_in_flight)
        pending: asyncio.Queue[asyncio.Task[bytes] | None] = asyncio.Queue()
        reader = asyncio.ensure_future(self._read(requests, context, slots, pending))
        try:
            while True:
                task = await pending.get()
                if task is _END:
                    break
                try:
                    yield await task
                finally:
                    slots.release()
            await reader  # re-raises what ended the reader, if anything
        finally:
            reader.cancel()
            while not pending.empty():
                task = pending.get_nowait()
                if task is not _END:
                    task.cancel()

    async def _read(
        self,
        requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
        slots: asyncio.Semaphore,
        pending: asyncio.Queue,
    ) -> None:
        try:
            while True:
                await slots.acquire()  # at the bound: stop reading until an answer is out
                try:
                    data = await anext(requests)
                except StopAsyncIteration:
                    slots.release()
                    break
                pending.put_nowait(asyncio.ensure_future(self._one(data, context)))
        finally:
            pending.put_nowait(_END)

    async def _one(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """One request's answer, serialized; never raises (errors are answers)."""
        request_id = ""
        try:
            try:
                request = self.request_class.FromString(data)
            except DecodeError as exc:
                return self._error(
                    f"Could not parse ModelInferRequest: not a valid ModelInferRequest "
                    f"message ({exc})",
                    "",
                )
            request_id = request.id
            response = await self.infer(request, context)
            return self.response_class(infer_response=response).SerializeToString()
        except FerryError as exc:
            return self._error(exc.message, request_id)
        except Exception as exc:  # a bug must cost one request, never the stream
            log.exception("unexpected error serving a ModelStreamInfer request")
            return self._error(unexpected(exc).message, request_id)

    def _error(self, message: str, request_id: str) -> bytes:
        response = self.response_class(error_message=message)
        response.infer_response.id = request_id
        return response.SerializeToString()
