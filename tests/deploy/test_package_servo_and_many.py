"""`ferry package --keep-servo` (the TF Estimator export path kept, so the model serves as
`Servo`, as from the SageMaker SDK's TensorFlow archives) and several models in one
archive, each checked by serving the unpacked archive with `ferry serve --sagemaker`."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.models import scale_model, write_model
from support.server import FerryProcess, wait_until

from ferry.cli import main
from ferry.deploy.package import PackageError, package, unpack

ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


def names(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


def served(start_server: Callable[..., FerryProcess], archive: Path, dest: Path) -> FerryProcess:
    """The archive as SageMaker serves it: unpacked into the model folder, then served."""
    unpack(archive, dest)
    server = start_server("--sagemaker", "--sagemaker_model_dir", str(dest))
    wait_until(lambda: server.get("/ping").status_code == 200, 30, message="/ping 200")
    return server


def invoke(server: FerryProcess, model: str) -> list:
    response = server.post(
        "/invocations",
        data=b"[1, 1, 1, 1]",
        headers={"Content-Type": "application/json", ATTRIBUTES: f"tfs-model-name={model}"},
    )
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


@pytest.fixture
def estimator(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "estimator"
    write_model(scale_model(4.0), folder / "export" / "Servo", 1588)
    (folder / "ferry.toml").write_text("")
    return folder


def test_keep_servo_keeps_the_export_path_and_the_model_serves_as_servo(
    estimator: Path, tmp_path: Path, start_server
) -> None:
    packed = package(estimator, tmp_path / "model.tar.gz", keep_servo=True)
    assert names(packed.archive) == [
        "export",
        "export/Servo",
        "export/Servo/1588",
        "export/Servo/1588/model.onnx",
        "export/Servo/ferry.toml",
    ]
    server = served(start_server, packed.archive, tmp_path / "opt-ml-model")
    assert invoke(server, "Servo") == [[4.0, 4.0, 4.0, 4.0]]


def test_without_keep_servo_the_export_is_named_after_its_folder(
    estimator: Path, tmp_path: Path
) -> None:
    packed = package(estimator, tmp_path / "model.tar.gz")
    assert "estimator/1588/model.onnx" in names(packed.archive)


def test_several_models_in_one_archive_each_serve(
    estimator: Path, tmp_path: Path, start_server
) -> None:
    half = tmp_path / "models" / "half"
    write_model(scale_model(0.5), half, 1)
    write_model(scale_model(2.0), half, 2)
    (half / "code").mkdir()
    (half / "code" / "helper.txt").write_text("shared code/ for every model\n")
    packed = package([half, estimator], tmp_path / "model.tar.gz", keep_servo=True)
    assert names(packed.archive) == [
        "code",
        "code/helper.txt",
        "estimator",
        "estimator/export",
        "estimator/export/Servo",
        "estimator/export/Servo/1588",
        "estimator/export/Servo/1588/model.onnx",
        "estimator/export/Servo/ferry.toml",
        "half",
        "half/1",
        "half/1/model.onnx",
        "half/2",
        "half/2/model.onnx",
    ]
    server = served(start_server, packed.archive, tmp_path / "opt-ml-model")
    assert invoke(server, "half") == [[2.0, 2.0, 2.0, 2.0]]
    assert invoke(server, "Servo") == [[4.0, 4.0, 4.0, 4.0]]


def test_several_models_are_refused_when_they_would_collide(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "m", tmp_path / "b" / "m"
    write_model(scale_model(1.0), first, 1)
    write_model(scale_model(2.0), second, 1)
    with pytest.raises(PackageError, match="two model folders are both named 'm'"):
        package([first, second], tmp_path / "model.tar.gz")
    other = tmp_path / "c" / "other"
    write_model(scale_model(3.0), other, 1)
    for folder in (first, other):
        (folder / "code").mkdir()
    with pytest.raises(PackageError, match="m and other both have a code/ folder"):
        package([first, other], tmp_path / "model.tar.gz")
    # The ferry layout keeps each model's code/ inside it: no collision.
    packed = package([first, other], tmp_path / "model.tar.gz", layout="ferry")
    assert {"m/code", "other/code"} <= set(names(packed.archive))
    with pytest.raises(PackageError, match="--name is for one model folder"):
        package([first, other], tmp_path / "model.tar.gz", name="x")
    with pytest.raises(PackageError, match="keep_servo is for the sagemaker layout"):
        package(first, tmp_path / "model.tar.gz", layout="ferry", keep_servo=True)


def test_the_cli_packs_several_folders_and_keeps_servo(estimator: Path, tmp_path: Path) -> None:
    half = tmp_path / "models" / "half"
    write_model(scale_model(0.5), half, 1)
    output = tmp_path / "model.tar.gz"
    result = CliRunner().invoke(
        main, ["package", str(half), str(estimator), "-o", str(output), "--keep-servo"]
    )
    assert result.exit_code == 0, result.output
    assert "estimator/export/Servo/1588/model.onnx" in names(output)
    assert "half/1/model.onnx" in names(output)
    refused = CliRunner().invoke(main, ["package", str(half), str(half), "-o", str(output)])
    assert refused.exit_code == 1
    assert "two model folders are both named 'half'" in refused.output
