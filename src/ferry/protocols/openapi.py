"""An OpenAPI 3.1 description of ferry's REST endpoints, served at `/openapi.json`, and a
page that shows it at `/docs`.

Why data in one place, filtered by the routes: ferry registers its HTTP endpoints in two
ways (Starlette routes for the GETs, path prefixes for the plain-ASGI POSTs; see
ferry.server.HttpApp), and which are there depends on the flags (`--sagemaker`, a
multi-model endpoint, the Prometheus path). `OPERATIONS` lists every operation ferry
can answer; `registered_operations` keeps those that the running server's routes and
prefixes actually reach, so the spec a server serves describes that server. A route
with no operation here, or an operation no route reaches, fails
tests/protocols/test_openapi_routes.py, so the two cannot drift apart.

Schemas describe what ferry sends and accepts, permissively where the wire formats are
open (a tensor's `data` is any nested list); tests/protocols/test_openapi_schemathesis.py
checks a real server's answers against them with schemathesis.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Match, Route

from ferry.distribution import installed_version
from ferry.protocols.dashboard import DASHBOARD_PATH, STATUS_PATH
from ferry.protocols.openapi_page import DOCS_HTML
from ferry.protocols.sagemaker import INVOCATIONS_PATH, PING_PATH
from ferry.protocols.sagemaker_mme import MODELS_PATH
from ferry.protocols.sagemaker_runtime import RUNTIME_PREFIX

OPENAPI_PATH = "/openapi.json"
DOCS_PATH = "/docs"
OPENAPI_VERSION = "3.1.0"
# A placeholder path, replaced by the server's Prometheus path (--monitoring_config_file).
METRICS_PLACEHOLDER = "{metrics}"

JsonSchema = dict[str, Any]

TFS = "TensorFlow Serving REST"
V2 = "KServe V2 / Triton REST"
SHM = "Triton shared memory"
SAGEMAKER = "SageMaker container"
MME = "SageMaker multi-model endpoint"
RUNTIME = "SageMaker runtime API"
OPS = "Status, metrics and docs"

# Sample values that stand in for path parameters when matching a path against routes.
_SAMPLES = {
    "model_name": "m",
    "version": "1",
    "label": "stable",
    "region_name": "r",
    "endpoint_name": "e",
}
_PARAMETER = re.compile(r"\{(\w+)\}")

# -- schemas ------------------------------------------------------------------------------

_NAME_SCHEMA: JsonSchema = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}
_PARAMETER_SCHEMAS: dict[str, JsonSchema] = {
    "model_name": _NAME_SCHEMA,
    "version": {"type": "integer", "minimum": 0, "maximum": 2**62},
    "label": _NAME_SCHEMA,
    "region_name": _NAME_SCHEMA,
    "endpoint_name": _NAME_SCHEMA,
}
_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
_MESSAGE_ERROR = {
    "type": "object",
    "properties": {"message": {"type": "string"}},
    "required": ["message"],
}
_ERROR_CODE = {
    "type": "object",
    "properties": {"error_code": {"type": "string"}, "error_message": {"type": "string"}},
}
_VERSION_STATUS = {
    "type": "object",
    "properties": {
        "version": {"type": "string"},
        "state": {"type": "string"},
        "status": {"$ref": "#/components/schemas/StatusCode"},
    },
    "required": ["version", "state"],
}
_MODEL_STATUS = {
    "type": "object",
    "properties": {
        "model_version_status": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/VersionStatus"},
        }
    },
    "required": ["model_version_status"],
}
_MODEL_LIST = {
    "type": "object",
    "properties": {
        "models": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "model_version_status": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/VersionStatus"},
                    },
                    "version_labels": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                    },
                    "storage_status": {"$ref": "#/components/schemas/StatusCode"},
                },
                "required": ["name", "model_version_status"],
            },
        }
    },
    "required": ["models"],
}
_MODEL_METADATA = {
    "type": "object",
    "properties": {
        "model_spec": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "signature_name": {"type": "string"},
                "version": {"type": "string"},
            },
        },
        "metadata": {
            "type": "object",
            "properties": {"signature_def": {"type": "object"}},
        },
    },
    "required": ["model_spec", "metadata"],
}
_PREDICT_REQUEST = {
    "type": "object",
    "description": "Row format (`instances`) or columnar format (`inputs`), TF Serving's.",
    "properties": {
        "signature_name": {"type": "string"},
        "instances": {"type": "array"},
        "inputs": {},
    },
}
_PREDICT_RESPONSE = {
    "type": "object",
    "description": "`predictions` for a row-format request, `outputs` for a columnar one.",
    "properties": {"predictions": {}, "outputs": {}},
}
_EXAMPLE_REQUEST = {
    "type": "object",
    "properties": {
        "signature_name": {"type": "string"},
        "context": {"type": "object"},
        "examples": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["examples"],
}
_EXAMPLE_RESPONSE = {
    "type": "object",
    "properties": {"results": {"type": "array"}},
    "required": ["results"],
}
_V2_TENSOR_REQUEST = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "parameters": {"type": "object"},
        "data": {},
    },
    "required": ["name", "shape", "datatype"],
}
_V2_INFER_REQUEST = {
    "type": "object",
    "description": "JSON, or JSON followed by binary tensor data "
    "(Inference-Header-Content-Length gives the JSON's length).",
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2InputTensor"}},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                "required": ["name"],
            },
        },
    },
    "required": ["inputs"],
}
_V2_INFER_RESPONSE = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "datatype": {"type": "string"},
                    "parameters": {"type": "object"},
                    "data": {},
                },
                "required": ["name", "shape", "datatype"],
            },
        },
    },
    "required": ["model_name", "outputs"],
}
_V2_SERVER_METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "version", "extensions"],
}
_V2_MODEL_METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": {"type": "object"}},
        "outputs": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["name", "platform", "inputs", "outputs"],
}
_V2_STATS = {
    "type": "object",
    "properties": {"model_stats": {"type": "array", "items": {"type": "object"}}},
    "required": ["model_stats"],
}
_OBJECT = {"type": "object"}
_BINARY = {"type": "string", "format": "binary"}
# What SageMaker's /invocations and InvokeEndpoint read: JSON, CSV or JSON Lines.
_SAGEMAKER_PAYLOAD = {
    "application/json": {},
    "text/csv": {"type": "string"},
    "application/jsonlines": {"type": "string"},
}
_ARRAY_OF_OBJECTS = {"type": "array", "items": {"type": "object"}}
_ANY = {}

COMPONENTS: dict[str, JsonSchema] = {
    "Error": _ERROR,
    "MessageError": _MESSAGE_ERROR,
    "StatusCode": _ERROR_CODE,
    "VersionStatus": _VERSION_STATUS,
    "ModelStatus": _MODEL_STATUS,
    "ModelList": _MODEL_LIST,
    "ModelMetadata": _MODEL_METADATA,
    "PredictRequest": _PREDICT_REQUEST,
    "PredictResponse": _PREDICT_RESPONSE,
    "ExampleRequest": _EXAMPLE_REQUEST,
    "ExampleResponse": _EXAMPLE_RESPONSE,
    "V2InputTensor": _V2_TENSOR_REQUEST,
    "V2InferRequest": _V2_INFER_REQUEST,
    "V2InferResponse": _V2_INFER_RESPONSE,
    "V2ServerMetadata": _V2_SERVER_METADATA,
    "V2ModelMetadata": _V2_MODEL_METADATA,
    "V2Statistics": _V2_STATS,
}


def _ref(name: str) -> JsonSchema:
    assert name in COMPONENTS, name
    return {"$ref": f"#/components/schemas/{name}"}


# -- operations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    """A request or response body: media type to schema (None: any bytes)."""

    content: dict[str, JsonSchema | None]
    description: str = ""

    def as_openapi(self) -> dict[str, Any]:
        content = {
            media: ({"schema": schema} if schema is not None else {})
            for media, schema in self.content.items()
        }
        return {"description": self.description or "OK", "content": content}


def _json(schema: JsonSchema, description: str = "") -> Body:
    return Body({"application/json": schema}, description)


_EMPTY = Body({}, "No body")


@dataclass(frozen=True)
class Operation:
    """One method on one path, with its tag, summary, bodies and answers."""

    method: str
    path: str
    tag: str
    summary: str
    request: Body | None = None
    responses: dict[str, Body] = field(default_factory=dict)

    @property
    def parameters(self) -> list[str]:
        return _PARAMETER.findall(self.path)

    def sample_path(self) -> str:
        """The path with sample values for its parameters (for route matching)."""
        return _PARAMETER.sub(lambda m: _SAMPLES[m[1]], self.path)

    def as_openapi(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "tags": [self.tag],
            "summary": self.summary,
            "operationId": _operation_id(self.method, self.path),
            "responses": {code: body.as_openapi() for code, body in self.responses.items()},
        }
        if self.parameters:
            entry["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": _PARAMETER_SCHEMAS[p]}
                for p in self.parameters
            ]
        if self.request is not None:
            entry["requestBody"] = {"required": True, **self.request.as_openapi()}
        return entry


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_")
    return f"{method.lower()}_{words or 'root'}"


def _errors(error: Body, *codes: str) -> dict[str, Body]:
    return dict.fromkeys(codes, error)


_TFS_ERROR = _json(_ref("Error"), 'TF Serving\'s error: `{"error": message}`')
_V2_ERROR = _json(_ref("Error"), 'Triton\'s error: `{"error": message}`')
_RUNTIME_ERROR = _json(_ref("MessageError"), 'SageMaker\'s error: `{"message": ...}`')
# Answers every inference operation may give besides 200: a bad request (4XX: 400,
# 401/403 under --auth, 404, 409, 413, 415, 429, 499), overload (503) and timeout (504).
_INFERENCE_ERRORS = ("4XX", "503", "504")

_TFS_VARIANTS = ("", "/versions/{version}", "/labels/{label}")
_V2_VARIANTS = ("", "/versions/{version}")


def _tfserving() -> list[Operation]:
    operations = [
        Operation(
            "GET",
            "/v1/models",
            TFS,
            "Every model, its versions, labels and storage status (ferry's addition)",
            responses={"200": _json(_ref("ModelList"))},
        )
    ]
    for variant in _TFS_VARIANTS:
        base = f"/v1/models/{{model_name}}{variant}"
        operations += [
            Operation(
                "GET",
                base,
                TFS,
                "Model version status",
                responses={"200": _json(_ref("ModelStatus")), **_errors(_TFS_ERROR, "4XX")},
            ),
            Operation(
                "GET",
                f"{base}/metadata",
                TFS,
                "Signature definitions",
                responses={"200": _json(_ref("ModelMetadata")), **_errors(_TFS_ERROR, "4XX")},
            ),
            Operation(
                "POST",
                f"{base}:predict",
                TFS,
                "Predict",
                _json(_ref("PredictRequest")),
                {"200": _json(_ref("PredictResponse")), **_errors(_TFS_ERROR, *_INFERENCE_ERRORS)},
            ),
        ]
        operations += [
            Operation(
                "POST",
                f"{base}:{method}",
                TFS,
                f"{method.capitalize()} tf.Example inputs",
                _json(_ref("ExampleRequest")),
                {"200": _json(_ref("ExampleResponse")), **_errors(_TFS_ERROR, *_INFERENCE_ERRORS)},
            )
            for method in ("classify", "regress")
        ]
    return operations


def _v2() -> list[Operation]:
    health = {"200": _EMPTY, "503": _EMPTY}
    operations = [
        Operation(
            "GET", "/v2", V2, "Server metadata", responses={"200": _json(_ref("V2ServerMetadata"))}
        ),
        Operation("GET", "/v2/health/live", V2, "Liveness", responses={"200": _EMPTY}),
        Operation("GET", "/v2/health/ready", V2, "Readiness (see --ready_when)", responses=health),
        Operation(
            "GET",
            "/v2/models/stats",
            V2,
            "Statistics of every model",
            responses={"200": _json(_ref("V2Statistics")), **_errors(_V2_ERROR, "4XX")},
        ),
        Operation(
            "POST",
            "/v2/repository/index",
            V2,
            "Repository index (Triton's model repository extension)",
            _json({"type": "object", "properties": {"ready": {"type": "boolean"}}}),
            {"200": _json(_ARRAY_OF_OBJECTS), **_errors(_V2_ERROR, "4XX")},
        ),
    ]
    for action in ("load", "unload"):
        operations.append(
            Operation(
                "POST",
                f"/v2/repository/models/{{model_name}}/{action}",
                V2,
                f"{action.capitalize()} a model (needs --enable_model_control)",
                _json({"type": "object", "properties": {"parameters": {"type": "object"}}}),
                {"200": _json(_OBJECT), **_errors(_V2_ERROR, *_INFERENCE_ERRORS)},
            )
        )
    for variant in _V2_VARIANTS:
        base = f"/v2/models/{{model_name}}{variant}"
        operations += [
            Operation(
                "GET",
                base,
                V2,
                "Model metadata",
                responses={"200": _json(_ref("V2ModelMetadata")), **_errors(_V2_ERROR, "4XX")},
            ),
            Operation(
                "GET",
                f"{base}/ready",
                V2,
                "Model readiness",
                responses={"200": _EMPTY, **_errors(_V2_ERROR, "4XX")},
            ),
            Operation(
                "GET",
                f"{base}/config",
                V2,
                "Model configuration (Triton's model configuration extension)",
                responses={"200": _json(_OBJECT), **_errors(_V2_ERROR, "4XX")},
            ),
            Operation(
                "GET",
                f"{base}/stats",
                V2,
                "Model statistics",
                responses={"200": _json(_ref("V2Statistics")), **_errors(_V2_ERROR, "4XX")},
            ),
            Operation(
                "POST",
                f"{base}/infer",
                V2,
                "Inference",
                Body(
                    {
                        "application/json": _ref("V2InferRequest"),
                        "application/octet-stream": _BINARY,
                    }
                ),
                {
                    "200": Body(
                        {
                            "application/json": _ref("V2InferResponse"),
                            "application/octet-stream": None,
                        }
                    ),
                    **_errors(_V2_ERROR, *_INFERENCE_ERRORS),
                },
            ),
        ]
    return operations


def _shared_memory() -> list[Operation]:
    operations = []
    for kind in ("system", "cuda"):
        prefix = f"/v2/{kind}sharedmemory"
        # 501: client shared memory is off (--allow_client_shm), or CUDA memory (no GPU).
        status = {"200": _json(_ARRAY_OF_OBJECTS), **_errors(_V2_ERROR, "4XX", "501")}
        done = {"200": _EMPTY, **_errors(_V2_ERROR, "4XX", "501")}
        operations += [
            Operation(
                "GET", f"{prefix}/status", SHM, f"Status of every {kind} region", responses=status
            ),
            Operation(
                "GET",
                f"{prefix}/region/{{region_name}}/status",
                SHM,
                f"Status of one {kind} region",
                responses=status,
            ),
            Operation(
                "POST",
                f"{prefix}/region/{{region_name}}/register",
                SHM,
                f"Register a {kind} shared memory region (see --allow_client_shm)",
                _json(_OBJECT),
                done,
            ),
            Operation(
                "POST",
                f"{prefix}/region/{{region_name}}/unregister",
                SHM,
                f"Unregister one {kind} region",
                _json(_OBJECT),
                done,
            ),
            Operation(
                "POST",
                f"{prefix}/unregister",
                SHM,
                f"Unregister every {kind} region",
                _json(_OBJECT),
                done,
            ),
        ]
    return operations


def _sagemaker() -> list[Operation]:
    invocation = {
        "200": Body({"*/*": None}),
        **_errors(_json(_ref("Error")), *_INFERENCE_ERRORS),
    }
    return [
        Operation(
            "GET",
            PING_PATH,
            SAGEMAKER,
            "Health (SageMaker's ping)",
            responses={"200": Body({"*/*": None}), "503": Body({"*/*": None})},
        ),
        Operation(
            "POST",
            INVOCATIONS_PATH,
            SAGEMAKER,
            "Inference (JSON, CSV, JSON Lines)",
            Body(_SAGEMAKER_PAYLOAD),
            invocation,
        ),
        Operation("GET", MODELS_PATH, MME, "Loaded models", responses={"200": _json(_OBJECT)}),
        Operation(
            "POST",
            MODELS_PATH,
            MME,
            "Load a model",
            _json(
                {
                    "type": "object",
                    "properties": {"model_name": {"type": "string"}, "url": {"type": "string"}},
                    "required": ["model_name", "url"],
                }
            ),
            {"200": _json(_ANY), **_errors(_json(_ref("Error")), *_INFERENCE_ERRORS)},
        ),
        Operation(
            "GET",
            f"{MODELS_PATH}/{{model_name}}",
            MME,
            "One loaded model",
            responses={"200": _json(_OBJECT), **_errors(_json(_ref("Error")), "4XX")},
        ),
        Operation(
            "DELETE",
            f"{MODELS_PATH}/{{model_name}}",
            MME,
            "Unload a model",
            responses={"200": _json(_ANY), **_errors(_json(_ref("Error")), "4XX")},
        ),
        Operation(
            "POST",
            f"{MODELS_PATH}/{{model_name}}/invoke",
            MME,
            "Invoke one model",
            Body(_SAGEMAKER_PAYLOAD),
            invocation,
        ),
    ]


def _runtime() -> list[Operation]:
    return [
        Operation(
            "POST",
            f"{RUNTIME_PREFIX}{{endpoint_name}}/invocations",
            RUNTIME,
            "InvokeEndpoint (boto3's sagemaker-runtime client)",
            Body(_SAGEMAKER_PAYLOAD),
            {"200": Body({"*/*": None}), **_errors(_RUNTIME_ERROR, *_INFERENCE_ERRORS)},
        )
    ]


def _operations_pages() -> list[Operation]:
    html = Body({"text/html": None})
    return [
        Operation(
            "GET",
            "/",
            OPS,
            "Redirects to the status page",
            responses={"307": Body({}, "Redirect to /dashboard"), "200": html},
        ),
        Operation("GET", DASHBOARD_PATH, OPS, "The status page", responses={"200": html}),
        Operation(
            "GET", STATUS_PATH, OPS, "The status page's numbers", responses={"200": _json(_OBJECT)}
        ),
        Operation(
            "GET",
            METRICS_PLACEHOLDER,
            OPS,
            "Prometheus metrics",
            responses={"200": Body({"text/plain": None})},
        ),
        Operation("GET", OPENAPI_PATH, OPS, "This description", responses={"200": _json(_OBJECT)}),
        Operation("GET", DOCS_PATH, OPS, "This description as a page", responses={"200": html}),
    ]


OPERATIONS: tuple[Operation, ...] = (
    *_tfserving(),
    *_v2(),
    *_shared_memory(),
    *_sagemaker(),
    *_runtime(),
    *_operations_pages(),
)


# -- which operations a server has --------------------------------------------------------


def _route_answers(route: BaseRoute, method: str, path: str) -> bool:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    match, _ = route.matches(scope)
    return match is Match.FULL


def covers(routes: Sequence[BaseRoute], post_prefixes: Iterable[str], operation: Operation) -> bool:
    """Whether a request for `operation` reaches a handler among these routes and
    POST prefixes (as ferry.server.HttpApp dispatches it)."""
    path = operation.sample_path()
    if operation.method == "POST" and any(
        path.lower().startswith(prefix.lower()) for prefix in post_prefixes
    ):
        return True
    return any(_route_answers(route, operation.method, path) for route in routes)


def registered_operations(
    routes: Sequence[BaseRoute],
    post_prefixes: Iterable[str],
    metrics_path: str | None,
) -> list[Operation]:
    """The operations of `OPERATIONS` that these routes answer; the metrics operation
    takes `metrics_path` (None: not served)."""
    prefixes = tuple(post_prefixes)
    chosen = []
    for operation in OPERATIONS:
        if operation.path == METRICS_PLACEHOLDER:
            if metrics_path is None:
                continue
            operation = Operation(
                operation.method,
                metrics_path,
                operation.tag,
                operation.summary,
                operation.request,
                operation.responses,
            )
        if covers(routes, prefixes, operation):
            chosen.append(operation)
    return chosen


def build_spec(operations: Iterable[Operation], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these operations."""
    paths: dict[str, dict[str, Any]] = {}
    tags: list[str] = []
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = operation.as_openapi()
        if operation.tag not in tags:
            tags.append(operation.tag)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "ferry",
            "version": version,
            "description": "ferry's REST endpoints: TensorFlow Serving, KServe V2 / Triton, "
            "SageMaker, status and metrics. Every response carries `x-request-id`.",
        },
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {"schemas": COMPONENTS},
    }


class OpenApi:
    """The `/openapi.json` and `/docs` routes over a server's other routes."""

    def __init__(
        self,
        routes: Sequence[BaseRoute],
        post_prefixes: Iterable[str],
        metrics_path: str | None,
    ) -> None:
        own = self.routes()
        operations = registered_operations([*routes, *own], post_prefixes, metrics_path)
        self._body = orjson.dumps(build_spec(operations, installed_version()))

    def routes(self) -> list[Route]:
        return [
            Route(OPENAPI_PATH, self.spec, methods=["GET"]),
            Route(DOCS_PATH, self.docs, methods=["GET"]),
        ]

    async def spec(self, request: Request) -> Response:
        return Response(self._body, media_type="application/json")

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(_docs_html())


@cache
def _docs_html() -> str:
    return DOCS_HTML.replace("{{OPENAPI_PATH}}", OPENAPI_PATH)
