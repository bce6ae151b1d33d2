"""A Triton model folder in S3: config.pbtxt and its label file are model-level files,
fetched beside the cached versions as a local model folder holds them (moto)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.models import scale_model, write_model
from support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture

from ferry.repository.location import ObjectStoreOptions, S3Url
from ferry.repository.s3_source import S3VersionSource
from ferry.triton_config import read_model_config


@pytest.fixture
def bucket(moto_s3: MotoS3) -> str:  # noqa: F811
    moto_s3.client.create_bucket(Bucket="models")
    return "models"


def put(store: MotoS3, key: str, body: bytes) -> None:
    store.client.put_object(Bucket="models", Key=key, Body=body)


def test_config_and_labels_are_fetched_and_read(
    moto_s3: MotoS3,  # noqa: F811
    bucket: str,
    tmp_path: Path,
) -> None:
    write_model(scale_model(2.0), tmp_path / "local", 1)
    moto_s3.upload_folder(tmp_path / "local", bucket, "m")
    put(moto_s3, "m/config.pbtxt", b'name: "m" output [ { name: "y" label_filename: "l.txt" } ]')
    put(moto_s3, "m/l.txt", b"cat\ndog\n")
    source = S3VersionSource(S3Url(bucket, "m"), ObjectStoreOptions(cache_dir=tmp_path / "c"))

    local = source.materialize(source.list_versions()[1])

    config = read_model_config(local.model_dir, "m")
    assert config is not None and config.labels == {"y": ("cat", "dog")}

    # Gone from the bucket: gone from the cache at the next download.
    moto_s3.client.delete_object(Bucket="models", Key="m/l.txt")
    write_model(scale_model(3.0), tmp_path / "local", 2)
    moto_s3.upload_folder(tmp_path / "local", bucket, "m")
    source.materialize(source.list_versions()[2])
    assert not (local.model_dir / "l.txt").exists()
    assert (local.model_dir / "config.pbtxt").is_file()
