"""`ferry package` / `ferry unpack`: SageMaker layouts, reproducible bytes, safe extraction."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.models import scale_model, write_model

from ferry.cli import main
from ferry.deploy.package import PackageError, file_sha256, package, unpack


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "half"
    write_model(scale_model(0.5), folder, 1)
    write_model(scale_model(2.0), folder, 2)
    (folder / "code").mkdir()
    (folder / "code" / "inference.py").write_text("def handler(data, context):\n    return data\n")
    (folder / "batching_params.pbtxt").write_text("max_batch_size { value: 8 }\n")
    (folder / "2" / ".ferry").mkdir()  # a derived cache: never packed
    (folder / "2" / ".ferry" / "fp16.onnx").write_bytes(b"cache")
    return folder


def names(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


def test_sagemaker_layout_puts_versions_under_the_name_and_code_at_the_top(
    model_dir: Path, tmp_path: Path
) -> None:
    packed = package(model_dir, tmp_path / "model.tar.gz")
    assert names(packed.archive) == [
        "code",
        "code/inference.py",
        "half",
        "half/1",
        "half/1/model.onnx",
        "half/2",
        "half/2/model.onnx",
        "half/batching_params.pbtxt",
    ]
    assert packed.checksum_file.read_text() == f"{packed.sha256}  model.tar.gz\n"
    assert file_sha256(packed.archive) == packed.sha256


def test_ferry_layout_keeps_code_inside_the_model_folder(model_dir: Path, tmp_path: Path) -> None:
    packed = package(model_dir, tmp_path / "model.tar.gz", layout="ferry")
    assert "half/code/inference.py" in names(packed.archive)
    assert "code/inference.py" not in names(packed.archive)


def test_packing_code_says_which_consent_the_endpoint_needs(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An archive cannot carry consent (a packed ferry.toml's allow_code grants nothing),
    so packing code/inference.py says what the deploy must set."""
    (model_dir / "ferry.toml").write_text("allow_code = true\n")
    with caplog.at_level("WARNING", logger="ferry.deploy.package"):
        package(model_dir, tmp_path / "model.tar.gz")
    assert "FERRY_ALLOW_CODE='*' (ferry deploy sagemaker --allow-code '*')" in caplog.text


def test_estimator_export_layout_is_accepted(tmp_path: Path) -> None:
    folder = tmp_path / "estimator"
    write_model(scale_model(1.0), folder / "export" / "Servo", 1588)
    packed = package(folder, tmp_path / "model.tar.gz", name="Servo")
    assert "Servo/1588/model.onnx" in names(packed.archive)


def test_archives_are_byte_reproducible(model_dir: Path, tmp_path: Path) -> None:
    first = package(model_dir, tmp_path / "a.tar.gz")
    # Same content, different times and permissions on disk: the same bytes.
    for path in model_dir.rglob("*"):
        path.touch()
    (model_dir / "1" / "model.onnx").chmod(0o600)
    second = package(model_dir, tmp_path / "b.tar.gz")
    assert first.sha256 == second.sha256
    assert first.archive.read_bytes() == second.archive.read_bytes()
    with tarfile.open(first.archive) as tar:
        for member in tar.getmembers():
            assert (member.mtime, member.uid, member.gid, member.uname) == (0, 0, 0, "")
            assert member.mode == (0o755 if member.isdir() else 0o644)
    # A changed file changes the checksum.
    (model_dir / "2" / "model.onnx").write_bytes(scale_model(3.0).SerializeToString())
    assert package(model_dir, tmp_path / "c.tar.gz").sha256 != first.sha256


