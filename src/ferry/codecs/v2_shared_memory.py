"""V2 tensors in shared memory: which tensors a request puts in a region, and the
tensor <-> region bytes (Triton's shared memory parameters, both transports).

An input or requested output carries `shared_memory_region` (a registered region's
name), `shared_memory_byte_size` and optionally `shared_memory_offset` among its
parameters. The bytes in a region have the binary tensor layout of `ferry.codecs.v2`.
The regions themselves (and every bounds check on them) belong to
`ferry.protocols.shared_memory`; codecs see them through `RegionAccess`, and
`ferry.codecs.v2` turns a window's bytes into a tensor and back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from ferry.errors import InvalidArgument, NotFound

REGION = "shared_memory_region"
BYTE_SIZE = "shared_memory_byte_size"
OFFSET = "shared_memory_offset"


@dataclass(frozen=True)
class Window:
    """Where a tensor lies in shared memory, as a request names it."""

    region: str
    offset: int
    byte_size: int


class RegionAccess(Protocol):
    """One client's view of the registered regions (checks who may use them)."""

    def check(self, window: Window) -> None: ...

    def read(self, window: Window) -> bytes: ...

    def write(self, window: Window, data: bytes, tensor: str) -> None: ...


def rest_window(parameters: dict, tensor: str) -> Window | None:
    """The window a REST input or output names in its `parameters`, or None."""
    if REGION not in parameters:
        for key in (OFFSET, BYTE_SIZE):
            if key in parameters:
                raise InvalidArgument(
                    f"'{key}' can not be specified without '{REGION}' parameter for tensor "
                    f"'{tensor}'"
                )
        return None
    region = parameters[REGION]
    if not isinstance(region, str):
        raise InvalidArgument(f"Unable to parse '{REGION}'")
    offset = parameters.get(OFFSET, 0)
    byte_size = parameters.get(BYTE_SIZE)
    for key, value in ((OFFSET, offset), (BYTE_SIZE, byte_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidArgument(f"Unable to parse '{key}'")
    return Window(region, offset, byte_size)


def grpc_window(parameters: Mapping, tensor: str) -> Window | None:
    """The window a gRPC input or output names in its `parameters` (InferParameter
    map), or None; Triton's errors for wrong parameter types."""
    if REGION not in parameters:
        for key in (OFFSET, BYTE_SIZE):
            if key in parameters:
                raise InvalidArgument(
                    f"'{key}' can not be specified without '{REGION}' parameter for tensor "
                    f"'{tensor}'"
                )
        return None
    region = parameters[REGION]
    if region.WhichOneof("parameter_choice") != "string_param":
        raise InvalidArgument(
            f"invalid value type for '{REGION}' parameter for tensor '{tensor}', "
            "expected string_param."
        )
    values = {OFFSET: 0, BYTE_SIZE: 0}
    for key in values:
        if key in parameters:
            param = parameters[key]
            if param.WhichOneof("parameter_choice") != "int64_param":
                raise InvalidArgument(
                    f"invalid value type for '{key}' parameter for tensor '{tensor}', "
                    "expected int64_param."
                )
            values[key] = param.int64_param
    return Window(region.string_param, values[OFFSET], values[BYTE_SIZE])


def unable_to_find(region: str) -> NotFound:
    """Triton's answer for a request naming a region that is not registered."""
    return NotFound(f"Unable to find shared memory region: '{region}'")


def input_sources_error(has_data: bool, has_binary: bool, has_region: bool) -> InvalidArgument:
    """Triton's error for a REST input that sets more than one source of data."""
    given = [
        f" '{key}'"
        for key, present in (
            ("data", has_data),
            ("binary_data_size", has_binary),
            (REGION, has_region),
        )
        if present
    ]
    return InvalidArgument(
        "Input must set only one of the following fields: 'data', 'binary_data_size' in "
        f"'parameters', '{REGION}' in 'parameters'. But set{''.join(given)}"
    )


def check_output_window(parameters: dict, tensor: str, grpc: bool = False) -> None:
    """Triton's refusals of an output in shared memory that also asks for
    classification or binary data (REST) or classification (gRPC)."""
    output = "output" if grpc else "Output"
    if "classification" in parameters:
        raise InvalidArgument(f"{output} can't set both '{REGION}' and 'classification'")
    if not grpc and parameters.get("binary_data") is True:
        raise InvalidArgument(f"Output can't set both '{REGION}' and 'binary_data'")
