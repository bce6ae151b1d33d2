"""SageMaker's `code/inference.py`: pre- and post-processing around any model.

The SageMaker TensorFlow Serving container runs a user's `code/inference.py` (in the
SageMaker model folder, `/opt/ml/model/code/`, or `/opt/ml/models/code/` on a
multi-model endpoint) around each request; ferry follows its contract for both forms:

    def handler(data, context):             # the whole request: the handler posts the
        response = requests.post(context.rest_uri, data=...)   # body to TF Serving itself
        return response.content, context.accept_header         # (body, Content-Type)

    def input_handler(data, context):     # data: the request body as a file (.read())
        return json.dumps({"instances": ...})   # a TF Serving REST :predict body
    def output_handler(response, context):  # response: the model's REST answer
        return response.content, context.accept_header   # (body, Content-Type)

As in the container, `handler` wins when the file defines it. For the pair, ferry runs
the model in-process (no hop through HTTP) and hands `output_handler` what handlers
use of the container's `requests.Response`: `status_code`, `content` (bytes), `text`,
`ok`, `json()`. The body `input_handler` returns is read as TF Serving's REST API reads
a `:predict` body, and a body it cannot read (empty, malformed) or a failing model run
reaches `output_handler` as TF Serving's status and `{"error": ...}` body, as the
container posts it to TF Serving and hands over its answer. Either handler of the pair
may be left out (ferry's extension: the request or the answer then passes as without
`inference.py`); with an `input_handler` or `handler`, any Content-Type is accepted.

`context` is the container's `Context` namedtuple, its fields in its order (model_name,
model_version, method, rest_uri, grpc_port, channel, custom_attributes,
request_content_type, accept_header, content_length). `rest_uri` is a URL on ferry's
own TF Serving REST API (`http://127.0.0.1:PORT/v1/models/NAME[/versions/N]:METHOD`)
and `channel` a gRPC channel to ferry's gRPC port (None without one), so a `handler`
that posts or calls TF Serving works unchanged. `model_version` and `method` are the
`tfs-model-version` / `tfs-method` attributes (None when absent, as in the container);
`model_name` is the model that answers (the container leaves it None without
`tfs-model-name` on a single-model endpoint).

`code/lib/` is put on `sys.path`; `code/requirements.txt` is installed at start-up only
with the operator's separate consent (`ferry.protocols.sagemaker_requirements`).

Consent: `inference.py` is code that runs around every model's requests, so ferry runs
it only when the operator allows code for every model: `FERRY_ALLOW_CODE='*'` in the
container's environment (`ferry deploy sagemaker --allow-code '*'` sets it) or
`ferry serve --sagemaker --allow_code '*'`, the rule for every code file in a model
folder (see `ferry.consent`); otherwise ferry refuses to start, as the container refuses
to start with a broken `inference.py`. A handler that raises fails that request with
HTTP 500 and `{"error": str(exception)}`, as in the container.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ferry.consent import ALL_MODELS, ExecutionConsent
from ferry.errors import InternalError
from ferry.protocols.sagemaker_requirements import (
    DEFAULT_TIMEOUT_SECONDS,
    install_requirements,
)
from ferry.runtimes.python import code_description, import_file

log = logging.getLogger(__name__)

HANDLER_FILE = Path("code") / "inference.py"
LIBRARY_DIR = Path("code") / "lib"


class Context(NamedTuple):
    """The container's `Context`: what a handler knows about the request."""

    model_name: str
    model_version: str | None
    method: str | None
    rest_uri: str
    grpc_port: int | None
    channel: Any  # a grpc.Channel to ferry's gRPC port, None without one
    custom_attributes: str | None
    request_content_type: str
    accept_header: str
    content_length: int


class LoopbackAddress:
    """Where a handler reaches this server's own TF Serving APIs (REST and gRPC).

    The gRPC channel is made on first use and shared, as the container makes one per
    TF Serving port; thread-safe."""

    def __init__(self, host: str, rest_port: int, grpc_port: int) -> None:
        self.host = _loopback_host(host)
        self.rest_port = rest_port
        self.grpc_port = grpc_port or None
        self._channel: Any = None
        self._lock = threading.Lock()

    def rest_uri(self, model: str, version: str | None, method: str | None) -> str:
        """The container's TF Serving URL for a request (`make_tfs_uri`)."""
        uri = f"http://{self.host}:{self.rest_port}/v1/models/{model}"
        if version:
            uri += f"/versions/{version}"
        return f"{uri}:{method or 'predict'}"

    def channel(self) -> Any:
        if self.grpc_port is None:
            return None
        with self._lock:
            if self._channel is None:
                import grpc

                self._channel = grpc.insecure_channel(f"{self.host}:{self.grpc_port}")
            return self._channel


