"""ferry.model_control's two pure rules: which HTTP requests are admin requests, and
which base paths lie under a root. The real servers in tests/security/test_admin_api.py
check the same through every protocol; these pin the corner cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.errors import PermissionDenied
from ferry.model_config import ModelSpec
from ferry.model_control import ModelControl, ModelControlOff, is_admin_http, parse_roots
from ferry.repository.location import S3Url


@pytest.mark.parametrize(
    "path",
    [
        "/v2/repository/models/m/unload",
        "/v2/repository/models/m/load",
        "/V2/Repository/Models/m/unload",
        "/v2/repository/models/m%2Funload",  # decoded once more by the V2 handler
        "/v2/repository/index/../models/m/unload",
        "/v2/repository/anything",
    ],
)
def test_every_spelling_of_a_repository_change_is_admin(path: str) -> None:
    assert is_admin_http("POST", path)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/repository/index"),
        ("POST", "/v2/repository/%69ndex"),
        ("POST", "/v2/models/m/infer"),
        ("POST", "/v1/models/m:predict"),
        ("GET", "/v2/repository/models/m/unload"),
    ],
)
def test_the_index_and_everything_else_are_not_admin(method: str, path: str) -> None:
    assert not is_admin_http(method, path)


def test_off_is_refused_with_how_to_turn_it_on() -> None:
    with pytest.raises(ModelControlOff) as refused:
        ModelControl(enabled=False).require("HandleReloadConfigRequest")
    assert refused.value.code.name == "UNAVAILABLE"
    assert refused.value.message == (
        "HandleReloadConfigRequest is not allowed: model control is off "
        "(start ferry serve with --enable_model_control to allow it)"
    )
    ModelControl(enabled=True).require("HandleReloadConfigRequest")


def spec(base: Path | S3Url) -> ModelSpec:
    return ModelSpec("m", base)


def test_local_paths_are_resolved_before_they_are_compared(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "a").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    control = ModelControl(True, [root])

    (allowed,) = control.allowed_specs([spec(root / "x" / ".." / "a")])

    assert allowed.base_path == root / "a"
    for base in (root / "escape", root / ".." / "outside", tmp_path / "models2"):
        with pytest.raises(PermissionDenied, match="--model_roots"):
            control.allowed_specs([spec(base)])


def test_s3_paths_are_under_a_root_at_a_slash_boundary() -> None:
    control = ModelControl(True, parse_roots("s3://bucket/models, s3://whole"))
    for inside in ("s3://bucket/models", "s3://bucket/models/a/b", "s3://whole/any"):
        control.allowed_specs([spec(S3Url.parse(inside))])
    for outside in (
        "s3://bucket/models2",
        "s3://bucket/model",
        "s3://bucket",
        "s3://bucket/models/../x",
        "s3://bucket/models//x",
        "s3://other/models",
    ):
        with pytest.raises(PermissionDenied):
            control.allowed_specs([spec(S3Url.parse(outside))])
    with pytest.raises(PermissionDenied):
        control.allowed_specs([spec(Path("/bucket/models"))])


def test_model_roots_needs_at_least_one_root() -> None:
    with pytest.raises(ValueError, match="at least one"):
        parse_roots(" , ")
