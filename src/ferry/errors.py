"""ferry's error classes, one per status code that a request can end with.

Every layer raises these; each protocol turns them into its own wire form in one
place (HTTP status + `{"error": ...}` for TF Serving REST, a gRPC status code for
gRPC). The codes are TensorFlow's canonical status codes, because TF Serving's
clients and its HTTP mapping are built on them.
"""

from __future__ import annotations

from enum import Enum


class StatusCode(Enum):
    """TensorFlow's canonical error codes (tensorflow.error.Code), by name and number."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class FerryError(Exception):
    """A request or load failed; `code` says how, the message says what was wrong."""

    code: StatusCode = StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(FerryError):
    """The request is malformed or does not fit the model's signature."""

    code = StatusCode.INVALID_ARGUMENT


class NotFound(FerryError):
    """The model, version, label or signature does not exist (or is not serving)."""

    code = StatusCode.NOT_FOUND


class Unavailable(FerryError):
    """The server cannot take the request now (queue full, shutting down); retry later."""

    code = StatusCode.UNAVAILABLE


class DeadlineExceeded(FerryError):
    """The request did not finish within its time limit."""

    code = StatusCode.DEADLINE_EXCEEDED


class Unimplemented(FerryError):
    """The request asks for something ferry (or this model) does not support."""

    code = StatusCode.UNIMPLEMENTED


class FailedPrecondition(FerryError):
    """The request is valid but the model is not in a state to answer it."""

    code = StatusCode.FAILED_PRECONDITION


class UnsupportedEncoding(Unimplemented):
    """The request body's Content-Encoding is one ferry cannot decode; the V2 answer
    also names the encodings it can (Triton's `Accept-Encoding: gzip, deflate`)."""


class InternalError(FerryError):
    """The model raised at run time or returned something unusable."""

    code = StatusCode.INTERNAL


class ResourceExhausted(FerryError):
    """The request exceeds a configured limit (for example the request body size)."""

    code = StatusCode.RESOURCE_EXHAUSTED


class AlreadyExists(FerryError):
    """What the request would create exists already (a shared memory region's name)."""

    code = StatusCode.ALREADY_EXISTS


class PermissionDenied(FerryError):
    """The request is well formed but the operator does not allow it (for example a
    reload from a base path outside `--model_roots`)."""

    code = StatusCode.PERMISSION_DENIED


class StorageError(FerryError):
    """Model storage (object storage) could not be listed or read: `code` says whether
    it was unreachable (UNAVAILABLE), refused us (PERMISSION_DENIED, UNAUTHENTICATED)
    or lacks the bucket (NOT_FOUND). The watcher retries these with backoff."""

    def __init__(self, message: str, code: StatusCode = StatusCode.UNAVAILABLE) -> None:
        super().__init__(message)
        self.code = code


class SetupError(Exception):
    """The server cannot start as asked, for a reason its message names with the fix (an
    option this install cannot honour). Not a request error: the `ferry` command prints it
    as one line, like ListenError."""


class ListenError(OSError):
    """A listener (REST, gRPC) could not open its address: in use or not allowed. Not a
    request error: it stops start-up, and the `ferry` command prints it as one line."""

    @classmethod
    def rest_port(cls, host: str, port: int) -> ListenError:
        """The REST port's, on either front; the log line before it says why."""
        return cls(
            f"the REST API could not listen on {host}:{port} (the log line above says why; "
            "--rest_api_port sets the port)"
        )


def unexpected(exc: Exception) -> InternalError:
    """The error a request gets when ferry itself hit a bug: it costs that one request,
    never the server. Callers log the traceback where it happened."""
    return InternalError(f"Internal error: {type(exc).__name__}: {exc}")
