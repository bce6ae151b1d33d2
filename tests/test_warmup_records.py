"""Warm-up as TF Serving runs it: recorded Classify, Regress and MultiInference requests
are replayed and their outputs checked; the record limit, unreplayable log types and bad
outputs fail the load with TF Serving's words; a generated warm-up that does not fit the
model costs one warning, never the load.

A recording runtime stands in for a model (tests/test_warmup.py's way), with a classify
and a regress signature over serialized tf.Examples, so the tests see exactly which
inputs each record fed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from test_warmup import predict_log, tfrecord

from ferry.protos import message_class
from ferry.tensors import STRING_DTYPE, Signature, TensorSpec
from ferry.warmup import MAX_WARMUP_REQUESTS, TF_WARMUP_FILE, warm_up

FLOAT = np.dtype(np.float32)
EXAMPLES = TensorSpec("inputs", STRING_DTYPE, (-1,))


class ExampleRuntime:
    """Signatures `classify` (scores [N, 1]), `regress` (outputs [N]), `serving_default`
    (x float [N, 2]); `run` records its inputs and answers one value per example, or
    the outputs in `answers` when a test sets them."""

    def __init__(self, version_dir: Path) -> None:
        self.version_dir = version_dir
        x = TensorSpec("x", FLOAT, (-1, 2))
        self.signatures = {
            "classify": Signature(
                {"inputs": EXAMPLES}, {"scores": TensorSpec("scores", FLOAT, (-1, 1))}
            ),
            "regress": Signature(
                {"inputs": EXAMPLES}, {"outputs": TensorSpec("outputs", FLOAT, (-1,))}
            ),
            "serving_default": Signature({"x": x}, {"y": x}),
        }
        self.runs: list[tuple[str, dict[str, np.ndarray]]] = []
        self.answers: dict[str, dict[str, np.ndarray]] = {}

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.runs.append((signature_name, inputs))
        if signature_name in self.answers:
            return self.answers[signature_name]
        rows = len(next(iter(inputs.values())))
        if signature_name == "classify":
            return {"scores": np.full((rows, 1), 0.5, FLOAT)}
        if signature_name == "regress":
            return {"outputs": np.full(rows, 1.5, FLOAT)}
        return {"y": inputs["x"]}


def _examples(request, values: list[float]) -> list[bytes]:
    """Add one example per value (feature `x`) to a request's Input; their serialized forms."""
    serialized = []
    for value in values:
        example = request.input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(value)
        serialized.append(example.SerializeToString())
    return serialized


def log_entry(**fields) -> bytes:
    return message_class("tensorflow.serving.PredictionLog")(**fields).SerializeToString()


@pytest.fixture
def runtime(tmp_path: Path) -> ExampleRuntime:
    (tmp_path / "assets.extra").mkdir()
    return ExampleRuntime(tmp_path)


def write_records(runtime: ExampleRuntime, *records: bytes) -> None:
    (runtime.version_dir / TF_WARMUP_FILE).write_bytes(tfrecord(*records))


def test_classify_regress_and_multi_inference_records_are_replayed(
    runtime: ExampleRuntime,
) -> None:
    entry = message_class("tensorflow.serving.PredictionLog")
    classify = entry()
    classify.classify_log.request.model_spec.signature_name = "classify"
    classified = _examples(classify.classify_log.request, [1.0, 2.0])
    regress = entry()
    regress.regress_log.request.model_spec.signature_name = "regress"
    regressed = _examples(regress.regress_log.request, [3.0])
    multi = entry()
    request = multi.multi_inference_log.request
    for name, method in (("regress", "regress"), ("classify", "classify")):
        task = request.tasks.add()
        task.model_spec.name = "m"
        task.model_spec.signature_name = name
        task.method_name = f"tensorflow/serving/{method}"
    both = _examples(request, [4.0, 5.0, 6.0])
    write_records(
        runtime,
        classify.SerializeToString(),
        regress.SerializeToString(),
        multi.SerializeToString(),
    )

    assert warm_up(runtime) == 3
    assert [name for name, _ in runtime.runs] == ["classify", "regress", "regress", "classify"]
    fed = [list(inputs["inputs"]) for _, inputs in runtime.runs]
    assert fed == [classified, regressed, both, both]


