"""The Open Inference Protocol ("KServe V2") tensor codec: JSON and binary <-> numpy.

Shared by the REST and gRPC transports. A V2 tensor names its own datatype and shape,
so wire data becomes arrays without knowing the model; `check_against` then refuses a
tensor whose datatype differs from the model's (V2 clients say what they send, and
silently converting FP64 into an FP32 input would hide client bugs, as Triton refuses it).

Binary layout (Triton's binary tensor data extension, also gRPC's raw contents):
little-endian, row-major, native element size; BOOL one byte per element; BYTES each
element as a 4-byte little-endian length followed by its bytes.

REST bodies: a JSON header, optionally followed by the binary chunks of the inputs that
carry a `binary_data_size` parameter, in input order; `Inference-Header-Content-Length`
tells where the JSON ends. Every failure raises InvalidArgument naming the tensor.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from ferry import triton_messages
from ferry.codecs.aligned import aligned, aligned_view
from ferry.codecs.classification import class_count
from ferry.codecs.v2_shared_memory import (
    RegionAccess,
    Window,
    check_output_window,
    input_sources_error,
    rest_window,
    unable_to_find,
)
from ferry.errors import InvalidArgument
from ferry.tensor_limits import TensorBudget, unlimited
from ferry.tensors import STRING_DTYPE, Signature, TensorSpec

Tensors = dict[str, np.ndarray]

_NUMPY_BY_DATATYPE: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": STRING_DTYPE,
}
_DATATYPE_BY_NUMPY = {dtype: name for name, dtype in _NUMPY_BY_DATATYPE.items()}
# Triton's model-configuration names (model_config.proto DataType): BYTES is TYPE_STRING.
_CONFIG_TYPE_BY_DATATYPE = {
    name: ("TYPE_STRING" if name == "BYTES" else f"TYPE_{name}") for name in _NUMPY_BY_DATATYPE
}
_LENGTH = struct.Struct("<I")


def v2_datatype(dtype: np.dtype) -> str:
    """The V2 datatype name of a numpy dtype ("FP32" for float32)."""
    try:
        return _DATATYPE_BY_NUMPY[np.dtype(dtype)]
    except KeyError:
        raise InvalidArgument(f"Data type {np.dtype(dtype)} has no V2 datatype") from None


def config_datatype(dtype: np.dtype) -> str:
    """Triton's model-configuration name of a numpy dtype ("TYPE_FP32")."""
    return _CONFIG_TYPE_BY_DATATYPE[v2_datatype(dtype)]


def numpy_dtype(datatype: str, name: str = "") -> np.dtype:
    """The numpy dtype of a V2 datatype name; InvalidArgument for unknown names."""
    try:
        return _NUMPY_BY_DATATYPE[datatype]
    except KeyError:
        where = f" of tensor '{name}'" if name else ""
        raise InvalidArgument(
            f"Unsupported datatype '{datatype}'{where}; expected one of "
            f"{', '.join(_NUMPY_BY_DATATYPE)}"
        ) from None


def checked_shape(shape: object, name: str) -> tuple[int, ...]:
    """A request shape as a tuple of non-negative ints."""
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidArgument(
            f"Input '{name}' needs a 'shape' of non-negative integers; got {shape!r}"
        )
    return tuple(shape)


# -- arrays from wire data -------------------------------------------------------------


def array_from_values(
    name: str,
    datatype: str,
    shape: tuple[int, ...],
    values: object,
    budget: TensorBudget | None = None,
) -> np.ndarray:
    """A tensor from JSON `data` (nested or flat) or gRPC typed contents, in `shape`,
    charged to `budget` (None: no byte limit) before it is built."""
    dtype = numpy_dtype(datatype, name)
    count = (budget if budget is not None else unlimited()).admit(name, shape, dtype.itemsize)
    if dtype == STRING_DTYPE:
        flat = _flatten_strings(values, name)
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        try:
            raw = np.asarray(values)
        except ValueError as exc:
            raise InvalidArgument(f"Input '{name}' data is ragged or malformed: {exc}") from None
        kind = raw.dtype.kind
        if kind in "OUS" and raw.size:
            raise InvalidArgument(
                f"Input '{name}' data must hold {datatype} numbers; found strings or mixed values"
            )
        if dtype.kind == "b" and raw.size and kind != "b":
            raise InvalidArgument(f"Input '{name}' data must hold true/false values (BOOL)")
        if dtype.kind in "iu" and kind == "f" and raw.size and not np.all(raw == np.floor(raw)):
            raise InvalidArgument(
                f"Input '{name}' data holds non-integer numbers but its datatype is {datatype}"
            )
        try:
            array = raw.astype(dtype, copy=False).reshape(-1)
        except (ValueError, OverflowError) as exc:
            raise InvalidArgument(f"Input '{name}' data does not fit {datatype}: {exc}") from None
    if array.size != count:
        raise InvalidArgument(
            f"Input '{name}' has {array.size} elements in 'data' but shape {list(shape)} "
            f"needs {count}"
        )
    return aligned(array.reshape(shape))


