"""What to serve: TF Serving's config file formats, version policies and version folders.

The config examples are written the way TF Serving's documentation writes them, so any
file that works with TF Serving must work here too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ferry.batching import BatchingConfig
from ferry.model_config import (
    ConfigError,
    ModelSpec,
    load_batching_file,
    load_model_config_file,
    models_under_root,
    parse_batching_parameters,
    parse_model_config,
)
from ferry.repository.policy import AllVersions, Latest, Specific
from ferry.repository.source import LocalVersionSource, fingerprint

# -- parse_model_config ------------------------------------------------------------------

SEVERAL_MODELS = """
model_config_list {
  config {
    name: 'resnet'
    base_path: '/models/resnet'
    model_platform: 'tensorflow'
  }
  config {
    name: "bert"
    base_path: "/models/bert"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
  }
  config {
    name: 'mnist'
    base_path: '/models/mnist'
    model_version_policy { all {} }
  }
  config {
    name: 'half_plus_two'
    base_path: '/models/half_plus_two'
    model_version_policy {
      specific {
        versions: 42
        versions: 43
      }
    }
    version_labels {
      key: 'stable'
      value: 42
    }
    version_labels {
      key: 'canary'
      value: 43
    }
  }
}
"""


def test_several_models_are_read_with_their_policies_and_labels(tmp_path: Path) -> None:
    specs = parse_model_config(SEVERAL_MODELS, tmp_path)

    assert specs == [
        ModelSpec("resnet", Path("/models/resnet"), "tensorflow", Latest(1), {}),
        ModelSpec("bert", Path("/models/bert"), "tensorflow", Latest(2), {}),
        ModelSpec("mnist", Path("/models/mnist"), "", AllVersions(), {}),
        ModelSpec(
            "half_plus_two",
            Path("/models/half_plus_two"),
            "",
            Specific(frozenset({42, 43})),
            {"stable": 42, "canary": 43},
        ),
    ]


def test_latest_without_num_versions_serves_one_version(tmp_path: Path) -> None:
    text = "model_config_list { config { name: 'm' base_path: '/m' "
    text += "model_version_policy { latest {} } } }"

    (spec,) = parse_model_config(text, tmp_path)

    assert spec.policy == Latest(1)


def test_a_relative_base_path_resolves_against_the_given_folder(tmp_path: Path) -> None:
    text = "model_config_list { config { name: 'm' base_path: 'models/m' } }"

    (spec,) = parse_model_config(text, tmp_path)

    assert spec.base_path == tmp_path / "models" / "m"


def test_a_config_file_resolves_relative_paths_against_its_own_folder(tmp_path: Path) -> None:
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    config_file = config_dir / "models.config"
    config_file.write_text("model_config_list { config { name: 'm' base_path: '../m' } }")

    (spec,) = load_model_config_file(config_file)

    assert spec.base_path.resolve() == (tmp_path / "m").resolve()


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read model config file"):
        load_model_config_file(tmp_path / "absent.config")


# TF Serving's words, which its test harness looks for (testBadModelConfig).
PARSE_ERROR = "Error parsing text-format tensorflow.serving.ModelServerConfig"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'm' ", rf"^{PARSE_ERROR}: 1:\d+ : .*"),
        (
            "model_config_list { config { name: 'm' bogus_field: 1 } }",
            rf'^{PARSE_ERROR}: 1:\d+ : .*has no field named "bogus_field"',
        ),
        (
            "model_config_list {\n  config {\n    name: 5\n  }\n}",
            rf"^{PARSE_ERROR}: 3:\d+ : .*",
        ),
    ],
    ids=["unterminated", "unknown-field", "wrong-type"],
)
def test_a_parse_error_carries_protobufs_line_and_column(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_model_config(text, tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model_config_list { config { name: 'm' base_path: '/a' } "
            "config { name: 'm' base_path: '/b' } }",
            "model 'm' is listed twice",
        ),
        ("model_config_list { config { base_path: '/a' } }", "every config needs a name"),
        ("model_config_list { config { name: 'm' } }", "model 'm' has no base_path"),
        (
            "model_config_list { config { name: 'm' base_path: '/a' "
            "model_version_policy { specific {} } } }",
            "'specific' version policy needs versions",
        ),
        ("", "only model_config_list is supported"),
    ],
    ids=["duplicate", "no-name", "no-base-path", "empty-specific", "empty"],
)
def test_invalid_model_configs_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_model_config(text, tmp_path)


def test_models_under_root_serves_each_visible_folder(tmp_path: Path) -> None:
    for name in ("b", "a", ".hidden", "_staging"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("not a model")

    specs = models_under_root(tmp_path)

    assert specs == [ModelSpec("a", tmp_path / "a"), ModelSpec("b", tmp_path / "b")]


# -- parse_batching_parameters -------------------------------------------------------------


def test_batching_parameters_use_tf_servings_wrapper_fields() -> None:
    text = """
    max_batch_size { value: 128 }
    batch_timeout_micros { value: 2000 }
    max_enqueued_batches { value: 100 }
    num_batch_threads { value: 8 }
    allowed_batch_sizes: 32
    allowed_batch_sizes: 64
    allowed_batch_sizes: 128
    """

    config = parse_batching_parameters(text)

    assert config == BatchingConfig(
        max_batch_size=128,
        batch_timeout_micros=2000,
        max_enqueued_batches=100,
        num_batch_threads=8,
        allowed_batch_sizes=(32, 64, 128),
    )


def test_unset_batching_fields_keep_the_base_values() -> None:
    base = BatchingConfig(
        enabled=False,
        max_batch_size=16,
        batch_timeout_micros=500,
        num_batch_threads=3,
        fill_under_load=False,
    )

    config = parse_batching_parameters("max_enqueued_batches { value: 7 }", base)

    assert config == BatchingConfig(
        enabled=False,
        max_batch_size=16,
        batch_timeout_micros=500,
        max_enqueued_batches=7,
        num_batch_threads=3,
        fill_under_load=False,
    )


def test_an_empty_batching_file_gives_ferrys_defaults() -> None:
    assert parse_batching_parameters("") == BatchingConfig()


def test_fields_ferry_does_not_use_are_accepted() -> None:
    text = "max_batch_size { value: 8 } thread_pool_name { value: 'pool' }"
    text += " enable_large_batch_splitting { value: true }"

    assert parse_batching_parameters(text).max_batch_size == 8


def test_a_batching_file_is_read_over_the_base(tmp_path: Path) -> None:
    path = tmp_path / "batching_params.pbtxt"
    path.write_text("batch_timeout_micros { value: 0 }\n")

    config = load_batching_file(path, BatchingConfig(batch_timeout_micros=99))

    assert config.batch_timeout_micros == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "max_batch_size { value: 64 } allowed_batch_sizes: 8 allowed_batch_sizes: 32",
            r"batching parameters: the last allowed_batch_sizes entry \(32\) must equal "
            r"max_batch_size \(64\)",
        ),
        (
            "max_batch_size { value: 32 } allowed_batch_sizes: 16 allowed_batch_sizes: 8 "
            "allowed_batch_sizes: 32",
            "batching parameters: allowed_batch_sizes must be positive and increasing",
        ),
        ("max_batch_size { value: 0 }", "batching parameters: max_batch_size must be at least"),
        ("num_batch_threads { value: 0 }", "batching parameters: num_batch_threads must be"),
        ("pad_variable_length_inputs: true", "pad_variable_length_inputs is not supported"),
        ("max_batch_size: 128", r"batching parameters: 1:\d+ : "),
        ("max_batch_sise { value: 1 }", r"batching parameters: 1:\d+ : .*max_batch_sise"),
    ],
    ids=[
        "allowed-not-ending-at-max",
        "allowed-not-increasing",
        "zero-max",
        "zero-threads",
        "padding",
        "bare-value-for-wrapper",
        "misspelled-field",
    ],
)
def test_invalid_batching_parameters_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_batching_parameters(text)


# -- version policies ------------------------------------------------------------------------


def test_latest_serves_the_highest_versions() -> None:
    assert Latest().select([3, 10, 2]) == {10}
    assert Latest(2).select([3, 10, 2]) == {10, 3}
    assert Latest(5).select([3, 10, 2]) == {2, 3, 10}
    assert Latest(0).select([3, 10]) == {10}
    assert Latest(2).select([]) == set()


def test_all_versions_serves_everything_found() -> None:
    assert AllVersions().select([1, 5, 3]) == {1, 3, 5}
    assert AllVersions().select([]) == set()


def test_specific_serves_the_listed_versions_that_exist() -> None:
    policy = Specific(frozenset({1, 4, 9}))

    assert policy.select([1, 2, 3, 4]) == {1, 4}
    assert policy.select([2, 3]) == set()


def test_policies_describe_themselves() -> None:
    assert Latest(2).describe() == "latest 2"
    assert AllVersions().describe() == "all"
    assert Specific(frozenset({9, 1})).describe() == "specific 1,9"


# -- LocalVersionSource ----------------------------------------------------------------------


def make_version(base: Path, name: str, files: dict[str, str]) -> Path:
    folder = base / name
    folder.mkdir(parents=True)
    for relative, content in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return folder


def test_integer_named_folders_are_the_versions(tmp_path: Path) -> None:
    make_version(tmp_path, "1", {"model.onnx": "one"})
    make_version(tmp_path, "10", {"model.onnx": "ten"})
    make_version(tmp_path, "2", {})
    for name in ("README", "tmp", "3a", "-4", "1.5", "\u00b2", ".7"):
        make_version(tmp_path, name, {"model.onnx": "ignored"})
    (tmp_path / "5").write_text("a file, not a folder")

    versions = LocalVersionSource(tmp_path).list_versions()

    assert sorted(versions) == [1, 2, 10]
    assert versions[10].version == 10
    assert versions[10].path == tmp_path / "10"
    assert versions[2].fingerprint == ()


def test_a_missing_base_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        LocalVersionSource(tmp_path / "absent").list_versions()


def test_the_fingerprint_lists_every_file_with_size_and_mtime(tmp_path: Path) -> None:
    folder = make_version(tmp_path, "1", {"model.onnx": "abc", "assets/vocab.txt": "hello"})
    os.utime(folder / "model.onnx", ns=(1_000_000_000, 1_000_000_000))
    os.utime(folder / "assets" / "vocab.txt", ns=(2_000_000_000, 2_000_000_000))

    assert fingerprint(folder) == (
        (os.path.join("assets", "vocab.txt"), 5, 2_000_000_000),
        ("model.onnx", 3, 1_000_000_000),
    )


def test_the_fingerprint_changes_when_a_file_changes(tmp_path: Path) -> None:
    folder = make_version(tmp_path, "1", {"model.onnx": "abc", "assets/vocab.txt": "a"})
    source = LocalVersionSource(tmp_path)
    before = source.list_versions()[1].fingerprint
    assert source.list_versions()[1].fingerprint == before

    # Same size, new modification time: a file replaced in place.
    stat = (folder / "model.onnx").stat()
    os.utime(folder / "model.onnx", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    touched = source.list_versions()[1].fingerprint
    # New content of another size.
    (folder / "assets" / "vocab.txt").write_text("a longer vocabulary")
    resized = source.list_versions()[1].fingerprint
    # A file added.
    (folder / "extra.bin").write_bytes(b"\x00")
    added = source.list_versions()[1].fingerprint

    assert len({before, touched, resized, added}) == 4
