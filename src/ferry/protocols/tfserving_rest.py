"""TensorFlow Serving's REST API, answered as TF Serving answers it.

Paths (TF Serving's grammar, matched case-insensitively under `/v1/`):
  GET  /v1/models/{m}[/versions/{v} | /labels/{l}]            model status
  GET  /v1/models/{m}[/versions/{v} | /labels/{l}]/metadata   signature defs
  POST /v1/models/{m}[/versions/{v} | /labels/{l}]:predict    inference
  POST ...:classify, ...:regress      tf.Example inputs, for classify/regress signatures
and ferry's additions: GET /v1/models (every model, its versions and states).
Errors are `{"error": "..."}` with TF Serving's status-code-to-HTTP mapping.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from urllib.parse import unquote

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferry.codecs.example_tasks import check_predict_method, example_task
from ferry.codecs.float_rows import decoded_by_front
from ferry.codecs.tf_example import examples_from_json, results_json, serialized_examples
from ferry.codecs.tfserving_json import (
    DecodedPredict,
    PredictBody,
    encode_predict_response,
    parse_json,
    signature_name_of,
)
from ferry.errors import FerryError, InvalidArgument, NotFound, unexpected
from ferry.inference import InferenceService
from ferry.manager import ModelManager
from ferry.protocols.http_util import (
    JSON,
    Answer,
    Receive,
    Scope,
    Send,
    answer_post,
    read_body,
)
from ferry.protocols.request_encoding import decoded_body, inflates_too_large, tfserving_coding
from ferry.protocols.rest_answers import (
    JSON_MEDIA_TYPE,
    PRETTY,
    error_parts,
    error_response,
    version_status,
)
from ferry.served_version import ServedVersion
from ferry.tensor_limits import RequestLimits
from ferry.tensors import TensorSpec, tf_dtype_name
from ferry.tfserving_messages import rest_version

log = logging.getLogger(__name__)

_NAME = r"(?P<model>[^/:]+)"
_VERSION_OR_LABEL = r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
_POST_PATH = re.compile(
    rf"/v1/models/{_NAME}{_VERSION_OR_LABEL}:(?P<method>[A-Za-z]+)", re.IGNORECASE
)
_GET_PATH = re.compile(
    rf"/v1/models/{_NAME}{_VERSION_OR_LABEL}(?P<metadata>/metadata)?", re.IGNORECASE
)


def _json(body: object) -> Response:
    return Response(orjson.dumps(body, option=PRETTY), media_type=JSON_MEDIA_TYPE)


@dataclass(frozen=True)
class ExampleRequest:
    """Where a classify or regress request goes: API label (metrics), model, version or
    label, and the method (`classify` or `regress`)."""

    api: str
    model: str
    version: int | None
    label: str | None
    method: str


async def classify_or_regress(
    inference: InferenceService,
    limits: RequestLimits,
    request: ExampleRequest,
    body: object,
    check_method_names: bool = False,
) -> bytes:
    """TF Serving's `:classify` / `:regress` answer to a parsed JSON body: the examples
    become the signature's serialized tf.Example input and take the Predict path;
    `{"results": [...]}` comes back. The body is read before the signature is looked at,
    as TF Serving does. Shared by this API and SageMaker's `tfs-method` (the container
    forwards the same JSON to TF Serving's REST API)."""
    budget = limits.budget()
    examples = examples_from_json(body, budget)
    signature_name = signature_name_of(body)

    def decode(served: ServedVersion) -> tuple[str, dict]:
        task = example_task(served.signatures, signature_name, request.method, check_method_names)
        return task.signature_name, task.feeds(serialized_examples(examples, budget=budget))

    prediction = await inference.predict(
        request.api, request.model, request.version, request.label, decode
    )
    results = results_json(request.method, prediction.outputs, len(examples))
    return orjson.dumps({"results": results}, option=PRETTY)


