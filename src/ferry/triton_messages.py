"""Triton's error messages for the V2 (KServe / Open Inference Protocol) APIs, in one
table, worded and coded as Triton words them.

tritonclient surfaces a server's text unchanged (`InferenceServerException.message()`),
and Triton's own tests and users' scripts match on it (`startswith("Request for unknown
model")`, `assertIn("failed to poll from model repository", ...)`), so ferry's V2 REST
and gRPC edges answer with these. Sources: Triton core's model_lifecycle.cc,
model_repository_manager.cc, model.cc and infer_request.cc (model lookup, load, input
validation), and the server's common.cc, http_server.cc, grpc/infer_handler.cc and
data_compressor.h (version strings, binary data, compression). Where Triton names its
own flag (`--http-max-input-size`), the text names ferry's (`--max_request_bytes`).

Status codes are Triton's: its NOT_FOUND, UNAVAILABLE, INVALID_ARG, UNSUPPORTED and
INTERNAL map to HTTP 404, 503, 400, 501 and 500 and to the gRPC codes of those names,
which are ferry's NotFound, Unavailable, InvalidArgument, Unimplemented and
InternalError with the shared mappings. The TF Serving APIs keep TF Serving's words
(`ferry.tfserving_messages`); only the V2 edges use these.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ferry.errors import (
    InternalError,
    InvalidArgument,
    NotFound,
    Unavailable,
    UnsupportedEncoding,
)

# -- the texts ---------------------------------------------------------------------------

UNKNOWN_MODEL = "Request for unknown model: '{model}' is not found"
UNKNOWN_VERSION = "Request for unknown model: '{model}' version {version} is not found"
NO_AVAILABLE_VERSIONS = "Request for unknown model: '{model}' has no available versions"
VERSION_NOT_READY = "Request for unknown model: '{model}' version {version} is not at ready state"
MODEL_NOT_READY = "Model version not ready"
ROUTE_NOT_FOUND = "Not Found"
VERSION_NOT_INTEGRAL = (
    "failed to get model version from specified version string '{text}' (details: stol), "
    "version should be an integral value > 0"
)
VERSION_NEGATIVE = (
    "invalid model version specified '{text}' , version should be an integral value > 0"
)
LOAD_NOT_IN_REPOSITORY = "failed to load '{model}', failed to poll from model repository"
LOAD_FAILED = "failed to load '{model}', {reason}"
CONTENTS_WITH_RAW = (
    "contents field must not be specified when using raw_input_contents for '{name}' for "
    "model '{model}'"
)
NO_DATA_FOR_INPUT = "unable to find data for input tensor '{name}' for model '{model}' in request."
INPUT_COUNT = (
    "{prefix}expected {expected} inputs but got {got} inputs for model '{model}'. Got "
    "input(s) {got_names}, but missing required input(s) {missing}. Please provide all "
    "required input(s)."
)
UNEXPECTED_INPUT = "unexpected inference input '{name}' for model '{model}'"
UNEXPECTED_OUTPUT = "unexpected inference output '{name}' for model '{model}'"
INPUT_DATATYPE = (
    "{prefix}inference input '{name}' data-type is '{got}', but model '{model}' expects "
    "'{expected}'"
)
INPUT_SHAPE = (
    "{prefix}unexpected shape for input '{name}' for model '{model}'. Expected {expected}, "
    "got {got}. {note}"
)
BATCH_DIMENSION_NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch "
    "dimension to be prepended to each input shape. If you want to specify the full "
    "shape including the batch dim in your input dims config, try setting max_batch_size "
    "to zero. See the model configuration docs for more info on max_batch_size."
)
INPUT_BYTE_SIZE = (
    "{prefix}input byte size mismatch for input '{name}' for model '{model}'. Expected "
    "{expected}, got {got}"
)
BINARY_INPUT_SHORT = (
    "unexpected size for input '{name}', expecting {missing} additional bytes for model '{model}'"
)
BINARY_DATA_LEFT_OVER = "unexpected additional input data for model '{model}'"
HEADER_LENGTH_UNPARSED = "Unable to parse Inference-Header-Content-Length, got: {value}"
HEADER_LENGTH_RANGE = "inference header size should be in range (0, {length}), got: {value}"
BINARY_WITHOUT_HEADER_LENGTH = (
    "must specify valid 'Infer-Header-Content-Length' in request header and "
    "'binary_data_size' when passing inputs in binary data format"
)
DECOMPRESSED_TOO_LARGE = (
    "Decompressed data size exceeds the maximum allowed value of {limit} bytes. Use "
    "--max_request_bytes to increase the limit."
)
UNSUPPORTED_COMPRESSION = "Unsupported compression type"
# Triton's header (with 501) naming the encodings it decompresses.
ACCEPTED_ENCODINGS = b"gzip, deflate"


# -- model lookup ------------------------------------------------------------------------


def unknown_model(model: str) -> NotFound:
    return NotFound(UNKNOWN_MODEL.format(model=model))


def unknown_version(model: str, version: int) -> NotFound:
    return NotFound(UNKNOWN_VERSION.format(model=model, version=version))


def no_available_versions(model: str) -> NotFound:
    return NotFound(NO_AVAILABLE_VERSIONS.format(model=model))


def version_not_ready(model: str, version: int) -> Unavailable:
    return Unavailable(VERSION_NOT_READY.format(model=model, version=version))


def route_not_found() -> NotFound:
    return NotFound(ROUTE_NOT_FOUND)


def model_version(text: str | None) -> int | None:
    """A V2 version string as a number, None for "" (the latest), parsed as Triton's
    `std::stol` does: leading blanks and a sign allowed, the leading digits taken
    ("2abc" is 2), nothing numeric refused, below 0 refused."""
    if not text:
        return None
    stripped = text.lstrip(" \t\n\v\f\r")
    sign = 1
    if stripped[:1] in ("+", "-"):
        sign = -1 if stripped[0] == "-" else 1
        stripped = stripped[1:]
    digits = len(stripped) - len(stripped.lstrip("0123456789"))
    if digits == 0:
        raise InvalidArgument(VERSION_NOT_INTEGRAL.format(text=text))
    value = sign * int(stripped[:digits])
    if not -(2**63) <= value < 2**63:  # a C++ long: stol throws out_of_range
        raise InvalidArgument(VERSION_NOT_INTEGRAL.format(text=text))
    if value < 0:
        raise InvalidArgument(VERSION_NEGATIVE.format(text=text))
    return value


# -- model repository --------------------------------------------------------------------


def load_not_in_repository(model: str) -> InternalError:
    return InternalError(LOAD_NOT_IN_REPOSITORY.format(model=model))


def load_failed(model: str, reason: str) -> InternalError:
    return InternalError(LOAD_FAILED.format(model=model, reason=reason))


# -- inputs and outputs ------------------------------------------------------------------


def request_prefix(request_id: str) -> str:
    """Triton's `[request id: ...] ` prefix of input-validation messages."""
    return f"[request id: {request_id or '<id_unknown>'}] "


