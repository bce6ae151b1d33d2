"""ferry.triton_config and the classification codec: Triton's config.pbtxt read into
ferry's settings, and Triton's "score:index:label" strings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ferry.batching import BatchingConfig
from ferry.codecs.classification import classify
from ferry.errors import InvalidArgument
from ferry.repository.policy import AllVersions, Latest, Specific
from ferry.tensors import Signature, TensorSpec
from ferry.triton_config import (
    TritonConfigError,
    TritonConfigLimits,
    build_config,
    parse_json_config,
    parse_text_config,
    read_model_config,
    reported_config,
)


def config(text: str, model: str = "m", model_dir: Path | None = None):
    return build_config(parse_text_config(text, "config.pbtxt"), model, model_dir, "config.pbtxt")


def signature(*inputs: tuple[str, np.dtype, tuple[int, ...]]) -> Signature:
    specs = {name: TensorSpec(name, np.dtype(dtype), shape) for name, dtype, shape in inputs}
    return Signature(specs, {"OUT": TensorSpec("OUT", np.dtype(np.float32), (-1, 4))})


def test_text_format_errors_carry_line_and_column() -> None:
    with pytest.raises(TritonConfigError, match=r"2:1 : Message type \"inference.ModelConfig\""):
        parse_text_config('name: "m"\nmax_batch: 3\n', "config.pbtxt")


def test_json_override_errors_name_the_model() -> None:
    with pytest.raises(TritonConfigError, match="failed to load 'm', failed to parse"):
        parse_json_config('{"max_batch_size": "many"}', "m")


def test_a_config_file_over_its_bound_is_refused_before_it_is_read(tmp_path: Path) -> None:
    (tmp_path / "config.pbtxt").write_text('name: "m" max_batch_size: 8\n')
    size = (tmp_path / "config.pbtxt").stat().st_size

    with pytest.raises(TritonConfigError, match=rf"{size} bytes, more than --max_triton_config"):
        read_model_config(tmp_path, "m", TritonConfigLimits(config_bytes=size - 1))
    at_bound = read_model_config(tmp_path, "m", TritonConfigLimits(config_bytes=size))
    assert at_bound is not None and at_bound.max_batch_size == 8


def test_reported_config_prints_64_bit_integers_as_numbers() -> None:
    reported = reported_config(
        config(
            'input [ { name: "x" dims: [ 3, -1 ] } ] '
            "dynamic_batching { max_queue_delay_microseconds: 250 } "
            "version_policy { specific { versions: [ 2, 5 ] } }"
        )
    )
    assert reported["input"][0]["dims"] == [3, -1]
    assert reported["dynamic_batching"]["max_queue_delay_microseconds"] == 250
    assert reported["version_policy"] == {"specific": {"versions": [2, 5]}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version_policy { all { } }", AllVersions()),
        ("version_policy { latest { num_versions: 3 } }", Latest(3)),
        ("version_policy { specific { versions: [ 1, 4 ] } }", Specific(frozenset({1, 4}))),
        ("", None),
    ],
)
def test_version_policy(text: str, expected) -> None:
    assert config(text).policy() == expected


def test_dynamic_batching_maps_to_ferrys_batching() -> None:
    batching = config(
        "max_batch_size: 8 dynamic_batching { max_queue_delay_microseconds: 300 "
        "default_queue_policy { max_queue_size: 20 } } instance_group [ { count: 3 } ]"
    ).batching(BatchingConfig())
    assert (batching.enabled, batching.max_batch_size, batching.batch_timeout_micros) == (
        True,
        8,
        300,
    )
    assert batching.max_queued_rows >= 20 and batching.max_enqueued_batches == 3
    assert batching.num_batch_threads == 3


def test_without_dynamic_batching_requests_run_alone() -> None:
    assert not config("max_batch_size: 8").batching(BatchingConfig()).enabled
    assert config("max_batch_size: 0").batch_dimension == "none"
    assert config("max_batch_size: 8").batch_dimension == "dynamic"


def test_input_counts_must_agree() -> None:
    model = signature(("A", np.float32, (-1, 4)), ("B", np.float32, (-1, 4)))
    with pytest.raises(TritonConfigError) as error:
        config(
            'max_batch_size: 2 input [ { name: "A" data_type: TYPE_FP32 dims: [4] } ]'
        ).check_against("m", model)
    assert str(error.value) == (
        "unable to load model 'm', configuration expects 1 inputs, model provides 2"
    )


def test_batching_needs_a_batch_dimension() -> None:
    with pytest.raises(TritonConfigError, match="model does not support batching"):
        config("max_batch_size: 4").check_against("m", signature(("A", np.float32, (2, 4))))


def test_unapplied_fields_are_named(caplog: pytest.LogCaptureFixture) -> None:
    loaded = config(
        "response_cache { enable: true } "
        'input [ { name: "x" is_shape_tensor: true } ] '
        "dynamic_batching { preserve_ordering: true }"
    )
    assert any("'response_cache' is not supported" in w for w in loaded.warnings)
    assert any("input 'x': 'is_shape_tensor'" in w for w in loaded.warnings)
    assert "'preserve_ordering' is not supported" in caplog.text


@pytest.mark.parametrize("scheduler", ["sequence_batching", "ensemble_scheduling"])
def test_schedulers_ferry_lacks_are_load_errors(scheduler: str) -> None:
    with pytest.raises(TritonConfigError, match=f"ferry does not implement Triton's .*{scheduler}"):
        config(f"{scheduler} {{ }}")


def test_unknown_platform_is_a_load_error() -> None:
    with pytest.raises(TritonConfigError, match="no runtime for Triton's backend 'openvino'"):
        _ = config('backend: "openvino"').runtime_platform
    assert config('platform: "pytorch_libtorch"').runtime_platform == "pytorch"


def test_labels_and_cache(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    (tmp_path / "config.pbtxt").write_text(
        'output [ { name: "OUT" label_filename: "labels.txt" } ]'
    )
    first = read_model_config(tmp_path, "m")
    assert first is not None and first.labels == {"OUT": ("cat", "dog")}
    assert read_model_config(tmp_path, "m") is first  # unchanged file: read once
    assert read_model_config(tmp_path / "absent", "m") is None


# -- classification ------------------------------------------------------------------------


def test_classify_formats_scores_as_cpp_to_string() -> None:
    scores = np.array([1.1, 3.3, 0.5, 2.4], dtype=np.float32)
    assert classify(scores, 2).tolist() == [b"3.300000:1", b"2.400000:3"]
    assert classify(scores, 2, ["a", "b", "c", "d"]).tolist() == [
        b"3.300000:1:b",
        b"2.400000:3:d",
    ]


def test_classify_per_batch_row_keeps_index_order_on_ties() -> None:
    ones = np.ones((2, 4), dtype=np.float64)
    result = classify(ones, 3, batched=True)
    assert result.shape == (2, 3)
    assert result[1].tolist() == [b"1.000000:0", b"1.000000:1", b"1.000000:2"]


def test_classify_clamps_the_count_and_prints_integers_plainly() -> None:
    assert classify(np.array([[7, 9]], dtype=np.uint8), 5, batched=True).tolist() == [
        [b"9:1", b"7:0"]
    ]


@pytest.mark.parametrize("dtype", [np.float16, np.bool_])
def test_classify_refuses_what_triton_refuses(dtype) -> None:
    with pytest.raises(InvalidArgument, match="class result not available for output"):
        classify(np.zeros(3, dtype=dtype), 1)
