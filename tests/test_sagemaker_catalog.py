"""Model discovery in a SageMaker model folder, named as the SageMaker TF Serving container
names models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ferry.model_config import ConfigError
from ferry.repository.policy import AllVersions
from ferry.repository.sagemaker_catalog import SageMakerModelDirCatalog, models_in_sagemaker_dir


def version(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(b"")


def names(model_dir: Path) -> list[tuple[str, Path]]:
    return [(s.name, s.base_path) for s in models_in_sagemaker_dir(model_dir)]


def test_top_level_versions_are_a_model_named_model(tmp_path: Path) -> None:
    version(tmp_path / "1")
    version(tmp_path / "2")
    (tmp_path / "code").mkdir()
    (specs,) = models_in_sagemaker_dir(tmp_path)
    assert (specs.name, specs.base_path) == ("model", tmp_path)
    assert isinstance(specs.policy, AllVersions)


def test_estimator_export_and_named_folders_in_path_order(tmp_path: Path) -> None:
    version(tmp_path / "export" / "Servo" / "1")
    version(tmp_path / "b_model" / "3")
    version(tmp_path / "a_model" / "01")
    assert names(tmp_path) == [
        ("a_model", tmp_path / "a_model"),
        ("b_model", tmp_path / "b_model"),
        ("Servo", tmp_path / "export" / "Servo"),
    ]


def test_hidden_underscore_and_version_inner_folders_are_not_searched(tmp_path: Path) -> None:
    version(tmp_path / ".staging" / "m" / "1")
    version(tmp_path / "_tmp" / "m" / "1")
    version(tmp_path / "real" / "1" / "inner" / "2")
    (tmp_path / "empty" / "notaversion").mkdir(parents=True)
    assert names(tmp_path) == [("real", tmp_path / "real")]


def test_a_symlink_loop_is_followed_once(tmp_path: Path) -> None:
    version(tmp_path / "m" / "1")
    os.symlink(tmp_path, tmp_path / "m" / "loop")
    assert names(tmp_path) == [("m", tmp_path / "m")]


def test_duplicate_names_and_a_missing_folder_are_config_errors(tmp_path: Path) -> None:
    version(tmp_path / "a" / "m" / "1")
    version(tmp_path / "b" / "m" / "1")
    with pytest.raises(ConfigError, match="two models are named 'm'"):
        models_in_sagemaker_dir(tmp_path)
    with pytest.raises(ConfigError, match="is not a directory"):
        SageMakerModelDirCatalog(tmp_path / "absent").current()


def test_catalog_sees_models_added_later(tmp_path: Path) -> None:
    catalog = SageMakerModelDirCatalog(tmp_path)
    assert catalog.current() == []
    version(tmp_path / "late" / "1")
    assert [s.name for s in catalog.current()] == ["late"]
