"""The SageMaker container contract, answered as the SageMaker TensorFlow Serving
container answers it.

  GET  /ping         200 (empty body) when ready (ferry.readiness), else 503
  POST /invocations  one prediction; the payload's Content-Type says how to read it
                     (application/json, application/jsonlines, text/csv: see
                     `ferry.codecs.sagemaker_payload`), Accept how to answer

Which model, version and method: the `X-Amzn-SageMaker-Custom-Attributes` header's
`tfs-model-name`, `tfs-model-version` and `tfs-method` keys (comma-separated `key=value`
pairs, other keys ignored). Without `tfs-model-name` the default model answers:
`SAGEMAKER_TFS_DEFAULT_MODEL_NAME` when set, else the first model by name (the
container takes the first it finds on disk, an order it does not define). Without
`tfs-model-version` the newest version answers.

`tfs-method=classify|regress` runs TF Serving's `:classify`/`:regress` on the same JSON
(`{"signature_name": ..., "examples": [...]}`), as the container forwards it.

Responses are TF Serving's JSON; with a JSON type in Accept the same JSON comes on one
line, typed as the first type listed (`application/jsonlines`, ...), as from the
container. Errors are TF Serving's `{"error": "..."}` with its status codes, plus 415
for an unsupported Content-Type.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferry.codecs.example_tasks import CLASSIFY, REGRESS
from ferry.codecs.float_rows import decoded_by_front
from ferry.codecs.json_parser import parse_json
from ferry.codecs.sagemaker_payload import (
    CONTENT_TYPES,
    JSON,
    JSON_LINES,
    JSONS,
    invocation_body,
    to_predict_body,
)
from ferry.codecs.tfserving_json import (
    DecodedPredict,
    PredictBody,
    decode_predict_body,
    encode_predict_response,
)
from ferry.errors import FerryError, InvalidArgument, NotFound
from ferry.inference import InferenceService
from ferry.manager import ModelManager
from ferry.protocols.http_util import (
    Answer,
    Receive,
    Scope,
    Send,
    answer_post,
    header,
    read_body,
)
from ferry.protocols.rest_answers import error_parts
from ferry.protocols.sagemaker_handlers import (
    Context,
    HandlerResponse,
    InferenceHandlers,
    LoopbackAddress,
)
from ferry.protocols.tfserving_rest import ExampleRequest, classify_or_regress
from ferry.served_version import ServedVersion
from ferry.tensor_limits import RequestLimits

INVOCATIONS_PATH = "/invocations"
PING_PATH = "/ping"
CUSTOM_ATTRIBUTES = b"x-amzn-sagemaker-custom-attributes"
# The container's pattern for one attribute; anything between matches is ignored.
_ATTRIBUTE = re.compile(r"tfs-[a-z\-]+=[^,]+")


@dataclass(frozen=True)
class SageMakerOptions:
    """`ferry serve --sagemaker` settings beyond the model folder (which is the catalog's)."""

    # The model that answers requests without `tfs-model-name` (empty: the first by name).
    default_model: str = ""
    # `code/inference.py`'s handlers, run around every request (None: no such file).
    handlers: InferenceHandlers | None = None


class UnsupportedMediaType(FerryError):
    """The request's Content-Type is none that /invocations reads (HTTP 415)."""

    code = InvalidArgument.code


class _PathNotFound(FerryError):
    """A POST to a path that only starts with /invocations (HTTP 404, as nginx answers)."""

    code = NotFound.code


class SageMakerInvocations:
    """/ping and /invocations over one manager and inference service."""

    def __init__(
        self,
        manager: ModelManager,
        inference: InferenceService,
        limits: RequestLimits,
        options: SageMakerOptions,
        server_ready: Callable[[], bool],
        loopback: LoopbackAddress | None = None,
    ) -> None:
        self.manager = manager
        self.inference = inference
        self.limits = limits
        self.options = options
        self._server_ready = server_ready
        # Where inference.py's handlers reach this server (Context.rest_uri, .channel).
        self.loopback = loopback

    def routes(self) -> list[Route]:
        return [Route(PING_PATH, self.ping, methods=["GET"])]

    def is_healthy(self) -> bool:
        """Ready for traffic: the server's one verdict (ferry.readiness), so /ping and
        /v2/health/ready agree. By default every model found (at least one) must serve a
        version: stricter than "the default model is AVAILABLE" (the container's check)
        because the container's TF Serving exits at start-up when any model fails to
        load, so a model that cannot serve keeps that endpoint out of service too."""
        return self._server_ready()

    async def ping(self, request: Request) -> Response:
        return Response(b"", status_code=200 if self.is_healthy() else 503)

    async def handle_post(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /invocations (registered as a fast-path prefix, so other paths that
        merely start with it are answered 404 here)."""
        await answer_post(scope, send, self._invoke(scope, receive), container_error_parts)

    async def _invoke(self, scope: Scope, receive: Receive) -> Answer:
        if scope["path"] != INVOCATIONS_PATH:
            raise _PathNotFound("Not Found")
        body, content_type = await self.invoke(scope, receive, "sagemaker")
        return body, content_type, []

    async def invoke(
        self,
        scope: Scope,
        receive: Receive,
        api: str,
        model: str | None = None,
        label: str | None = None,
    ) -> tuple[bytes, bytes]:
        """One prediction from a SageMaker payload: (response body, its Content-Type).

        Shared by /invocations and the runtime API (`ferry.protocols.sagemaker_runtime`),
        so both read payloads and custom attributes the same way. `model` (when given)
        wins over `tfs-model-name`; `label` picks a version label when no
        `tfs-model-version` is given. Raises FerryError (UnsupportedMediaType for 415).
        """
        handlers = self.options.handlers
        content_type = media_type(header(scope, b"content-type"))
        # An input_handler decides itself which payloads it reads.
        if content_type not in CONTENT_TYPES and not (handlers and handlers.reads_any_payload):
            shown = (header(scope, b"content-type") or b"Unknown").decode("latin-1")
            raise UnsupportedMediaType(f"Unsupported Media Type: {shown}")
        attributes = custom_attributes(header(scope, CUSTOM_ATTRIBUTES))
        model = model or attributes.get("tfs-model-name") or self._default_model()
        version = _version(attributes.get("tfs-model-version"))
        if version is not None:
            label = None
        method = _method(attributes.get("tfs-method", "predict"))
        if handlers is not None:
            return await self._invoke_with_handlers(
                handlers, scope, receive, api, model, version, label, method
            )
        raw = await read_body(scope, receive, self.limits.max_request_bytes)
        if method != "predict":
            # As the container forwards the JSON to TF Serving's `:classify`/`:regress`.
            where = ExampleRequest(api, model, version, label, method)
            request = to_predict_body(raw, content_type)
            body = await classify_or_regress(self.inference, self.limits, where, request)
            return _as_accepted(body, header(scope, b"accept"))
        payload = invocation_body(raw, content_type, decoded_by_front(scope))
        decoded: DecodedPredict | None = None

        def decode(served: ServedVersion) -> tuple[str, dict]:
            nonlocal decoded
            decoded = payload.decode(served.signatures, self.limits.budget())
            return decoded.signature_name, decoded.inputs

        prediction = await self.inference.predict(api, model, version, label, decode)
        assert decoded is not None
        body = encode_predict_response(prediction.outputs, decoded.format)
        return _as_accepted(body, header(scope, b"accept"))

    async def _invoke_with_handlers(
        self,
        handlers: InferenceHandlers,
        scope: Scope,
        receive: Receive,
        api: str,
        model: str,
        version: int | None,
        label: str | None,
        method: str = "predict",
    ) -> tuple[bytes, bytes]:
        """/invocations through `code/inference.py` (see `ferry.protocols.sagemaker_handlers`).

        Handlers are user code that may block, so they run in worker threads, never on
        the event loop."""
        raw = await read_body(scope, receive, self.limits.max_request_bytes)
        context = _handler_context(scope, model, len(raw), self.loopback)
        if handlers.handler is not None:
            answer, answer_type = await asyncio.to_thread(handlers.handle, raw, context)
            return answer, answer_type.encode("latin-1")
        prepared = None
        if handlers.input_handler is not None:
            prepared = await asyncio.to_thread(handlers.prepare, raw, context)
        content_type = media_type(header(scope, b"content-type"))
        decoded: DecodedPredict | None = None

        def decode(served: ServedVersion) -> tuple[str, dict]:
            nonlocal decoded
            budget = self.limits.budget()
            if prepared is not None:
                # Read as TF Serving reads the body the container posts to it.
                decoded = PredictBody(prepared).decode(served.signatures, budget)
            else:
                request = to_predict_body(raw, content_type)
                decoded = decode_predict_body(request, served.signatures, budget)
            return decoded.signature_name, decoded.inputs

        try:
            if method != "predict":
                # The container posts the handler's body to TF Serving's :classify/:regress.
                request = (
                    parse_json(prepared)
                    if prepared is not None
                    else to_predict_body(raw, content_type)
                )
                where = ExampleRequest(api, model, version, label, method)
                answer = await classify_or_regress(self.inference, self.limits, where, request)
            else:
                prediction = await self.inference.predict(api, model, version, label, decode)
                assert decoded is not None
                answer = encode_predict_response(prediction.outputs, decoded.format)
            status = 200
        except FerryError as exc:
            if handlers.output_handler is None:
                raise
            # The handler sees the error as it would see TF Serving's answer.
            status, answer, _ = error_parts(exc)
        if handlers.output_handler is None:
            return answer, JSON.encode()
        response = HandlerResponse(status, answer, {"Content-Type": JSON})
        result, result_type = await asyncio.to_thread(handlers.finish, response, context)
        return result, result_type.encode("latin-1")

    def _default_model(self) -> str:
        if self.options.default_model:
            return self.options.default_model
        names = self.manager.model_names()
        if not names:
            raise NotFound("Servable not found for request: no models are being served")
        return names[0]


def container_error_parts(error: FerryError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """HTTP status, body and extra headers of a failed /invocations request, as the
    container answers it (the runtime API wraps these in a ModelError)."""
    if isinstance(error, _PathNotFound):
        return 404, orjson.dumps({"error": "Not Found"}), []
    if isinstance(error, UnsupportedMediaType):
        return 415, orjson.dumps({"error": error.message}), []
    return error_parts(error)


def _handler_context(
    scope: Scope, model: str, length: int, loopback: LoopbackAddress | None
) -> Context:
    """The container's Context for a request (see `ferry.protocols.sagemaker_handlers`)."""
    raw_attributes = header(scope, CUSTOM_ATTRIBUTES)
    attributes = custom_attributes(raw_attributes)
    version, method = attributes.get("tfs-model-version"), attributes.get("tfs-method")
    return Context(
        model_name=model,
        model_version=version,
        method=method,
        rest_uri=loopback.rest_uri(model, version, method) if loopback else "",
        grpc_port=loopback.grpc_port if loopback else None,
        channel=loopback.channel() if loopback else None,
        custom_attributes=raw_attributes.decode("latin-1") if raw_attributes else None,
        request_content_type=(header(scope, b"content-type") or JSON.encode()).decode("latin-1"),
        accept_header=(header(scope, b"accept") or JSON.encode()).decode("latin-1"),
        content_length=length,
    )


def media_type(value: bytes | None) -> str:
    """The bare, lower-case media type of a Content-Type header (parameters dropped).

    The container compares the whole header, so `application/json; charset=utf-8` gets
    415 there; ferry accepts it, since the parameters change nothing it reads.
    """
    if not value:
        return ""
    return value.decode("latin-1").split(";", 1)[0].strip().lower()


def accepted_type(accept: bytes | None) -> str | None:
    """The media type an answer carries for this Accept header, as the container picks
    it: when the list names a JSON type anywhere, the first type listed (so
    `application/json, application/jsonlines` answers JSON), or application/json when
    the first is not a JSON type (the container would label JSON with it); otherwise
    None (TF Serving's own application/json, the body as it came)."""
    if not accept:
        return None
    kinds = [item.split(";", 1)[0].strip().lower() for item in accept.decode("latin-1").split(",")]
    if not any(kind in (JSON, JSON_LINES, JSONS) for kind in kinds):
        return None
    return kinds[0] if kinds[0] in (JSON, JSON_LINES, JSONS) else JSON


def _as_accepted(body: bytes, accept: bytes | None) -> tuple[bytes, bytes]:
    """TF Serving's JSON answer as the container returns it: with a JSON type accepted,
    on one line (its newlines removed) under that type; else unchanged."""
    kind = accepted_type(accept)
    if kind is None:
        return body, JSON.encode()
    return body.replace(b"\n", b""), kind.encode()


def custom_attributes(value: bytes | None) -> dict[str, str]:
    """The `tfs-*` keys of `X-Amzn-SageMaker-Custom-Attributes`, found as the container
    finds them: every `tfs-name=value` up to the next comma; malformed pairs ignored."""
    if not value:
        return {}
    attributes: dict[str, str] = {}
    for match in _ATTRIBUTE.findall(value.decode("latin-1")):
        parts = match.split("=")
        if len(parts) == 2 and parts[1].strip():
            attributes[parts[0]] = parts[1].strip()
    return attributes


def _version(value: str | None) -> int | None:
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise InvalidArgument(f"tfs-model-version must be a version number, not {value!r}")
    return int(value)


def _method(method: str) -> str:
    """`tfs-method`: predict, or classify / regress, which run as TF Serving's REST API
    runs them (the signature's checks and messages are TF Serving's); anything else is
    malformed, as TF Serving says of a path with another method."""
    if method in ("predict", CLASSIFY, REGRESS):
        return method
    raise InvalidArgument(
        f"Malformed request: tfs-method={method} (expected predict, classify or regress)"
    )
