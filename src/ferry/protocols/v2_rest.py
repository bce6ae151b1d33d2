"""The Open Inference Protocol ("KServe V2") over HTTP, with Triton's extensions.

Paths (case-sensitive, as in the protocol):
  GET  /v2                                          server metadata and extensions
  GET  /v2/health/live, /v2/health/ready            liveness, readiness (a 503 says why)
  GET  /v2/models/{m}[/versions/{v}]                model metadata
  GET  /v2/models/{m}[/versions/{v}]/ready          model readiness (200 or 400)
  GET  /v2/models/{m}[/versions/{v}]/config         Triton model configuration
  GET  /v2/models[/{m}[/versions/{v}]]/stats        Triton statistics
  POST /v2/models/{m}[/versions/{v}]/infer          inference (JSON and binary tensors)
  POST /v2/repository/index                         model repository index
  POST /v2/repository/models/{m}/load | /unload     load or unload a model
  /v2/systemsharedmemory/..., /v2/cudasharedmemory/... Triton's shared memory APIs
                                                    (ferry.protocols.v2_shared_memory_api)
Errors are `{"error": "..."}` with the HTTP status of the error's code.

POSTs take the plain-ASGI path (`handle_post`), like TF Serving's predict; GETs go
through Starlette.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferry import triton_messages
from ferry.codecs.classification import ClassificationRequest
from ferry.codecs.v2 import (
    check_against,
    check_outputs,
    decode_rest_request,
    encode_rest_response,
    parsed_by_front,
)
from ferry.errors import FerryError, InvalidArgument, NotFound, UnsupportedEncoding, unexpected
from ferry.inference import InferenceService
from ferry.protocols.http_util import (
    JSON,
    Answer,
    Receive,
    Scope,
    Send,
    answer_post,
    header,
    json_object_body,
    read_body,
)
from ferry.protocols.request_encoding import decoded_body, v2_coding
from ferry.protocols.response_encoding import ResponseCompression
from ferry.protocols.rest_answers import error_parts, error_response
from ferry.protocols.shared_memory import ClientRegions, rest_client
from ferry.protocols.v2_models import (
    V2Models,
    classification_labels,
    is_batched,
    signature_name_of,
    signature_of,
)
from ferry.protocols.v2_shared_memory_api import PREFIXES as _SHM_PREFIXES
from ferry.protocols.v2_shared_memory_api import SharedMemoryApi
from ferry.protocols.v2_unsupported import refuse_sequence_rest
from ferry.readiness import READINESS_HEADER
from ferry.served_version import ServedVersion
from ferry.tensor_limits import RequestLimits

log = logging.getLogger(__name__)

PREFIX = "/v2/"
_MODEL = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>\d+))?"
_INFER_PATH = re.compile(rf"{_MODEL}/infer")
_GET_PATH = re.compile(rf"{_MODEL}(?P<what>/ready|/config|/stats)?")
_REPOSITORY_PATH = re.compile(r"/v2/repository/models/(?P<model>[^/]+)/(?P<action>load|unload)")
_HEADER_LENGTH = b"inference-header-content-length"
_JSON = "application/json"


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON)


def _version(match: re.Match[str]) -> int | None:
    return int(match["version"]) if match["version"] else None


def _v2_error_parts(error: FerryError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The shared `{"error": ...}` form, plus Triton's Accept-Encoding on a 501 for a
    Content-Encoding it cannot decode."""
    status, body, headers = error_parts(error)
    if isinstance(error, UnsupportedEncoding):
        headers = [*headers, (b"accept-encoding", triton_messages.ACCEPTED_ENCODINGS)]
    return status, body, headers