def _flatten_strings(values: object, name: str) -> list[bytes]:
    out: list[bytes] = []
    stack = [values]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            stack.extend(reversed(item))
        elif isinstance(item, str):
            out.append(item.encode())
        elif isinstance(item, bytes):
            out.append(item)
        else:
            raise InvalidArgument(
                f"Input '{name}' is BYTES, so its data must hold strings; "
                f"found {type(item).__name__}"
            )
    return out


def array_from_raw(
    name: str,
    datatype: str,
    shape: tuple[int, ...],
    buffer: bytes | memoryview,
    budget: TensorBudget | None = None,
    model: str = "",
    request_id: str = "",
) -> np.ndarray:
    """A tensor from its binary form (REST binary extension or gRPC raw contents),
    charged to `budget` (None: no byte limit) before it is built; a size that does not
    fit the shape gets Triton's message naming `model` and `request_id`."""
    dtype = numpy_dtype(datatype, name)
    count = (budget if budget is not None else unlimited()).admit(name, shape, dtype.itemsize)
    if dtype == STRING_DTYPE:
        return _bytes_elements(name, buffer, count).reshape(shape)
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise triton_messages.input_byte_size(model, request_id, name, expected, len(buffer))
    if dtype.kind == "b":
        # One byte per element; any non-zero byte is true.
        return aligned(np.frombuffer(buffer, dtype=np.uint8).astype(np.bool_).reshape(shape))
    return aligned_view(buffer, dtype, shape)


