"""A model's version_labels.json: what parses, what is refused, and that a refused file
leaves the labels in force. Real files in a model folder and a real moto S3 server."""

from __future__ import annotations

import logging
import os
import tarfile
import threading
from pathlib import Path

import pytest
from support.models import scale_model, write_model
from support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture

from ferry.deploy.package import package
from ferry.model_config import ModelSpec
from ferry.repository.label_file import (
    VERSION_LABELS_FILE,
    VersionLabelFiles,
    VersionLabelsError,
    parse_version_labels,
)
from ferry.repository.location import ObjectStoreOptions, S3Url
from ferry.repository.model_files import is_model_level_file
from ferry.repository.source import LocalVersionSource, ModelFileTooLarge

LOGGER = "ferry.repository.label_file"


def test_a_label_file_is_a_json_object_of_label_to_version() -> None:
    labels = parse_version_labels(b'{"stable": 3, "canary": 4, "v1.2_rc-1": 0}')

    assert labels == {"stable": 3, "canary": 4, "v1.2_rc-1": 0}
    assert parse_version_labels(b"{}") == {}


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "not JSON"),
        (b'{"stable": 3', "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[3, 4]", "must be a JSON object"),
        (b'"stable"', "must be a JSON object"),
        (b'{"stable": "3"}', "must be an integer"),
        (b'{"stable": 3.0}', "must be an integer"),
        (b'{"stable": true}', "must be an integer"),
        (b'{"stable": null}', "must be an integer"),
        (b'{"stable": -1}', "out of range"),
        (b'{"stable": 9223372036854775808}', "out of range"),
        (b'{"": 1}', "a label is 1 to 128"),
        (b'{"a/b": 1}', "a label is 1 to 128"),
        (b'{"a:predict": 1}', "a label is 1 to 128"),
        (b'{"-x": 1}', "a label is 1 to 128"),
        (b'{"' + b"x" * 129 + b'": 1}', "a label is 1 to 128"),
        (b'{"stable": 3, "stable": 4}', "given twice"),
        (b"[" * 50_000, "not JSON"),  # deeper than the recursion limit
    ],
)
def test_malformed_files_are_refused_saying_why(content: bytes, why: str) -> None:
    with pytest.raises(VersionLabelsError, match=why):
        parse_version_labels(content)


