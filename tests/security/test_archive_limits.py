"""`ferry unpack` and `ferry pull` keep to a size budget (issue 11, Build 6).

A small gzip that expands far beyond `--max-size`, a member that declares gigabytes in
a kilobyte archive, an archive that fails halfway: each is refused in one line with a
non-zero exit, and nothing it wrote is left behind. `pull` checks the listed object
sizes before it fetches a byte.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture

MIB = 1024 * 1024


def ferry(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real `ferry` command in a child process (exit code and streams as a user sees)."""
    return subprocess.run(
        [sys.executable, "-m", "ferry.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def tar_gz(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A gzip'd tar of regular files (name, content), folders implied."""
    with gzip.open(path, "wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_a_gzip_bomb_stops_at_max_size_and_leaves_nothing(tmp_path: Path) -> None:
    # 24 MiB of zeros in about 24 KB: 1000x, refused at 1 MiB.
    bomb = tar_gz(tmp_path / "bomb.tar.gz", [("m/1/weights.bin", bytes(24 * MIB))])
    assert bomb.stat().st_size < 100_000
    dest = tmp_path / "out"

    started = time.monotonic()
    result = ferry("unpack", str(bomb), str(dest), "--max-size", "1M")

    assert_one_line_refusal(result, "larger than 1.0 MiB", "--max-size")
    assert time.monotonic() - started < 20
    assert not dest.exists(), files_under(dest)


def test_the_snake_case_spelling_is_accepted_and_a_folder_keeps_what_it_had(
    tmp_path: Path,
) -> None:
    bomb = tar_gz(
        tmp_path / "bomb.tar.gz",
        [("m/1/small.txt", b"fits"), ("m/1/weights.bin", bytes(8 * MIB))],
    )
    dest = tmp_path / "models"
    (dest / "other" / "1").mkdir(parents=True)
    (dest / "other" / "1" / "model.onnx").write_bytes(b"kept")

    result = ferry("unpack", str(bomb), str(dest), "--max_size", "2M")

    assert_one_line_refusal(result, "--max-size")
    assert files_under(dest) == ["other", "other/1", "other/1/model.onnx"]
    assert (dest / "other" / "1" / "model.onnx").read_bytes() == b"kept"


def test_a_member_that_declares_gigabytes_is_refused_without_reading_them(
    tmp_path: Path,
) -> None:
    # A header that claims 8 GiB, followed by a few bytes: the size is believed only as
    # far as the budget, so it is refused at once instead of written or decompressed.
    info = tarfile.TarInfo("m/1/huge.bin")
    info.size = 8 * 1024 * MIB
    archive = tmp_path / "liar.tar.gz"
    archive.write_bytes(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + bytes(4096)))
    dest = tmp_path / "out"

    started = time.monotonic()
    result = ferry("unpack", str(archive), str(dest))

    assert_one_line_refusal(result, "larger than", "20x the archive")
    assert time.monotonic() - started < 20
    assert not dest.exists()


def test_a_failure_halfway_through_removes_what_was_written(tmp_path: Path) -> None:
    # The second entry needs `m/1/x` to be a folder, but the first made it a file:
    # extraction fails after writing, and the written file goes too.
    archive = tar_gz(tmp_path / "broken.tar.gz", [("m/1/x", b"a file"), ("m/1/x/y", b"")])
    dest = tmp_path / "models"
    dest.mkdir()

    result = ferry("unpack", str(archive), str(dest))

    assert_one_line_refusal(result, "cannot unpack into")
    assert files_under(dest) == []


def test_an_archive_under_the_limit_unpacks(tmp_path: Path) -> None:
    archive = tar_gz(tmp_path / "model.tar.gz", [("m/1/weights.bin", bytes(MIB))])

    result = ferry("unpack", str(archive), str(tmp_path / "out"), "--max-size", "2M")

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "m" / "1" / "weights.bin").stat().st_size == MIB


def test_a_max_size_that_is_not_a_size_is_a_usage_error(tmp_path: Path) -> None:
    archive = tar_gz(tmp_path / "model.tar.gz", [("m/1/a", b"a")])

    result = ferry("unpack", str(archive), str(tmp_path / "out"), "--max-size", "lots")

    assert result.returncode == 2
    assert "not a size" in result.stderr
    assert not (tmp_path / "out").exists()


def test_pull_refuses_more_than_max_size_before_fetching(
    moto_s3: MotoS3,  # noqa: F811
    tmp_path: Path,
) -> None:
    moto_s3.client.create_bucket(Bucket="deploy")
    for name in ("a.bin", "b.bin"):
        moto_s3.client.put_object(Bucket="deploy", Key=f"m/{name}", Body=bytes(MIB))
    dest = tmp_path / "pulled"

    env = {**os.environ, **moto_s3.env}

    refused = ferry("pull", "s3://deploy/m/", str(dest), "--max-size", "1536K", env=env)

    line = assert_one_line_refusal(refused, "2.0 MiB to download", "--max-size")
    assert "s3://deploy/m/" in line
    assert files_under(dest) == []
    allowed = ferry("pull", "s3://deploy/m/", str(dest), "--max_size", "2M", env=env)
    assert allowed.returncode == 0, allowed.stderr
    assert files_under(dest) == ["a.bin", "b.bin"]