def test_a_record_without_a_log_type_is_read_and_skipped(runtime: ExampleRuntime) -> None:
    write_records(runtime, log_entry(), predict_log(np.ones((1, 2), np.float32)))

    assert warm_up(runtime) == 2
    assert [name for name, _ in runtime.runs] == ["serving_default"]


def test_the_record_limit_is_tf_servings(runtime: ExampleRuntime) -> None:
    record = predict_log(np.ones((1, 2), np.float32))
    write_records(runtime, *[record] * MAX_WARMUP_REQUESTS)
    assert warm_up(runtime) == 1000

    write_records(runtime, *[record] * (MAX_WARMUP_REQUESTS + 1))
    path = runtime.version_dir / TF_WARMUP_FILE
    with pytest.raises(ValueError) as error:
        warm_up(runtime)
    assert str(error.value) == f"Number of warmup records exceeds the maximum (1000) at {path}"


def _streamed() -> bytes:
    return log_entry(predict_streamed_log={})


def _session_run() -> bytes:
    # ferry's protos leave SessionRunLog out: field 5, as TF Serving's PredictionLog has it.
    return b"\x2a\x00"


@pytest.mark.parametrize(
    ("record", "number"), [(_session_run, 5), (_streamed, 7)], ids=["session_run", "streamed"]
)
def test_log_types_tf_serving_does_not_replay_fail_the_load(
    runtime: ExampleRuntime, record, number: int
) -> None:
    write_records(runtime, record())

    with pytest.raises(ValueError) as error:
        warm_up(runtime)
    assert (
        str(error.value) == f"{TF_WARMUP_FILE} record 0: Unsupported log_type for warmup: {number}"
    )
    assert runtime.runs == []


def _classify_record(signature_name: str) -> bytes:
    entry = message_class("tensorflow.serving.PredictionLog")()
    entry.classify_log.request.model_spec.signature_name = signature_name
    _examples(entry.classify_log.request, [1.0])
    return entry.SerializeToString()


def test_a_classify_record_on_a_predict_signature_fails_in_tf_servings_words(
    runtime: ExampleRuntime,
) -> None:
    write_records(runtime, _classify_record(""))

    with pytest.raises(
        ValueError, match="record 0: No classification inputs found in SignatureDef"
    ):
        warm_up(runtime)
    assert runtime.runs == []


def test_outputs_that_do_not_fit_the_api_fail_the_load(runtime: ExampleRuntime) -> None:
    runtime.answers["classify"] = {"scores": np.zeros((1, 1), np.float64)}
    write_records(runtime, _classify_record("classify"))

    with pytest.raises(ValueError) as error:
        warm_up(runtime)
    assert str(error.value).endswith("Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE")


def test_an_empty_input_fails_as_tf_serving_fails_it(runtime: ExampleRuntime) -> None:
    entry = message_class("tensorflow.serving.PredictionLog")()
    entry.regress_log.request.model_spec.signature_name = "regress"
    write_records(runtime, entry.SerializeToString())

    with pytest.raises(ValueError) as error:
        warm_up(runtime)
    assert str(error.value) == f"{TF_WARMUP_FILE} record 0: Input is empty."


def test_a_generated_warmup_that_fails_costs_one_warning(
    runtime: ExampleRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    (runtime.version_dir / "assets.extra").rmdir()  # nothing recorded: generated warm-up

    def refuse_strings(signature_name: str, inputs: dict[str, np.ndarray]) -> dict:
        if signature_name != "serving_default":
            raise RuntimeError("Feature: x (data type: float) is required but could not be found.")
        return {"y": inputs["x"]}

    runtime.run = refuse_strings  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="ferry.warmup"):
        assert warm_up(runtime) == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "'classify' (RuntimeError: Feature: x (data type: float) is required" in message
    assert "'regress' (RuntimeError" in message
    assert "the version serves without warm-up" in message
