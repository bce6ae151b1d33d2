"""The JSON answers that ferry's REST APIs share, in TF Serving's form.

TF Serving's REST API defines a failed request's answer (`{"error": "..."}` with its
status-code-to-HTTP mapping, pretty-printed) and a model version's status entry
(`GetModelStatus`). ferry's other REST APIs answer in the same forms: the V2 API's errors
(Triton's are `{"error": "..."}` too), SageMaker's /invocations and its multi-model API's
model listing, and a CORS preflight's refusal. So they live here, not inside
`ferry.protocols.tfserving_rest`, and each protocol imports the one definition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.responses import Response

from ferry.errors import FerryError, StatusCode
from ferry.protocols.http_util import JSON, Headers, RequestTooLarge

if TYPE_CHECKING:
    from ferry.manager import VersionRecord

# TF Serving pretty-prints every JSON answer (two-space indents).
PRETTY = orjson.OPT_INDENT_2
JSON_MEDIA_TYPE = JSON.decode()

# TF Serving's mapping from status code to HTTP status (http_server.cc).
_HTTP_STATUS = {
    StatusCode.OK: 200,
    StatusCode.CANCELLED: 499,
    StatusCode.INVALID_ARGUMENT: 400,
    StatusCode.FAILED_PRECONDITION: 400,
    StatusCode.OUT_OF_RANGE: 400,
    StatusCode.DEADLINE_EXCEEDED: 504,
    StatusCode.NOT_FOUND: 404,
    StatusCode.ALREADY_EXISTS: 409,
    StatusCode.ABORTED: 409,
    StatusCode.PERMISSION_DENIED: 403,
    StatusCode.UNAUTHENTICATED: 401,
    StatusCode.RESOURCE_EXHAUSTED: 429,
    StatusCode.UNIMPLEMENTED: 501,
    StatusCode.UNAVAILABLE: 503,
}


def error_parts(error: FerryError) -> tuple[int, bytes, Headers]:
    """HTTP status, `{"error": message}` body and extra headers for a failed request
    (a 503 says when to retry)."""
    status = 413 if isinstance(error, RequestTooLarge) else _HTTP_STATUS.get(error.code, 500)
    headers = [(b"retry-after", b"1")] if status == 503 else []
    return status, orjson.dumps({"error": error.message}, option=PRETTY), headers


def error_response(error: FerryError) -> Response:
    """`error_parts` as a Starlette response (for the GET routes)."""
    status, body, headers = error_parts(error)
    return Response(
        body,
        status_code=status,
        media_type=JSON_MEDIA_TYPE,
        headers={k.decode(): v.decode() for k, v in headers},
    )


def version_status(record: VersionRecord) -> dict:
    """One entry of `model_version_status`: the version, its state and its error."""
    return {
        "version": str(record.version),
        "state": record.state.name,
        "status": {"error_code": record.error_code.name, "error_message": record.error_message},
    }