class V2Rest:
    """Route handlers for the V2 REST API over one inference service."""

    def __init__(
        self,
        models: V2Models,
        inference: InferenceService,
        limits: RequestLimits,
        shared_memory: SharedMemoryApi | None = None,
        compression: ResponseCompression | None = None,
    ) -> None:
        self.models = models
        self.inference = inference
        self.limits = limits
        self.shared_memory = shared_memory
        # Inference answers compressed as Accept-Encoding asks (ferry.protocols.response_encoding).
        self.compression = compression or ResponseCompression()

    def routes(self) -> list[Route]:
        return [
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2/models/stats", self.all_stats, methods=["GET"]),
            Route("/v2/models/{rest:path}", self.model_get, methods=["GET"]),
            Route("/v2/systemsharedmemory/{rest:path}", self.shm_get, methods=["GET"]),
            Route("/v2/cudasharedmemory/{rest:path}", self.shm_get, methods=["GET"]),
        ]

    # -- GET --------------------------------------------------------------------------------

    async def server_metadata(self, request: Request) -> Response:
        return _json(self.models.server_metadata())

    async def live(self, request: Request) -> Response:
        return Response(b"", status_code=200)

    async def ready(self, request: Request) -> Response:
        """200 when the server is ready (ferry.readiness: started, not draining, the
        models serving as --ready_when asks), so a rolling update sends no traffic to a
        server still loading, missing a model or already draining. A 503 says why in
        Triton's error body and names its phase in the `ferry-readiness` header."""
        verdict = self.models.readiness()
        if verdict.ready:
            return Response(b"", status_code=200)
        return Response(
            orjson.dumps({"error": f"not ready: {verdict.reason}"}),
            status_code=503,
            media_type="application/json",
            headers={READINESS_HEADER: verdict.phase.value},
        )

    async def all_stats(self, request: Request) -> Response:
        return _json(self.models.statistics(None, None))

    async def model_get(self, request: Request) -> Response:
        path = unquote(request.url.path)
        try:
            match = _GET_PATH.fullmatch(path)
            if match is None:
                raise triton_messages.route_not_found()
            model, version, what = match["model"], _version(match), match["what"]
            if what == "/ready":
                if self.models.model_ready(model, version):
                    return Response(b"", status_code=200)
                return _json({"error": triton_messages.MODEL_NOT_READY}, 400)
            if what == "/config":
                return _json(self.models.model_config(model, version))
            if what == "/stats":
                return _json(self.models.statistics(model, version))
            return _json(self.models.model_metadata(model, version))
        except FerryError as exc:
            return error_response(exc)
        except Exception as exc:  # a bug must cost one request, never the server
            log.exception("unexpected error serving GET %s", path)
            return error_response(unexpected(exc))

    async def shm_get(self, request: Request) -> Response:
        """Shared memory status (Triton's GET .../status)."""
        try:
            if self.shared_memory is None:
                raise NotFound(f"Not found: GET {request.url.path}")
            client = rest_client(request.scope.get("client"))
            body = self.shared_memory.rest_get(unquote(request.url.path), client)
            return Response(body, media_type=_JSON)
        except FerryError as exc:
            return error_response(exc)

    # -- POST (plain ASGI) --------------------------------------------------------------------

    async def handle_post(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every POST under /v2/: inference and the repository extension."""
        await answer_post(scope, send, self._post(scope, receive), _v2_error_parts)

    async def _post(self, scope: Scope, receive: Receive) -> Answer:
        path = scope["path"]
        if "%" in path:
            path = unquote(path)
        match = _INFER_PATH.fullmatch(path)
        if match is None and self.shared_memory is not None and path.startswith(_SHM_PREFIXES):
            body = await read_body(scope, receive, self.limits.max_request_bytes)
            client = rest_client(scope.get("client"))
            return self.shared_memory.rest_post(path, body, client), JSON, []
        if match is None:
            return await self._repository(scope, receive, path), JSON, []
        body, header_length = await self._infer(scope, receive, match)
        # Triton compresses a successful inference answer only; the header length still
        # counts the JSON header as it was before compression.
        body, encoding = await self.compression.encode(scope, body)
        if header_length is None:
            return body, JSON, encoding
        length = (_HEADER_LENGTH, str(header_length).encode())
        return body, b"application/octet-stream", [length, *encoding]

    async def _infer(
        self, scope: Scope, receive: Receive, match: re.Match[str]
    ) -> tuple[bytes, int | None]:
        # Triton's order: the body's encoding, the header length, the model, the body.
        limit = self.limits.max_request_bytes
        body = await read_body(scope, receive, limit)  # all of it, so the connection stays usable
        coding = v2_coding(scope, triton_messages.unsupported_compression)
        body = await decoded_body(body, coding, limit, triton_messages.decompressed_too_large)
        raw_length = header(scope, _HEADER_LENGTH)
        header_length = None
        if raw_length is not None:
            if not raw_length.strip().isdigit():
                raise triton_messages.header_length_unparsed(raw_length.decode("latin-1"))
            header_length = int(raw_length)
        model, version = match["model"], _version(match)
        self.models.acquire(model, version).release()  # an unknown model: Triton's error
        regions = (
            ClientRegions(self.shared_memory.registry, rest_client(scope.get("client")))
            if self.shared_memory is not None
            else None
        )
        request = decode_rest_request(
            body,
            header_length,
            self.limits.budget(),
            model,
            regions=regions,
            parsed=parsed_by_front(scope),
        )
        refuse_sequence_rest(request.parameters)
        classes = ClassificationRequest(request.class_counts) if request.class_counts else None

        def decode(served: ServedVersion) -> tuple[str, dict]:
            signature = signature_of(served)
            check_against(signature, request.inputs, model, request.id or "", is_batched(served))
            if request.outputs is not None:
                check_outputs(signature, request.outputs, model)
            if classes is not None:
                classes.bind(classification_labels(served), is_batched(served))
            return signature_name_of(served), request.inputs

        try:
            prediction = await self.inference.predict(
                "v2_rest", model, version, None, decode, request.timeout_seconds
            )
        except NotFound:  # the version went away since the check above
            raise self.models.lookup_error(model, version) from None
        outputs = prediction.outputs if classes is None else classes.apply(prediction.outputs)
        return encode_rest_response(prediction.model, prediction.version, outputs, request)

    async def _repository(self, scope: Scope, receive: Receive, path: str) -> bytes:
        match = _REPOSITORY_PATH.fullmatch(path)
        if match is None and path != "/v2/repository/index":
            raise triton_messages.route_not_found()  # before the body, as Triton routes
        body = await read_body(scope, receive, self.limits.max_request_bytes)
        options = json_object_body(body)
        if match is None:
            ready = options.get("ready") is True
            return orjson.dumps(self.models.repository_index(ready))
        if match["action"] == "load":
            parameters = options.get("parameters", {})
            if not isinstance(parameters, dict):
                raise InvalidArgument("'parameters' of a load request must be an object")
            await self.models.load(match["model"], parameters)
        else:
            await self.models.unload(match["model"])
        return b""
