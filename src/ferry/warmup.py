"""Warm-up: run a new version once before it takes traffic.

The first run of a model pays for lazy allocation and kernel selection; doing it
at load keeps that cost out of a user's request. A version folder may carry
recorded requests: TF Serving's own `assets.extra/tf_serving_warmup_requests` (a
TFRecord file of PredictionLog records) and/or `assets.extra/warmup_requests.jsonl`
(one TF Serving REST `:predict` body per line).

Recorded warm-up is strict, as in TF Serving (saved_model_warmup*.cc): its Predict,
Classify, Regress and MultiInference records are replayed once each, in order; a record
that fails, a file that is not TFRecord, a record that is not a PredictionLog, a log
type TF Serving does not replay (session_run_log, predict_streamed_log: UNIMPLEMENTED),
or more than 1000 records fail the load. A record with no log type is skipped.

Without a recording, ferry (not TF Serving, which then warms nothing) generates one row
of inputs per signature. That is a guess (a string that a graph parses as a tf.Example,
an id a lookup table lacks), so it is best effort: failures are logged in one warning
and the version serves anyway. Classify/regress signatures (TF1 method names) are not
guessed at: their tf.Example features are unknown.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError

from ferry.codecs.example_tasks import (
    CLASSIFY,
    CLASSIFY_METHOD,
    REGRESS,
    REGRESS_METHOD,
    ExampleTask,
    classify_results,
    example_task,
    multi_inference_tasks,
    regress_results,
)
from ferry.codecs.tensor_proto import decode_inputs
from ferry.codecs.tf_example import examples_from_input, serialized_examples
from ferry.codecs.tfserving_json import decode_predict_body
from ferry.errors import FerryError, InvalidArgument, Unimplemented
from ferry.protos import message_class
from ferry.runtimes import Runtime
from ferry.tensors import DEFAULT_SIGNATURE, STRING_DTYPE, Signature, TensorSpec

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "warmup_requests.jsonl"
TF_WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
# TF Serving's WarmupConsts::kMaxNumRecords; more records fail the load, there and here.
MAX_WARMUP_REQUESTS = 1000
# PredictionLog log types TF Serving refuses to replay, by field number. ferry's proto set
# leaves session_run_log out, so that one arrives as an unknown field.
_UNREPLAYED_LOG_FIELDS = frozenset({5, 7})  # session_run_log, predict_streamed_log

_EXAMPLE_METHODS = (CLASSIFY_METHOD, REGRESS_METHOD)


def warm_up(runtime: Runtime, iterations: int = 1) -> int:
    """Run the recorded requests (strict), each `iterations` times (TF Serving's
    `--num_request_iterations_for_warmup`), or generated ones once (best effort); returns
    how many records ran. Raises, failing the load, only for a recorded request."""
    tf_recorded = runtime.version_dir / TF_WARMUP_FILE
    recorded = runtime.version_dir / WARMUP_FILE
    iterations = max(iterations, 1)
    if tf_recorded.is_file() or recorded.is_file():
        count = (
            _replay_prediction_logs(runtime, tf_recorded, iterations)
            if tf_recorded.is_file()
            else 0
        )
        return count + (_replay(runtime, recorded, iterations) if recorded.is_file() else 0)
    return _run_generated(runtime)


def _run_generated(runtime: Runtime) -> int:
    ran, failures = 0, []
    for name, signature in runtime.signatures.items():
        if signature.method_name in _EXAMPLE_METHODS:
            continue
        try:
            runtime.run(name, generated_inputs(signature))
            ran += 1
        except Exception as exc:  # a guess that does not fit is no fault of the model
            # TF puts its reason last, after where in the graph it was raised.
            lines = (getattr(exc, "message", None) or str(exc)).strip().splitlines()
            failures.append(f"{name!r} ({type(exc).__name__}: {lines[-1] if lines else ''})")
    if failures:
        log.warning(
            "%s: generated warm-up input did not fit signature %s; the version serves "
            "without warm-up (record requests in %s to warm it up)",
            runtime.version_dir,
            "; ".join(failures),
            TF_WARMUP_FILE,
        )
    return ran


def _too_many(path: Path) -> ValueError:
    return ValueError(
        f"Number of warmup records exceeds the maximum ({MAX_WARMUP_REQUESTS}) at {path}"
    )


def _replay(runtime: Runtime, path: Path, iterations: int) -> int:
    count = 0
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        if count >= MAX_WARMUP_REQUESTS:
            raise _too_many(path)
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{WARMUP_FILE} line {line_number}: {exc}") from None
        request = decode_predict_body(body, runtime.signatures)
        for _ in range(iterations):
            runtime.run(request.signature_name, request.inputs)
        count += 1
    return count


def _replay_prediction_logs(runtime: Runtime, path: Path, iterations: int) -> int:
    """Replay a TF Serving warm-up file's records; the first failure fails the load."""
    log_class = message_class("tensorflow.serving.PredictionLog")
    count = 0
    for index, record in enumerate(read_tfrecords(path)):
        if count >= MAX_WARMUP_REQUESTS:
            raise _too_many(path)
        where = f"{TF_WARMUP_FILE} record {index}"
        try:
            entry = log_class.FromString(record)
        except DecodeError:
            raise ValueError(
                f"{where}: Failed to parse warmup record: {record[:64]!r} from {path}"
            ) from None
        try:
            for _ in range(iterations):
                _replay_log(runtime, entry)
        except FerryError as exc:
            raise ValueError(f"{where}: {exc.message}") from None
        except Exception as exc:  # the model's own failure: name the record too
            raise ValueError(f"{where}: {type(exc).__name__}: {exc}") from exc
        count += 1
    return count