def dims(shape: Iterable[int]) -> str:
    """A shape as Triton writes it: `[-1,16]`, no spaces."""
    return "[" + ",".join(str(d) for d in shape) + "]"


def _names(names: Iterable[str]) -> str:
    return "[" + ",".join(f"'{n}'" for n in names) + "]"


def input_count(
    model: str, request_id: str, expected: Sequence[str], got: Sequence[str]
) -> InvalidArgument:
    missing = [n for n in expected if n not in got]
    return InvalidArgument(
        INPUT_COUNT.format(
            prefix=request_prefix(request_id),
            expected=len(expected),
            got=len(got),
            model=model,
            got_names=_names(got),
            missing=_names(missing),
        )
    )


def unexpected_input(model: str, name: str) -> InvalidArgument:
    return InvalidArgument(UNEXPECTED_INPUT.format(name=name, model=model))


def unexpected_output(model: str, name: str) -> InvalidArgument:
    return InvalidArgument(UNEXPECTED_OUTPUT.format(name=name, model=model))


def input_datatype(
    model: str, request_id: str, name: str, got: str, expected: str
) -> InvalidArgument:
    return InvalidArgument(
        INPUT_DATATYPE.format(
            prefix=request_prefix(request_id), name=name, got=got, model=model, expected=expected
        )
    )


def input_shape(
    model: str,
    request_id: str,
    name: str,
    expected: Sequence[int],
    got: Sequence[int],
    batched: bool,
) -> InvalidArgument:
    return InvalidArgument(
        INPUT_SHAPE.format(
            prefix=request_prefix(request_id),
            name=name,
            model=model,
            expected=dims(expected),
            got=dims(got),
            note=BATCH_DIMENSION_NOTE if batched else "",
        )
    )


def input_byte_size(
    model: str, request_id: str, name: str, expected: int, got: int
) -> InvalidArgument:
    return InvalidArgument(
        INPUT_BYTE_SIZE.format(
            prefix=request_prefix(request_id), name=name, model=model, expected=expected, got=got
        )
    )


def contents_with_raw(model: str, name: str) -> InvalidArgument:
    return InvalidArgument(CONTENTS_WITH_RAW.format(name=name, model=model))


def no_data_for_input(model: str, name: str) -> InvalidArgument:
    return InvalidArgument(NO_DATA_FOR_INPUT.format(name=name, model=model))


def binary_input_short(model: str, name: str, missing: int) -> InvalidArgument:
    return InvalidArgument(BINARY_INPUT_SHORT.format(name=name, missing=missing, model=model))


def binary_data_left_over(model: str) -> InvalidArgument:
    return InvalidArgument(BINARY_DATA_LEFT_OVER.format(model=model))


def header_length_unparsed(value: str) -> InvalidArgument:
    return InvalidArgument(HEADER_LENGTH_UNPARSED.format(value=value))


def header_length_range(length: int, value: str) -> InvalidArgument:
    return InvalidArgument(HEADER_LENGTH_RANGE.format(length=length, value=value))


def binary_without_header_length() -> InvalidArgument:
    return InvalidArgument(BINARY_WITHOUT_HEADER_LENGTH)


# -- request compression -----------------------------------------------------------------


def decompressed_too_large(limit: int) -> InvalidArgument:
    return InvalidArgument(DECOMPRESSED_TOO_LARGE.format(limit=limit))


def unsupported_compression() -> UnsupportedEncoding:
    return UnsupportedEncoding(UNSUPPORTED_COMPRESSION)