class TFServingRest:
    """Route handlers for TF Serving's REST API over one manager and inference service."""

    def __init__(
        self,
        manager: ModelManager,
        inference: InferenceService,
        limits: RequestLimits,
        *,
        check_method_names: bool = False,
    ) -> None:
        self.manager = manager
        self.inference = inference
        self.limits = limits
        # --enable_signature_method_name_check (ferry.codecs.example_tasks).
        self.check_method_names = check_method_names

    def routes(self) -> list[Route]:
        return [
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/{rest:path}", self.dispatch, methods=["GET"]),
        ]

    async def dispatch(self, request: Request) -> Response:
        """GET requests under /v1/ (POSTs take the plain-ASGI path, `handle_post`)."""
        path = request.url.path
        try:
            match = _GET_PATH.fullmatch(unquote(path))
            if match is None or request.method != "GET":
                raise InvalidArgument(f"Malformed request: {request.method} {path}")
            return self._get(match)
        except FerryError as exc:
            return error_response(exc)
        except Exception as exc:  # a bug must cost one request, never the server
            log.exception("unexpected error serving %s %s", request.method, path)
            return error_response(unexpected(exc))

    async def handle_post(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every POST under /v1/: `:predict`, and TF Serving's errors for the rest."""
        await answer_post(scope, send, self._post(scope, receive), error_parts)

    async def _post(self, scope: Scope, receive: Receive) -> Answer:
        path = scope["path"]
        match = _POST_PATH.fullmatch(unquote(path) if "%" in path else path)
        if match is None:
            raise InvalidArgument(f"Malformed request: POST {path}")
        method = match["method"].lower()
        if method not in ("predict", "classify", "regress"):
            raise InvalidArgument(f"Malformed request: POST {path}")
        version = rest_version(match["version"])  # the path's errors first, as TF Serving
        limit = self.limits.max_request_bytes
        raw = await read_body(scope, receive, limit)
        raw = await decoded_body(raw, tfserving_coding(scope), limit, inflates_too_large)
        if method != "predict":
            answer = await self._classify_or_regress(method, match, version, parse_json(raw))
            return answer, JSON, []
        body = PredictBody(raw, decoded_by_front(scope))
        decoded: DecodedPredict | None = None

        def decode(served: ServedVersion) -> tuple[str, dict]:
            nonlocal decoded
            decoded = body.decode(served.signatures, self.limits.budget())
            check_predict_method(served.signatures[decoded.signature_name], self.check_method_names)
            return decoded.signature_name, decoded.inputs

        prediction = await self.inference.predict(
            "rest", match["model"], version, match["label"], decode
        )
        assert decoded is not None
        return encode_predict_response(prediction.outputs, decoded.format), JSON, []

    async def _classify_or_regress(
        self, method: str, match: re.Match[str], version: int | None, body: object
    ) -> bytes:
        """`:classify` / `:regress` (see `classify_or_regress`)."""
        return await classify_or_regress(
            self.inference,
            self.limits,
            ExampleRequest("rest", match["model"], version, match["label"], method),
            body,
            self.check_method_names,
        )

    def _get(self, match: re.Match[str]) -> Response:
        model, label = match["model"], match["label"]
        version = rest_version(match["version"])
        if match["metadata"]:
            served = self.manager.acquire(model, version, label)
            try:
                return _json(_metadata(served))
            finally:
                served.release()
        records = self.manager.version_status(model, version, label)
        return _json({"model_version_status": [version_status(r) for r in records]})

    async def list_models(self, request: Request) -> Response:
        models = []
        for name in self.manager.model_names():
            try:
                records = self.manager.version_status(name)
            except NotFound:
                records = []
            storage = self.manager.storage_status(name)
            models.append(
                {
                    "name": name,
                    "model_version_status": [version_status(r) for r in records],
                    "version_labels": {k: str(v) for k, v in self.manager.labels(name).items()},
                    # ferry addition: whether the model's storage answers. An error here
                    # leaves the versions above serving; the storage is retried.
                    "storage_status": {
                        "error_code": storage.error_code.name if storage else "OK",
                        "error_message": storage.error_message if storage else "",
                    },
                }
            )
        return _json({"models": models})


def _tensor_info(spec: TensorSpec) -> dict:
    shape = (
        {"dim": [], "unknown_rank": True}
        if spec.shape is None
        else {
            "dim": [{"size": str(d), "name": ""} for d in spec.shape],
            "unknown_rank": False,
        }
    )
    # The graph tensor's name (`x:0`) where the model has one, as TF Serving reports it.
    return {"dtype": tf_dtype_name(spec.dtype), "tensor_shape": shape, "name": spec.reported_name}


def _metadata(served: ServedVersion) -> dict:
    signature_defs = {
        name: {
            "inputs": {n: _tensor_info(s) for n, s in sig.inputs.items()},
            "outputs": {n: _tensor_info(s) for n, s in sig.outputs.items()},
            "method_name": sig.method_name,
            "defaults": {},
        }
        for name, sig in served.signatures.items()
    }
    return {
        "model_spec": {
            "name": served.model_name,
            "signature_name": "",
            "version": str(served.version),
        },
        "metadata": {"signature_def": {"signature_def": signature_defs}},
    }
