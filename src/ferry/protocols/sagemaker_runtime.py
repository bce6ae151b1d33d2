"""SageMaker's runtime API (`sagemaker-runtime` InvokeEndpoint), answered by ferry itself,
so that `boto3.client("sagemaker-runtime", endpoint_url="http://HOST:PORT")` works
against a ferry server unchanged.

  POST /endpoints/{EndpointName}/invocations

Always served on the REST port (`--rest_api_port`), next to TF Serving's and V2's APIs;
`ferry serve --auth FILE` makes it check SigV4 signatures as AWS does (`ferry.auth`).

Which model answers:
- The endpoint name is the model name. SageMaker endpoint names cannot hold `_`, so an
  endpoint name also matches the model whose name has `_` where it has `-`
  (`mlp-small` -> `mlp_small`) when no model is called exactly that.
- `TargetModel` (header X-Amzn-SageMaker-Target-Model), as on a multi-model endpoint,
  names the model instead (`NAME` or `NAME.tar.gz`, folders before it ignored). On a
  multi-model server (`ferry.protocols.sagemaker_mme`) it is the archive's path under
  the model data URL, fetched and loaded on first use; a missing one is a ValidationError.
- `tfs-model-name` in the custom attributes works as with the SageMaker TensorFlow
  Serving container behind a real endpoint; `tfs-model-version` picks a version.
- `TargetVariant` names a version label (production variants are the versions that a
  real endpoint splits traffic across); `AllTraffic`, SageMaker's default variant name,
  means the newest version. The response's `x-Amzn-Invoked-Production-Variant` says
  which variant answered.

The payload (Content-Type, Accept, custom attributes) is read exactly as /invocations
reads it (`ferry.protocols.sagemaker`), since on AWS the body passes to the container.

Errors take the runtime API's wire form (rest-json: the type in `x-amzn-ErrorType`,
`{"message": ...}` in the body), so botocore raises `client.exceptions.<Type>`:
- ValidationError 400: the request itself is wrong (unknown endpoint or target model,
  a malformed header, a body over `--max_request_bytes`).
- ModelError 424: what the container would have answered with a non-2xx status (a
  payload that does not fit the model, an unsupported Content-Type, a failed model
  run); `OriginalStatusCode` and `OriginalMessage` carry that status and body.
- ModelNotReadyException 429: the model exists but no version serves yet.
- ServiceUnavailable 503: the queue is full or the server is draining; retry.
- InternalFailure 500: a bug in ferry.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from urllib.parse import unquote

import orjson

from ferry.errors import FerryError, NotFound, StatusCode
from ferry.manager import ModelManager
from ferry.protocols.http_util import (
    CLOSE_CONNECTION,
    ClientDisconnected,
    Receive,
    RequestTooLarge,
    Scope,
    Send,
    header,
    send_response,
)
from ferry.protocols.sagemaker import (
    CUSTOM_ATTRIBUTES,
    SageMakerInvocations,
    container_error_parts,
    custom_attributes,
)
from ferry.protocols.sagemaker_mme import TARGET_MODEL, MultiModelEndpoint, TargetModelNotFound

log = logging.getLogger(__name__)

RUNTIME_PREFIX = "/endpoints/"
DEFAULT_VARIANT = "AllTraffic"
TARGET_VARIANT = b"x-amzn-sagemaker-target-variant"
CUSTOM_ATTRIBUTES_LIMIT = 1024
_PATH = re.compile(r"/endpoints/(?P<name>[^/]+)/invocations")
_JSON = b"application/json"
# The API label in ferry's request metrics.
API = "sagemaker_runtime"


class InvokeError(FerryError):
    """An InvokeEndpoint failure in the runtime API's own terms (not the container's)."""

    def __init__(self, error_type: str, status: int, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.status = status


def validation_error(message: str) -> InvokeError:
    return InvokeError("ValidationError", 400, message)


def runtime_error_parts(
    error_type: str, status: int, message: str, extra: dict | None = None
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, body and headers of a runtime API error, in the rest-json form botocore
    reads: the type from `x-amzn-ErrorType`, the message from the body's `message`."""
    body = orjson.dumps({"message": message, **(extra or {})})
    return status, body, [(b"x-amzn-errortype", error_type.encode())]


