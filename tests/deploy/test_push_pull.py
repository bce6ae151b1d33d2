"""`ferry push` / `ferry pull` against a real S3-compatible server (moto)."""

from __future__ import annotations

import os
from pathlib import Path

from boto3.s3.transfer import TransferConfig
from click.testing import CliRunner
from support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture

from ferry.cli import main
from ferry.deploy.object_store import ObjectTarget, plan_push, run_transfers, s3_client

MIB = 1024 * 1024


def ferry(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_a_multipart_file_round_trips_and_unchanged_files_are_skipped(
    moto_s3: MotoS3,  # noqa: F811
    tmp_path: Path,
) -> None:
    moto_s3.client.create_bucket(Bucket="deploy")
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(os.urandom(12 * MIB))  # over the 8 MiB multipart threshold
    assert "uploaded 1 files" in ferry("push", str(archive), "s3://deploy/models/")
    head = moto_s3.client.head_object(Bucket="deploy", Key="models/model.tar.gz")
    assert head["ETag"].strip('"').endswith("-2"), "uploaded in two parts"
    assert "0 files" in ferry("push", str(archive), "s3://deploy/models/")  # skipped

    pulled = tmp_path / "pulled"
    pulled.mkdir()
    assert "downloaded 1 files" in ferry("pull", "s3://deploy/models/model.tar.gz", str(pulled))
    assert (pulled / "model.tar.gz").read_bytes() == archive.read_bytes()
    assert "1 unchanged skipped" in ferry("pull", "s3://deploy/models/model.tar.gz", str(pulled))


def test_a_small_part_size_gives_more_parts_and_the_etag_still_matches(
    moto_s3: MotoS3,  # noqa: F811
    tmp_path: Path,
) -> None:
    moto_s3.client.create_bucket(Bucket="deploy")
    data = tmp_path / "weights.bin"
    data.write_bytes(os.urandom(11 * MIB))
    small = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    client = s3_client()
    target = ObjectTarget.parse("s3://deploy/w/weights.bin")
    plan = plan_push(client, data, target, small)
    run_transfers(client, "deploy", plan, upload=True, transfer=small)
    head = moto_s3.client.head_object(Bucket="deploy", Key="w/weights.bin")
    assert head["ETag"].strip('"').endswith("-3")
    assert [item.skip for item in plan_push(client, data, target, small)] == [True]


def test_a_folder_round_trips(moto_s3: MotoS3, tmp_path: Path) -> None:  # noqa: F811
    moto_s3.client.create_bucket(Bucket="deploy")
    folder = tmp_path / "m"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").write_bytes(b"onnx")
    (folder / "ferry.toml").write_text('accelerate = "onnx"\n')
    assert "uploaded 2 files" in ferry("push", str(folder), "s3://deploy/root/m")
    (folder / "1" / "model.onnx").write_bytes(b"ONNX changed")
    assert "uploaded 1 files" in ferry("push", str(folder), "s3://deploy/root/m")
    ferry("pull", "s3://deploy/root", str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "m" / "1" / "model.onnx").read_bytes() == b"ONNX changed"
    assert (tmp_path / "copy" / "m" / "ferry.toml").is_file()


def test_errors_are_one_line_messages(moto_s3: MotoS3, tmp_path: Path) -> None:  # noqa: F811
    result = CliRunner().invoke(main, ["pull", "s3://no-such-bucket/x", str(tmp_path)])
    assert result.exit_code != 0
    assert "Error:" in result.output and "Traceback" not in result.output