def test_the_label_file_is_a_model_level_file_so_packages_carry_it(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    write_model(scale_model(1.0), model_dir, 1)
    (model_dir / VERSION_LABELS_FILE).write_text('{"stable": 1}')

    packed = package(model_dir, tmp_path / "model.tar.gz")

    assert is_model_level_file(VERSION_LABELS_FILE)
    with tarfile.open(packed.archive) as tar:
        assert f"m/{VERSION_LABELS_FILE}" in tar.getnames()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    return folder


def write_labels(model_dir: Path, content: bytes | str) -> None:
    data = content.encode() if isinstance(content, str) else content
    staging = model_dir / ".labels.tmp"
    staging.write_bytes(data)
    os.replace(staging, model_dir / VERSION_LABELS_FILE)


def test_labels_are_read_on_every_call_and_a_removed_file_gives_back_the_config(
    model_dir: Path,
) -> None:
    files = VersionLabelFiles()
    source = LocalVersionSource(model_dir)
    spec = ModelSpec("m", model_dir, labels={"stable": 1, "old": 1})

    assert files.read("m", source) is None
    assert files.applied(spec, source).labels == {"stable": 1, "old": 1}  # no file: config's
    write_labels(model_dir, '{"stable": 2}')
    # The file's labels replace the config's whole: "old" is gone.
    assert files.applied(spec, source).labels == {"stable": 2}
    write_labels(model_dir, '{"stable": 3, "canary": 4}')
    assert files.read("m", source) == {"stable": 3, "canary": 4}
    (model_dir / VERSION_LABELS_FILE).unlink()
    assert files.applied(spec, source).labels == {"stable": 1, "old": 1}


def test_a_malformed_file_keeps_the_previous_labels_and_is_logged_once(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = VersionLabelFiles()
    source = LocalVersionSource(model_dir)
    write_labels(model_dir, '{"stable": 3}')
    assert files.read("m", source) == {"stable": 3}

    write_labels(model_dir, '{"stable": 4,')
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        for _ in range(3):  # three polls of the same bad file
            assert files.read("m", source) == {"stable": 3}
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1, refusals
    assert "model m: version_labels.json refused" in refusals[0]
    assert "not JSON" in refusals[0]

    write_labels(model_dir, '{"stable": 4}')
    assert files.read("m", source) == {"stable": 4}


def test_a_file_over_the_bound_is_refused_before_it_is_read(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = VersionLabelFiles(max_bytes=64)
    source = LocalVersionSource(model_dir)
    write_labels(model_dir, '{"stable": 3}')
    assert files.read("m", source) == {"stable": 3}

    big = '{"stable": 4, "padding": 0' + " " * 100 + "}"
    write_labels(model_dir, big)
    with pytest.raises(ModelFileTooLarge):
        source.read_model_file(VERSION_LABELS_FILE, 64)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert files.read("m", source) == {"stable": 3}
    assert f"{len(big)} bytes, more than 64" in caplog.text


def test_a_refused_first_file_leaves_the_config_labels(model_dir: Path) -> None:
    files = VersionLabelFiles()
    source = LocalVersionSource(model_dir)
    write_labels(model_dir, "not json")
    spec = ModelSpec("m", model_dir, labels={"stable": 1})

    assert files.applied(spec, source).labels == {"stable": 1}


def test_a_fifo_under_the_name_is_refused_without_blocking(model_dir: Path) -> None:
    os.mkfifo(model_dir / VERSION_LABELS_FILE)
    files = VersionLabelFiles()
    result: list[object] = []
    reader = threading.Thread(
        target=lambda: result.append(files.read("m", LocalVersionSource(model_dir)))
    )
    reader.start()
    reader.join(5)

    assert not reader.is_alive(), "reading the label file blocked on a FIFO"
    assert result == [None]


def test_s3_label_files_are_bounded_by_their_listed_size(
    moto_s3: MotoS3,  # noqa: F811
    tmp_path: Path,
) -> None:
    from ferry.repository.s3_source import S3VersionSource

    moto_s3.client.create_bucket(Bucket="models")
    source = S3VersionSource(
        S3Url("models", "m"), ObjectStoreOptions(cache_dir=tmp_path / "cache"), moto_s3.client
    )
    key = f"m/{VERSION_LABELS_FILE}"
    source.list_versions()
    assert source.read_model_file(VERSION_LABELS_FILE, 64) is None

    moto_s3.client.put_object(Bucket="models", Key=key, Body=b'{"stable": 1}')
    source.list_versions()
    assert source.read_model_file(VERSION_LABELS_FILE, 64) == b'{"stable": 1}'
    moto_s3.client.put_object(Bucket="models", Key=key, Body=b'{"stable": 2}')
    source.list_versions()  # a new ETag: read again
    assert source.read_model_file(VERSION_LABELS_FILE, 64) == b'{"stable": 2}'

    moto_s3.client.put_object(Bucket="models", Key=key, Body=b" " * 65)
    source.list_versions()
    with pytest.raises(ModelFileTooLarge):
        source.read_model_file(VERSION_LABELS_FILE, 64)

    # A version's download brings the model-level files it loads with, not this one: it
    # is read from the store, bounded, on every poll.
    moto_s3.client.put_object(Bucket="models", Key="m/1/model.onnx", Body=b"onnx")
    moto_s3.client.put_object(Bucket="models", Key="m/batching_params.pbtxt", Body=b"")
    stored = source.materialize(source.list_versions()[1])
    assert (stored.model_dir / "batching_params.pbtxt").is_file()
    assert not list((tmp_path / "cache").rglob(VERSION_LABELS_FILE))
