"""SageMaker's `code/inference.py`: pre- and post-processing around any model.

The SageMaker TensorFlow Serving container runs a user's `code/inference.py` (in the
SageMaker model folder, `/opt/ml/model/code/`) around each `/invocations` request;
ferry follows its contract for the handler pair:

    def input_handler(data, context):     # data: the request body as a file (.read())
        return json.dumps({"instances": ...})   # a TF Serving REST :predict body
    def output_handler(response, context):  # response: the model's REST answer
        return response.content, context.accept_header   # (body, Content-Type)

`response` has what handlers use of the container's `requests.Response`:
`status_code`, `content` (bytes), `text`, `ok`, `json()`; an error from the model
arrives as its status code and TF Serving's `{"error": ...}` body, as from TF Serving.
`context` is the container's `Context` namedtuple (model_name, model_version, method,
rest_uri, grpc_port, custom_attributes, request_content_type, accept_header,
content_length); `rest_uri` is the REST path the body would be posted to and
`grpc_port` is None: ferry runs the model in-process, with no hop through HTTP.
Either handler may be left out (the request or the answer then passes as without
`inference.py`); with an `input_handler`, any Content-Type is accepted, since the
handler decides what it reads. `code/lib/` is put on `sys.path`, as in the container.

Not supported: the single `handler(data, context)` form (it posts to TF Serving's REST
port itself) and installing `code/requirements.txt` at start-up (install a model's
dependencies into the image instead: ferry logs a warning when it finds one). A file
with only `handler` is a start-up error, not a silent difference.

Consent: `inference.py` is code that runs around every model's requests, so ferry runs
it only when the operator allows code for every model: `FERRY_ALLOW_CODE='*'` in the
container's environment (`ferry deploy sagemaker --allow-code '*'` sets it) or
`ferry serve --sagemaker --allow_code '*'`, the rule for every code file in a model
folder (see `ferry.consent`); otherwise ferry refuses to start, as the container refuses
to start with a broken `inference.py`. A handler that
raises fails that request with HTTP 500 and the exception's message.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ferry.consent import ALL_MODELS, ExecutionConsent
from ferry.errors import InternalError
from ferry.runtimes.python import code_description, import_file

log = logging.getLogger(__name__)

HANDLER_FILE = Path("code") / "inference.py"
LIBRARY_DIR = Path("code") / "lib"


class Context(NamedTuple):
    """The container's `Context`: what a handler knows about the request."""

    model_name: str
    model_version: str | None
    method: str
    rest_uri: str
    grpc_port: int | None
    custom_attributes: str | None
    request_content_type: str
    accept_header: str
    content_length: int


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


@dataclass(frozen=True)
class InferenceHandlers:
    """The handlers found in `code/inference.py`; either may be None."""

    input_handler: Callable[[Any, Context], Any] | None
    output_handler: Callable[[HandlerResponse, Context], Any] | None

    def prepare(self, body: bytes, context: Context) -> bytes:
        """The `input_handler`'s TF Serving body for a request body (as bytes)."""
        assert self.input_handler is not None
        try:
            result = self.input_handler(io.BytesIO(body), context)
        except Exception as exc:
            raise InternalError(f"input_handler failed: {type(exc).__name__}: {exc}") from exc
        return _as_bytes(result, "input_handler")

    def finish(self, response: HandlerResponse, context: Context) -> tuple[bytes, str]:
        """The `output_handler`'s (body, Content-Type) for the model's answer."""
        assert self.output_handler is not None
        try:
            result = self.output_handler(response, context)
        except Exception as exc:
            raise InternalError(f"output_handler failed: {type(exc).__name__}: {exc}") from exc
        if not (isinstance(result, tuple) and len(result) == 2):
            raise InternalError(
                f"output_handler must return (body, content_type), not {type(result).__name__}"
            )
        body, content_type = result
        return _as_bytes(body, "output_handler"), str(content_type)


def load_handlers(model_dir: Path, consent: ExecutionConsent) -> InferenceHandlers | None:
    """The handlers of `model_dir/code/inference.py`, None when there is no such file.

    Raises CodeNotAllowed unless `consent` allows code for every model (`*`), ValueError
    for a file without the supported handlers, and whatever importing the file raises.
    """
    path = model_dir / HANDLER_FILE
    if not path.is_file():
        return None
    # The handlers wrap every model's requests, so they need consent for all of them.
    consent.for_model(ALL_MODELS, trusted=True).require_code(
        f"code/{code_description(path)} and runs around every model's requests"
    )
    if (model_dir / "code" / "requirements.txt").is_file():
        log.warning(
            "%s: ferry does not pip-install at start-up; these packages must be "
            "installed in the image already",
            model_dir / "code" / "requirements.txt",
        )
    library = model_dir / LIBRARY_DIR
    if library.is_dir() and str(library) not in sys.path:
        sys.path.insert(0, str(library))
    module = import_file(path, "ferry_sagemaker_inference")
    input_handler = getattr(module, "input_handler", None)
    output_handler = getattr(module, "output_handler", None)
    if input_handler is None and output_handler is None:
        has_handler = callable(getattr(module, "handler", None))
        raise ValueError(
            f"{path} defines "
            + ("handler(data, context), which ferry does not support" if has_handler else "none")
            + " of input_handler(data, context) / output_handler(response, context)"
        )
    return InferenceHandlers(input_handler, output_handler)


def _as_bytes(value: Any, where: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise InternalError(f"{where} returned a {type(value).__name__}, not str or bytes")