class SageMakerRuntime:
    """`POST /endpoints/{name}/invocations` over the /invocations payload handling."""

    def __init__(
        self,
        manager: ModelManager,
        invocations: SageMakerInvocations,
        server_ready: Callable[[], bool],
    ) -> None:
        self.manager = manager
        self.invocations = invocations
        self._server_ready = server_ready
        # Set on a multi-model endpoint: TargetModel loads models on first use.
        self.multi_model: MultiModelEndpoint | None = None

    async def handle_post(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every POST under /endpoints/ (a fast-path prefix)."""
        request_id = str(uuid.uuid4()).encode()
        try:
            body, content_type, variant = await self._invoke(scope, receive)
            status = 200
            headers = [(b"x-amzn-invoked-production-variant", variant.encode())]
        except ClientDisconnected:
            return
        except Exception as exc:  # every failure answers in the runtime API's form
            status, body, headers = self._error_parts(scope, exc)
            content_type = _JSON
        headers.append((b"x-amzn-requestid", request_id))
        await send_response(send, status, body, content_type, extra_headers=headers)

    def _error_parts(
        self, scope: Scope, error: Exception
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if isinstance(error, InvokeError):
            return runtime_error_parts(error.error_type, error.status, error.message)
        if isinstance(error, RequestTooLarge):
            status, body, headers = runtime_error_parts("ValidationError", 400, error.message)
            return status, body, [*headers, CLOSE_CONNECTION]
        if isinstance(error, FerryError):
            if error.code == StatusCode.UNAVAILABLE:
                return runtime_error_parts("ServiceUnavailable", 503, error.message)
            # What the container answered: wrapped as SageMaker wraps it.
            status, body, _ = container_error_parts(error)
            kind = "client" if status < 500 else "server"
            original = body.decode("utf-8", "replace")
            message = (
                f'Received {kind} error ({status}) from primary with message "{original}". '
                "See the ferry server's log for more information."
            )
            return runtime_error_parts(
                "ModelError",
                424,
                message,
                {"OriginalStatusCode": status, "OriginalMessage": original},
            )
        log.exception("unexpected error serving POST %s", scope["path"])
        return runtime_error_parts(
            "InternalFailure", 500, f"Internal error: {type(error).__name__}: {error}"
        )

    async def _invoke(self, scope: Scope, receive: Receive) -> tuple[bytes, bytes, str]:
        path = scope["path"]
        match = _PATH.fullmatch(unquote(path) if "%" in path else path)
        if match is None:
            raise InvokeError(
                "UnknownOperationException", 404, f"No InvokeEndpoint operation at POST {path}"
            )
        endpoint = match["name"]
        if not self._server_ready():
            raise InvokeError("ServiceUnavailable", 503, "ferry is starting or stopping")
        attributes = header(scope, CUSTOM_ATTRIBUTES)
        if attributes is not None and len(attributes) > CUSTOM_ATTRIBUTES_LIMIT:
            raise validation_error(
                "1 validation error detected: Value at 'customAttributes' failed to satisfy "
                f"constraint: Member must have length less than or equal to "
                f"{CUSTOM_ATTRIBUTES_LIMIT}"
            )
        target = header(scope, TARGET_MODEL)
        variant = (header(scope, TARGET_VARIANT) or b"").decode("latin-1") or DEFAULT_VARIANT
        if target and self.multi_model is not None:
            # A multi-model endpoint: the target is fetched and loaded on first use.
            try:
                body, content_type = await self.multi_model.invoke_target(
                    scope, receive, target.decode("latin-1"), API
                )
            except TargetModelNotFound as exc:
                raise validation_error(exc.message) from None
            return body, content_type, variant
        model = self._target_model(target) if target else self._endpoint_model(endpoint)
        label = None if variant == DEFAULT_VARIANT else variant
        if label is not None and label not in self.manager.labels(model):
            raise validation_error(
                f"Variant {variant} not found for endpoint {endpoint}: use {DEFAULT_VARIANT} "
                "or a version label of the model"
            )
        # tfs-model-name may still choose another model, as the container behind a real
        # endpoint lets it; the endpoint's model is the default.
        named = _named_model(scope)
        try:
            body, content_type = await self.invocations.invoke(
                scope, receive, API, named or model, label
            )
        except NotFound:
            chosen = named or model
            if self.manager.has_model(chosen) and not self._serves(chosen):
                raise InvokeError(
                    "ModelNotReadyException",
                    429,
                    f"Model {chosen} of endpoint {endpoint} is not ready yet: no version "
                    "has finished loading. Retry later.",
                ) from None
            raise
        return body, content_type, variant

    def _endpoint_model(self, endpoint: str) -> str:
        if self.manager.has_model(endpoint):
            return endpoint
        alias = endpoint.replace("-", "_")
        if alias != endpoint and self.manager.has_model(alias):
            return alias
        raise validation_error(f"Endpoint {endpoint} not found.")

    def _target_model(self, target: bytes) -> str:
        name = target.decode("latin-1").rsplit("/", 1)[-1]
        name = name.removesuffix(".tar.gz")
        if not name or not self.manager.has_model(name):
            raise validation_error(f"Target model {target.decode('latin-1')} not found.")
        return name

    def _serves(self, model: str) -> bool:
        try:
            self.manager.acquire(model).release()
        except FerryError:
            return False
        return True


def _named_model(scope: Scope) -> str | None:
    return custom_attributes(header(scope, CUSTOM_ATTRIBUTES)).get("tfs-model-name")