def _bytes_elements(name: str, buffer: bytes | memoryview, count: int) -> np.ndarray:
    view = memoryview(buffer)
    # Each element takes at least its 4-byte length: a claim of more elements than that
    # is refused before the array of `count` references is allocated.
    if count > len(view) // _LENGTH.size:
        raise InvalidArgument(
            f"Input '{name}' claims {count} BYTES elements but its {len(view)} bytes of "
            f"binary data hold at most {len(view) // _LENGTH.size} (each element starts "
            "with a 4-byte length)"
        )
    out = np.empty(count, dtype=object)
    offset, size = 0, len(view)
    for index in range(count):
        if offset + 4 > size:
            raise InvalidArgument(
                f"Input '{name}' binary BYTES data ends after {index} of {count} elements"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > size:
            raise InvalidArgument(
                f"Input '{name}' binary BYTES element {index} claims {length} bytes but only "
                f"{size - offset} remain"
            )
        out[index] = bytes(view[offset : offset + length])
        offset += length
    if offset != size:
        raise InvalidArgument(
            f"Input '{name}' has {size - offset} bytes of binary data beyond its {count} elements"
        )
    return out


def array_from_region(
    name: str,
    datatype: str,
    shape: tuple[int, ...],
    window: Window,
    regions: RegionAccess | None,
    budget: TensorBudget | None,
) -> np.ndarray:
    """An input tensor from its shared memory window (`ferry.codecs.v2_shared_memory`):
    the window is checked against its region (Triton's errors first), its size held to
    the request's tensor budget before a byte is copied out, then the bytes are decoded
    as binary tensor data."""
    budget = budget if budget is not None else unlimited()
    access = _regions(regions, window)
    access.check(window)
    if budget.spent + window.byte_size > budget.max_bytes:
        budget.charge(f"Input '{name}' in shared memory region '{window.region}'", window.byte_size)
    data = access.read(window)
    return array_from_raw(name, datatype, shape, data, budget)


def write_to_region(
    name: str, array: np.ndarray, window: Window, regions: RegionAccess | None
) -> None:
    """An output tensor's binary form written at the start of its window."""
    _regions(regions, window).write(window, raw_bytes(array), name)


def _regions(regions: RegionAccess | None, window: Window) -> RegionAccess:
    if regions is None:  # no registry: no region can have been registered
        raise unable_to_find(window.region)
    return regions


def raw_bytes(array: np.ndarray) -> bytes:
    """The binary form of a tensor (see the module docstring)."""
    if array.dtype == STRING_DTYPE:
        parts = []
        for item in array.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    if array.dtype.kind == "b":
        return array.astype(np.uint8).tobytes()
    little = array.dtype.newbyteorder("<")
    return np.ascontiguousarray(array, dtype=little).tobytes()


def check_against(
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    model: str = "",
    request_id: str = "",
    batched: bool | None = None,
) -> None:
    """Refuse inputs whose count, names, datatypes or shapes do not fit the model, with
    Triton's messages in Triton's order. `batched` (default: the signature is batchable)
    says whether the model's config reports max_batch_size > 0, which adds Triton's
    note on the batch dimension to a shape error."""
    expected = list(signature.inputs)
    if len(inputs) != len(expected):
        raise triton_messages.input_count(model, request_id, expected, list(inputs))
    for name in inputs:
        if name not in signature.inputs:
            raise triton_messages.unexpected_input(model, name)
    for name, array in inputs.items():
        spec = signature.inputs[name]
        if spec.dtype != array.dtype:
            raise triton_messages.input_datatype(
                model, request_id, name, v2_datatype(array.dtype), _datatype_or_name(spec)
            )
        if signature.runtime_checks_shapes or spec.shape is None:
            continue
        if len(spec.shape) != array.ndim or any(
            want not in (-1, got) for want, got in zip(spec.shape, array.shape, strict=True)
        ):
            raise triton_messages.input_shape(
                model,
                request_id,
                name,
                spec.shape,
                array.shape,
                signature.batchable if batched is None else batched,
            )
    signature.check_inputs(inputs)  # the signature's own rules, should it have more


def check_outputs(signature: Signature, names: Iterable[str], model: str = "") -> None:
    """Refuse requested outputs the model does not have (Triton's message)."""
    for name in names:
        if name not in signature.outputs:
            raise triton_messages.unexpected_output(model, name)


def _datatype_or_name(spec: TensorSpec) -> str:
    try:
        return v2_datatype(spec.dtype)
    except InvalidArgument:
        return str(spec.dtype)


def tensor_metadata(spec: TensorSpec) -> dict:
    """`$metadata_tensor`: name, datatype and shape with -1 for dynamic dimensions."""
    return {
        "name": spec.name,
        "datatype": _datatype_or_name(spec),
        "shape": list(spec.shape) if spec.shape is not None else [-1],
    }


# -- REST bodies ------------------------------------------------------------------------


@dataclass
class RestInferRequest:
    """A decoded REST inference request: arrays by input name plus what the answer needs."""

    inputs: Tensors
    id: str | None = None
    # Requested output names with whether each is wanted binary; None = all outputs.
    outputs: dict[str, bool] | None = None
    binary_output_default: bool = False
    timeout_seconds: float | None = None
    parameters: dict = field(default_factory=dict)
    # Outputs asked for with Triton's `classification` parameter: how many classes each.
    class_counts: dict[str, int] = field(default_factory=dict)
    # Outputs to write into shared memory (they get no data in the response), and the
    # client's view of the regions they are in.
    shm_outputs: dict[str, Window] = field(default_factory=dict)
    regions: RegionAccess | None = None


# The ASGI scope extension under which the Rust front passes the infer body it decoded
# on its own threads (rust/src/codec/v2_inputs.rs: numeric inputs with flat data, the
# request id and plain parameters; ferry.dataplane.front).
V2_INPUTS_EXTENSION = "ferry.v2_inputs"
FrontInputs = tuple[str | None, dict | None, list[tuple[str, str, list[int], bytearray]]]


def parsed_by_front(scope: Mapping[str, Any]) -> dict | None:
    """The infer body the Rust front decoded, as orjson reads it but for each input's
    `data`: the same numbers as one float64 array (which `array_from_values` converts to
    the datatype as it converts orjson's list). None when the front did not decode it."""
    decoded: FrontInputs | None = scope.get("extensions", {}).get(V2_INPUTS_EXTENSION)
    if decoded is None:
        return None
    request_id, parameters, inputs = decoded
    request: dict[str, Any] = {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": shape, "data": np.frombuffer(data, "<f8")}
            for name, datatype, shape, data in inputs
        ]
    }
    if request_id is not None:
        request["id"] = request_id
    if parameters is not None:
        request["parameters"] = parameters
    return request


def decode_rest_request(
    body: bytes,
    header_length: int | None,
    budget: TensorBudget | None = None,
    model: str = "",
    regions: RegionAccess | None = None,
    parsed: dict | None = None,
) -> RestInferRequest:
    """Split a REST body into its JSON header and binary chunks and decode the inputs,
    each charged to `budget` (the request's `--max_tensor_bytes`) before it is built.
    Binary-data errors are Triton's, naming `model` (the URL's). `parsed`: the body as
    the Rust front read it (`parsed_by_front`; never with a binary part), checked from
    here on as if orjson had read it."""
    if parsed is not None and header_length is None:
        return _decode_parsed(parsed, memoryview(b""), None, budget, model, regions)
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise triton_messages.header_length_range(len(body), str(header_length))
        header, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        header, binary = body, memoryview(b"")
    try:
        request = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"The request body is not valid JSON: {exc}") from None
    return _decode_parsed(request, binary, header_length, budget, model, regions)


