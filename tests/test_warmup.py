"""Warm-up from TF Serving's recorded requests (`assets.extra/tf_serving_warmup_requests`).

A recording runtime stands in for a model, so the tests see exactly which inputs were
replayed; tests/compat/ replays a file written by TensorFlow's own TFRecordWriter.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from ferry.codecs.tensor_proto import encode_tensor
from ferry.protos import message_class
from ferry.tensors import Signature, TensorSpec
from ferry.warmup import TF_WARMUP_FILE, WARMUP_FILE, _masked_crc32c, crc32c, warm_up


class RecordingRuntime:
    """The part of a runtime that warm-up uses: a folder, signatures, and `run`."""

    def __init__(self, version_dir: Path) -> None:
        self.version_dir = version_dir
        spec = TensorSpec("x", np.dtype(np.float32), (-1, 2))
        self.signatures = {"serving_default": Signature({"x": spec}, {"y": spec})}
        self.runs: list[tuple[str, dict[str, np.ndarray]]] = []

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict:
        self.runs.append((signature_name, inputs))
        return inputs


def tfrecord(*records: bytes) -> bytes:
    frames = []
    for data in records:
        length = struct.pack("<Q", len(data))
        frames.append(
            length
            + struct.pack("<I", _masked_crc32c(length))
            + data
            + struct.pack("<I", _masked_crc32c(data))
        )
    return b"".join(frames)


def predict_log(array: np.ndarray, signature_name: str = "") -> bytes:
    entry = message_class("tensorflow.serving.PredictionLog")()
    request = entry.predict_log.request
    request.model_spec.name = "m"
    request.model_spec.signature_name = signature_name
    encode_tensor(array, "x", into=request.inputs["x"])
    return entry.SerializeToString()


@pytest.fixture
def runtime(tmp_path: Path) -> RecordingRuntime:
    (tmp_path / "assets.extra").mkdir()
    return RecordingRuntime(tmp_path)


def test_crc32c_matches_the_standard_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283


def test_predict_logs_are_replayed_in_order(runtime: RecordingRuntime) -> None:
    first = np.array([[1.0, 2.0]], np.float32)
    second = np.zeros((3, 2), np.float32)
    (runtime.version_dir / TF_WARMUP_FILE).write_bytes(
        tfrecord(predict_log(first), predict_log(second, "serving_default"))
    )

    assert warm_up(runtime) == 2
    assert [name for name, _ in runtime.runs] == ["serving_default"] * 2
    np.testing.assert_array_equal(runtime.runs[0][1]["x"], first)
    np.testing.assert_array_equal(runtime.runs[1][1]["x"], second)


def test_both_recorded_files_are_replayed(runtime: RecordingRuntime) -> None:
    (runtime.version_dir / TF_WARMUP_FILE).write_bytes(
        tfrecord(predict_log(np.ones((1, 2), np.float32)))
    )
    (runtime.version_dir / WARMUP_FILE).write_text('{"instances": [[5.0, 6.0]]}\n')

    assert warm_up(runtime) == 2
    assert runtime.runs[1][1]["x"].tolist() == [[5.0, 6.0]]


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (lambda: tfrecord(predict_log(np.ones((1, 3), np.float32))), "record 0: Input 'x'"),
        (lambda: tfrecord(predict_log(np.ones((1, 2), np.float32), "other")), "no signature"),
        (
            lambda: tfrecord(
                message_class("tensorflow.serving.PredictionLog")(
                    classify_log={"request": {"model_spec": {"name": "m"}}}
                ).SerializeToString()
            ),
            "No classification inputs found in SignatureDef",
        ),
        (lambda: tfrecord(b"\xff\xff\xff"), "Failed to parse warmup record"),
        (lambda: b"this is not a tfrecord file", "corrupt record length"),
        (lambda: tfrecord(predict_log(np.ones((1, 2), np.float32)))[:-6], "truncated record"),
    ],
)
def test_a_bad_warmup_file_fails_the_load_with_the_reason(
    runtime: RecordingRuntime, content, error: str
) -> None:
    (runtime.version_dir / TF_WARMUP_FILE).write_bytes(content())

    with pytest.raises(ValueError, match=error):
        warm_up(runtime)