def test_round_trip_through_the_cli(model_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    archive = tmp_path / "out" / "model.tar.gz"
    result = runner.invoke(main, ["package", str(model_dir), "-o", str(archive)])
    assert result.exit_code == 0, result.output
    assert file_sha256(archive) in result.output
    result = runner.invoke(main, ["unpack", str(archive), str(tmp_path / "unpacked")])
    assert result.exit_code == 0, result.output
    unpacked = tmp_path / "unpacked"
    for version in ("1", "2"):
        original = (model_dir / version / "model.onnx").read_bytes()
        assert (unpacked / "half" / version / "model.onnx").read_bytes() == original
    assert (unpacked / "code" / "inference.py").is_file()
    # Packing the unpacked model again gives the identical archive.
    (unpacked / "half" / "code").mkdir()
    (unpacked / "code" / "inference.py").rename(unpacked / "half" / "code" / "inference.py")
    assert package(unpacked / "half", tmp_path / "again.tar.gz").sha256 == file_sha256(archive)


def test_a_folder_without_versions_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackageError, match="no integer version folders"):
        package(tmp_path / "empty", tmp_path / "model.tar.gz")


def evil_archive(path: Path, member: tarfile.TarInfo, data: bytes = b"evil") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        safe = tarfile.TarInfo("model/1/model.onnx")
        safe.size = 2
        tar.addfile(safe, io.BytesIO(b"ok"))
        if member.isfile():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)
    return path


def symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info


def fifo(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.FIFOTYPE
    return info


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("../escaped.txt"),
        tarfile.TarInfo("model/../../escaped.txt"),
        tarfile.TarInfo("/tmp/escaped.txt"),
        symlink("model/link", "../../escaped.txt"),
        symlink("model/link", "/etc/passwd"),
        hardlink("model/hard", "/etc/passwd"),
        fifo("model/pipe"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-abs", "hardlink", "fifo"],
)
def test_unpack_refuses_entries_outside_the_target(member: tarfile.TarInfo, tmp_path: Path) -> None:
    archive = evil_archive(tmp_path / "evil.tar.gz", member)
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(PackageError, match="refusing"):
        unpack(archive, dest)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (dest / "model").exists(), "nothing is written when one entry is refused"


def test_a_link_inside_the_target_is_allowed(tmp_path: Path) -> None:
    archive = evil_archive(tmp_path / "ok.tar.gz", symlink("model/latest", "1"))
    unpack(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "model" / "latest" / "model.onnx").read_bytes() == b"ok"


def test_unpack_checks_the_checksum_beside_the_archive(model_dir: Path, tmp_path: Path) -> None:
    packed = package(model_dir, tmp_path / "model.tar.gz")
    packed.checksum_file.write_text("0" * 64 + "  model.tar.gz\n")
    result = CliRunner().invoke(main, ["unpack", str(packed.archive), str(tmp_path / "d")])
    assert result.exit_code != 0
    assert "does not match" in result.output


def test_packing_says_where_sagemaker_does_not_read_consent_or_code(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A packed ferry.toml's allow_code grants nothing on an endpoint, and the ferry
    layout's NAME/code/inference.py is not where --sagemaker looks: both are said."""
    (model_dir / "ferry.toml").write_text("allow_code = true\n")
    with caplog.at_level("WARNING", logger="ferry.deploy.package"):
        package(model_dir, tmp_path / "model.tar.gz", layout="ferry")
    assert "allow_code/allow_pickle, which grant nothing on an endpoint" in caplog.text
    assert "read code/inference.py only at the archive's top" in caplog.text


def test_a_triton_config_and_its_label_file_are_packed_with_the_versions(
    model_dir: Path, tmp_path: Path
) -> None:
    """The model-level files S3 sources download (ferry.repository.model_files) are the
    ones packed: Triton's config.pbtxt and label files too, not stray dot-files."""
    (model_dir / "config.pbtxt").write_text('name: "half"\nlabel_filename: "labels.txt"\n')
    (model_dir / "labels.txt").write_text("zero\none\n")
    (model_dir / ".notes.txt").write_text("private\n")

    packed = package(model_dir, tmp_path / "model.tar.gz")

    packed_names = names(packed.archive)
    assert {"half/config.pbtxt", "half/labels.txt"} <= set(packed_names)
    assert "half/.notes.txt" not in packed_names