def _loopback_host(host: str) -> str:
    """The address a handler dials: loopback where the server listens on every address."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class HandlerResponse:
    """The model's answer as `output_handler` sees it (a `requests.Response` look-alike)."""

    status_code: int
    content: bytes
    headers: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.content)


class HandlerFailed(InternalError):
    """A handler raised: the request gets 500 and the exception's text, as in the container."""


@dataclass(frozen=True)
class InferenceHandlers:
    """The handlers found in `code/inference.py`: `handler`, or either of the pair."""

    input_handler: Callable[[Any, Context], Any] | None
    output_handler: Callable[[HandlerResponse, Context], Any] | None
    handler: Callable[[Any, Context], Any] | None = None

    @property
    def reads_any_payload(self) -> bool:
        """The handlers, not ferry, decide which Content-Types they read."""
        return self.handler is not None or self.input_handler is not None

    def handle(self, body: bytes, context: Context) -> tuple[bytes, str]:
        """The single `handler`'s (body, Content-Type) for a request body."""
        assert self.handler is not None
        return _answer(_call(self.handler, io.BytesIO(body), context, "handler"), "handler")

    def prepare(self, body: bytes, context: Context) -> bytes:
        """The `input_handler`'s TF Serving body for a request body (as bytes)."""
        assert self.input_handler is not None
        result = _call(self.input_handler, io.BytesIO(body), context, "input_handler")
        return _as_bytes(result, "input_handler")

    def finish(self, response: HandlerResponse, context: Context) -> tuple[bytes, str]:
        """The `output_handler`'s (body, Content-Type) for the model's answer."""
        assert self.output_handler is not None
        result = _call(self.output_handler, response, context, "output_handler")
        return _answer(result, "output_handler")


def _call(function: Callable, data: Any, context: Context, where: str) -> Any:
    try:
        return function(data, context)
    except Exception as exc:
        log.exception("%s raised handling a request", where)
        raise HandlerFailed(str(exc)) from exc


def _answer(result: Any, where: str) -> tuple[bytes, str]:
    if not (isinstance(result, tuple) and len(result) == 2):
        raise InternalError(
            f"{where} must return (body, content_type), not {type(result).__name__}"
        )
    body, content_type = result
    return _as_bytes(body, where), str(content_type)


@dataclass(frozen=True)
class RequirementsOptions:
    """Whether and how `code/requirements.txt` is installed (the operator's choice)."""

    allowed: bool = False
    cache_dir: Path | None = None  # None: nothing is installed (no place to put it)
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS


def load_handlers(
    model_dir: Path,
    consent: ExecutionConsent,
    requirements: RequirementsOptions | None = None,
) -> InferenceHandlers | None:
    """The handlers of `model_dir/code/inference.py`, None when there is no such file.

    Raises CodeNotAllowed unless `consent` allows code for every model (`*`), ValueError
    for a file without the supported handlers, RequirementsError when pip fails, and
    whatever importing the file raises.
    """
    path = model_dir / HANDLER_FILE
    if not path.is_file():
        return None
    # The handlers wrap every model's requests, so they need consent for all of them.
    consent.for_model(ALL_MODELS, trusted=True).require_code(
        f"code/{code_description(path)} and runs around every model's requests"
    )
    requirements = requirements or RequirementsOptions()
    installed = None
    if requirements.cache_dir is not None:
        installed = install_requirements(
            model_dir, requirements.cache_dir, requirements.allowed, requirements.timeout_seconds
        )
    # code/lib first, then the installed packages, as the container's PYTHONPATH has it.
    for folder in (installed, model_dir / LIBRARY_DIR):
        if folder is not None and folder.is_dir() and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    module = import_file(path, "ferry_sagemaker_inference")
    handler = getattr(module, "handler", None)
    if callable(handler):
        return InferenceHandlers(None, None, handler)
    input_handler = getattr(module, "input_handler", None)
    output_handler = getattr(module, "output_handler", None)
    if input_handler is None and output_handler is None:
        raise ValueError(
            f"{path} defines none of handler(data, context), input_handler(data, context) "
            "and output_handler(response, context)"
        )
    return InferenceHandlers(input_handler, output_handler)


def _as_bytes(value: Any, where: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise InternalError(f"{where} returned a {type(value).__name__}, not str or bytes")