def _decode_parsed(
    request: object,
    binary: memoryview,
    header_length: int | None,
    budget: TensorBudget | None,
    model: str,
    regions: RegionAccess | None,
) -> RestInferRequest:
    if not isinstance(request, dict):
        raise InvalidArgument("The request body must be a JSON object")
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidArgument("The request needs a non-empty 'inputs' list")
    inputs: Tensors = {}
    offset = 0
    request_id = request.get("id")
    log_id = request_id if isinstance(request_id, str) else ""
    for item in raw_inputs:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidArgument("Each entry of 'inputs' needs a 'name'")
        name = item["name"]
        if name in inputs:
            raise InvalidArgument(f"Input '{name}' is given twice")
        datatype = item.get("datatype")
        if not isinstance(datatype, str):
            raise InvalidArgument(f"Input '{name}' needs a 'datatype'")
        shape = checked_shape(item.get("shape"), name)
        parameters = _parameters(item, f"input '{name}'")
        size = parameters.get("binary_data_size")
        window = rest_window(parameters, name)
        if window is not None:
            if size is not None or "data" in item:
                raise input_sources_error("data" in item, size is not None, True)
            inputs[name] = array_from_region(name, datatype, shape, window, regions, budget)
        elif size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidArgument(f"Input '{name}' binary_data_size must be an integer >= 0")
            if size and header_length is None:
                raise triton_messages.binary_without_header_length()
            if offset + size > len(binary):
                missing = offset + size - len(binary)
                raise triton_messages.binary_input_short(model, name, missing)
            chunk = binary[offset : offset + size]
            inputs[name] = array_from_raw(name, datatype, shape, chunk, budget, model, log_id)
            offset += size
        elif "data" in item:
            inputs[name] = array_from_values(name, datatype, shape, item["data"], budget)
        else:
            raise InvalidArgument(f"Input '{name}' has neither 'data' nor binary_data_size")
    if offset != len(binary):
        raise triton_messages.binary_data_left_over(model)
    parameters = _parameters(request, "the request")
    decoded = RestInferRequest(inputs, parameters=parameters, regions=regions)
    if request_id is not None:
        if not isinstance(request_id, str):
            raise InvalidArgument("'id' must be a string")
        decoded.id = request_id
    decoded.binary_output_default = parameters.get("binary_data_output") is True
    timeout = parameters.get("timeout")
    if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0:
        decoded.timeout_seconds = timeout / 1e6  # microseconds (Triton's schedule policy)
    raw_outputs = request.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidArgument("'outputs' must be a list")
        decoded.outputs = {}
        for item in raw_outputs:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidArgument("Each entry of 'outputs' needs a 'name'")
            out_params = _parameters(item, f"output '{item['name']}'")
            window = rest_window(out_params, item["name"])
            if window is not None:
                check_output_window(out_params, item["name"])
                _regions(regions, window).check(window)  # Triton checks it before the run
                decoded.shm_outputs[item["name"]] = window
            binary_flag = out_params.get("binary_data", decoded.binary_output_default)
            decoded.outputs[item["name"]] = binary_flag is True
            count = class_count(out_params.get("classification"), item["name"])
            if count is not None:
                decoded.class_counts[item["name"]] = count
    return decoded


def _parameters(item: dict, where: str) -> dict:
    parameters = item.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidArgument(f"'parameters' of {where} must be an object")
    return parameters


def encode_rest_response(
    model: str,
    version: int,
    outputs: Tensors,
    request: RestInferRequest,
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    wanted = (
        request.outputs
        if request.outputs is not None
        else dict.fromkeys(outputs, request.binary_output_default)
    )
    entries = []
    chunks: list[bytes] = []
    for name, binary in wanted.items():
        array = outputs[name]
        window = request.shm_outputs.get(name)
        if window is not None:  # written into the region; the response carries no data
            write_to_region(name, array, window, request.regions)
            entries.append(
                {"name": name, "datatype": v2_datatype(array.dtype), "shape": list(array.shape)}
            )
            continue
        entry: dict = {
            "name": name,
            "datatype": v2_datatype(array.dtype),
            "shape": list(array.shape),
        }
        if binary:
            chunk = raw_bytes(array)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = _json_values(name, array)
        entries.append(entry)
    response: dict = {"model_name": model, "model_version": str(version)}
    if request.id is not None:
        response["id"] = request.id
    response["outputs"] = entries
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _json_values(name: str, array: np.ndarray) -> object:
    """Flat row-major values; BYTES as UTF-8 strings (binary form carries any bytes)."""
    flat = array.reshape(-1)
    if array.dtype == STRING_DTYPE:
        try:
            return [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"Output '{name}' holds bytes that are not UTF-8 text; request it with "
                "binary_data: true"
            ) from None
    if array.dtype == np.float16:
        flat = flat.astype(np.float32)
    # orjson writes arrays natively (C-contiguous only); JSON has no NaN, so NaN is null.
    return np.ascontiguousarray(flat)