def _replay_log(runtime: Runtime, entry: Any) -> None:
    """One PredictionLog's request, run and its outputs checked as its API would."""
    kind = entry.WhichOneof("log_type")
    if kind is None or kind == "predict_streamed_log":
        numbers = {entry.DESCRIPTOR.fields_by_name[kind].number} if kind else set()
        numbers |= {f.field_number for f in unknown_fields.UnknownFieldSet(entry)}
        refused = sorted(numbers & _UNREPLAYED_LOG_FIELDS)
        if refused:
            raise Unimplemented(f"Unsupported log_type for warmup: {refused[0]}")
        return  # no log type: nothing to replay, as in TF Serving
    if kind == "predict_log":
        request = entry.predict_log.request
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = runtime.signatures.get(name)
        if signature is None:
            raise InvalidArgument(f"the model has no signature {name!r}")
        runtime.run(name, decode_inputs(request.inputs, signature))
        return
    if kind == "multi_inference_log":
        request = entry.multi_inference_log.request
        tasks = multi_inference_tasks(request.tasks, runtime.signatures)
    else:
        request = getattr(entry, kind).request
        method = CLASSIFY if kind == "classify_log" else REGRESS
        tasks = [example_task(runtime.signatures, request.model_spec.signature_name, method)]
    examples = examples_from_input(request.input)
    tensor = serialized_examples(examples)
    for task in tasks:
        _run_task(runtime, task, tensor, len(examples))


def _run_task(runtime: Runtime, task: ExampleTask, examples: np.ndarray, count: int) -> None:
    outputs = runtime.run(task.signature_name, task.feeds(examples))
    if task.method == CLASSIFY:
        classify_results(outputs, count)
    else:
        regress_results(outputs, count)


def read_tfrecords(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file: each is a little-endian uint64 length, the masked
    CRC-32C of those 8 bytes, the data, and the masked CRC-32C of the data.

    The length's checksum is verified (8 bytes, so cheap in Python), which catches a file
    that is not a TFRecord file before a garbage length is trusted. The data checksums are
    NOT verified: pure-Python CRC-32C costs about a second per megabyte, and a damaged
    record still fails to parse as a PredictionLog (or fails its request), which fails
    the load just the same.
    """
    with path.open("rb") as stream:
        while header := stream.read(12):
            if len(header) != 12:
                raise ValueError(f"{path.name}: truncated record header")
            length, length_crc = struct.unpack("<QI", header)
            if _masked_crc32c(header[:8]) != length_crc:
                raise ValueError(f"{path.name}: corrupt record length (not a TFRecord file?)")
            data = stream.read(length)
            if len(data) != length or len(stream.read(4)) != 4:
                raise ValueError(f"{path.name}: truncated record")
            yield data


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord framing uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def generated_inputs(signature: Signature, rows: int = 1) -> dict[str, np.ndarray]:
    """Deterministic inputs that fit `signature`: dynamic dimensions become `rows` or 1."""
    rng = np.random.default_rng(0)
    return {name: _example(spec, rows, rng) for name, spec in signature.inputs.items()}


def _example(spec: TensorSpec, rows: int, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(
        (rows if axis == 0 else 1) if dim == -1 else dim
        for axis, dim in enumerate(spec.shape or (rows,))
    )
    if spec.dtype == STRING_DTYPE:
        return np.full(shape, b"", dtype=object)
    if spec.dtype.kind == "f":
        return rng.random(shape).astype(spec.dtype)
    if spec.dtype.kind == "b":
        return np.zeros(shape, dtype=bool)
    # Integer inputs are often indices (token ids, categories): zero is always valid.
    return np.zeros(shape, dtype=spec.dtype)
