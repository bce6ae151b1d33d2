"""S3VersionSource and S3RootCatalog against a real S3-compatible server (moto)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.models import scale_model, write_model
from support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture

from ferry.errors import StatusCode, StorageError
from ferry.model_config import parse_model_config
from ferry.repository.location import ObjectStoreOptions, S3Url, parse_base_path
from ferry.repository.s3_source import S3RootCatalog, S3VersionSource


@pytest.fixture
def bucket(moto_s3: MotoS3) -> str:  # noqa: F811
    moto_s3.client.create_bucket(Bucket="models")
    return "models"


def options(tmp_path: Path) -> ObjectStoreOptions:
    return ObjectStoreOptions(cache_dir=tmp_path / "cache")


def put(store: MotoS3, key: str, body: bytes = b"x") -> None:
    store.client.put_object(Bucket="models", Key=key, Body=body)


def test_s3_urls_parse_join_and_print() -> None:
    url = S3Url.parse("s3://bucket/a/b/")
    assert (url.bucket, url.prefix, url.key_prefix) == ("bucket", "a/b", "a/b/")
    assert str(url / "m") == "s3://bucket/a/b/m"
    assert str(S3Url.parse("s3://bucket")) == "s3://bucket"
    assert parse_base_path("s3://bucket/x") == S3Url("bucket", "x")
    assert parse_base_path("/models/x") == Path("/models/x")
    with pytest.raises(ValueError):
        S3Url.parse("s3:///x")


def test_a_config_file_base_path_may_be_an_s3_url(tmp_path: Path) -> None:
    text = "model_config_list { config { name: 'm' base_path: 's3://b/models/m' } }"
    (spec,) = parse_model_config(text, tmp_path)
    assert spec.base_path == S3Url("b", "models/m")


def test_integer_prefixes_are_versions_with_key_size_etag_fingerprints(
    moto_s3: MotoS3,  # noqa: F811
    bucket: str,
    tmp_path: Path,
) -> None:
    put(moto_s3, "m/1/model.onnx", b"one")
    put(moto_s3, "m/2/model.onnx", b"two")
    put(moto_s3, "m/2/assets/vocab.txt", b"words")
    put(moto_s3, "m/3/")  # a folder marker: an empty version folder, as on disk
    put(moto_s3, "m/README.md")
    put(moto_s3, "m/staging/model.onnx")
    put(moto_s3, "m/batching_params.pbtxt", b"max_batch_size { value: 4 }")
    source = S3VersionSource(S3Url(bucket, "m"), options(tmp_path))
    versions = source.list_versions()
    assert sorted(versions) == [1, 2, 3]
    assert versions[3].fingerprint == ()
    assert [item[0] for item in versions[2].fingerprint] == [
        "2/assets/vocab.txt",
        "2/model.onnx",
    ]
    before = versions[1].fingerprint
    put(moto_s3, "m/1/model.onnx", b"ONE")  # same size, new content: a new ETag
    assert source.list_versions()[1].fingerprint != before


def test_materialize_downloads_a_version_whole_into_the_cache(
    moto_s3: MotoS3,  # noqa: F811
    bucket: str,
    tmp_path: Path,
) -> None:
    write_model(scale_model(2.0), tmp_path / "local", 2)
    moto_s3.upload_folder(tmp_path / "local", bucket, "m")
    put(moto_s3, "m/2/assets/vocab.txt", b"words")
    put(moto_s3, "m/batching_params.pbtxt", b"max_batch_size { value: 4 }")
    source = S3VersionSource(S3Url(bucket, "m"), options(tmp_path))
    stored = source.list_versions()[2]
    assert not stored.path.exists()
    local = source.materialize(stored)
    assert local.path.is_dir() and local.path.is_relative_to(tmp_path / "cache")
    assert (local.path / "model.onnx").read_bytes() == (
        tmp_path / "local/2/model.onnx"
    ).read_bytes()
    assert (local.path / "assets" / "vocab.txt").read_bytes() == b"words"
    assert local.model_dir is not None
    assert (local.model_dir / "batching_params.pbtxt").read_text().startswith("max_batch_size")
    # Nothing half-written is left beside it.
    assert not [p for p in local.model_dir.iterdir() if p.name.startswith(".staging-")]
    # A changed version downloads beside the old one; retain() drops what is unlisted.
    put(moto_s3, "m/2/assets/vocab.txt", b"other words")
    changed = source.materialize(source.list_versions()[2])
    assert changed.path != local.path and local.path.is_dir()
    source.retain([changed.path])
    assert not local.path.exists() and changed.path.is_dir()


def test_a_key_that_would_escape_the_cache_is_refused(
    moto_s3: MotoS3,  # noqa: F811
    bucket: str,
    tmp_path: Path,
) -> None:
    put(moto_s3, "m/1/../../../escaped.txt", b"evil")
    source = S3VersionSource(S3Url(bucket, "m"), options(tmp_path))
    stored = source.list_versions()[1]
    with pytest.raises(StorageError, match="unsafe"):
        source.materialize(stored)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not stored.path.exists()


def test_root_catalog_lists_model_prefixes(
    moto_s3: MotoS3,  # noqa: F811
    bucket: str,
    tmp_path: Path,
) -> None:
    for key in ("root/a/1/model.onnx", "root/b/1/model.onnx", "root/_hidden/1/x", "root/file"):
        put(moto_s3, key)
    specs = S3RootCatalog(S3Url(bucket, "root"), options(tmp_path)).current()
    assert [(s.name, s.base_path) for s in specs] == [
        ("a", S3Url(bucket, "root/a")),
        ("b", S3Url(bucket, "root/b")),
    ]


def test_storage_errors_carry_a_status_code(
    moto_s3: MotoS3,  # noqa: F811
    bucket: str,
    tmp_path: Path,
) -> None:
    missing = S3VersionSource(S3Url("no-such-bucket", "m"), options(tmp_path))
    with pytest.raises(StorageError) as found:
        missing.list_versions()
    assert found.value.code == StatusCode.NOT_FOUND
    source = S3VersionSource(S3Url(bucket, "m"), options(tmp_path))
    moto_s3.stop()
    with pytest.raises(StorageError) as gone:
        source.list_versions()
    assert gone.value.code == StatusCode.UNAVAILABLE


def test_storage_retries_back_off_up_to_a_cap() -> None:
    from ferry.repository.watcher import RetrySchedule

    schedule = RetrySchedule(base_seconds=1.0, max_seconds=5.0)
    assert schedule.due("m")
    assert [schedule.failed("m") for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert not schedule.due("m")
    schedule.succeeded("m")
    assert schedule.due("m")
