"""Warm-up: run a new version once before it takes traffic.

The first run of a model pays for lazy allocation and kernel selection; doing it
at load keeps that cost out of a user's request. A version folder may carry
recorded requests: TF Serving's own `assets.extra/tf_serving_warmup_requests` (a
TFRecord file of PredictionLog records; their Predict requests are replayed) and/or
`assets.extra/warmup_requests.jsonl` (one TF Serving REST `:predict` body per line).
Without either, ferry generates one row of inputs from each signature. A warm-up
failure is a load failure: the version never serves.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
from google.protobuf.message import DecodeError

from ferry.codecs.tensor_proto import decode_inputs
from ferry.codecs.tfserving_json import decode_predict_body
from ferry.errors import FerryError
from ferry.protos import message_class
from ferry.runtimes import Runtime
from ferry.tensors import DEFAULT_SIGNATURE, STRING_DTYPE, Signature, TensorSpec

WARMUP_FILE = Path("assets.extra") / "warmup_requests.jsonl"
TF_WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
# TF Serving caps recorded warm-up requests at 1000; so does ferry.
MAX_WARMUP_REQUESTS = 1000


_EXAMPLE_METHODS = ("tensorflow/serving/classify", "tensorflow/serving/regress")


def warm_up(runtime: Runtime) -> int:
    """Run the recorded or generated warm-up requests; returns how many ran."""
    tf_recorded = runtime.version_dir / TF_WARMUP_FILE
    recorded = runtime.version_dir / WARMUP_FILE
    if tf_recorded.is_file() or recorded.is_file():
        count = _replay_prediction_logs(runtime, tf_recorded) if tf_recorded.is_file() else 0
        return count + (_replay(runtime, recorded) if recorded.is_file() else 0)
    # Classify/regress signatures parse tf.Examples whose features ferry cannot guess (an
    # empty example fails a required feature), so only recorded requests warm those up.
    generated = {
        name: signature
        for name, signature in runtime.signatures.items()
        if signature.method_name not in _EXAMPLE_METHODS
    }
    for name, signature in generated.items():
        runtime.run(name, generated_inputs(signature))
    return len(generated)


def _replay(runtime: Runtime, path: Path) -> int:
    count = 0
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        if count >= MAX_WARMUP_REQUESTS:
            break
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{WARMUP_FILE} line {line_number}: {exc}") from None
        request = decode_predict_body(body, runtime.signatures)
        runtime.run(request.signature_name, request.inputs)
        count += 1
    return count


def _replay_prediction_logs(runtime: Runtime, path: Path) -> int:
    """Replay the Predict requests of a TF Serving warm-up file. Classify, Regress and
    MultiInference records need TF signatures that ferry's models lack: they fail the load,
    as a failing warm-up request fails it in TF Serving."""
    log_class = message_class("tensorflow.serving.PredictionLog")
    count = 0
    for index, record in enumerate(read_tfrecords(path)):
        if count >= MAX_WARMUP_REQUESTS:
            break
        where = f"{TF_WARMUP_FILE} record {index}"
        try:
            entry = log_class.FromString(record)
        except DecodeError as exc:
            raise ValueError(f"{where}: not a PredictionLog: {exc}") from None
        kind = entry.WhichOneof("log_type")
        if kind != "predict_log":
            raise ValueError(f"{where}: ferry replays predict_log records only, not {kind}")
        request = entry.predict_log.request
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = runtime.signatures.get(signature_name)
        if signature is None:
            raise ValueError(f"{where}: the model has no signature {signature_name!r}")
        try:
            inputs = decode_inputs(request.inputs, signature)
        except FerryError as exc:
            raise ValueError(f"{where}: {exc.message}") from None
        runtime.run(signature_name, inputs)
        count += 1
    return count


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
