"""`ferry pull URL DEST/` writes into DEST (a trailing '/' says "folder", as with
`aws s3 cp`), and a packaged archive's .sha256 travels with it: `push` checks and uploads
it, `pull` brings it back, `unpack` verifies the download. The CLI as a process, against
moto's S3 server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.models import scale_model, write_model
from support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture


def ferry(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ferry.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_pull_into_a_new_folder_written_with_a_slash(
    moto_s3: MotoS3,  # noqa: F811
    tmp_path: Path,
) -> None:
    moto_s3.client.create_bucket(Bucket="deploy")
    moto_s3.client.put_object(Bucket="deploy", Key="models/x.bin", Body=b"payload")
    pulled = ferry("pull", "s3://deploy/models/x.bin", f"{tmp_path / 'newdir'}/")
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "newdir").is_dir()
    assert (tmp_path / "newdir" / "x.bin").read_bytes() == b"payload"
    # Without the slash, DEST is the file's name (as before).
    named = ferry("pull", "s3://deploy/models/x.bin", str(tmp_path / "renamed.bin"))
    assert named.returncode == 0, named.stderr
    assert (tmp_path / "renamed.bin").read_bytes() == b"payload"


def test_the_checksum_is_pushed_pulled_and_checked(
    moto_s3: MotoS3,  # noqa: F811
    tmp_path: Path,
) -> None:
    moto_s3.client.create_bucket(Bucket="deploy")
    write_model(scale_model(2.0), tmp_path / "m", 1)
    archive = tmp_path / "model.tar.gz"
    assert ferry("package", str(tmp_path / "m"), "-o", str(archive)).returncode == 0
    pushed = ferry("push", str(archive), "s3://deploy/models/")
    assert pushed.returncode == 0, pushed.stderr
    assert "uploaded 2 files" in pushed.stdout
    checksum = moto_s3.client.get_object(Bucket="deploy", Key="models/model.tar.gz.sha256")
    assert checksum["Body"].read().decode() == (tmp_path / "model.tar.gz.sha256").read_text()

    down = tmp_path / "down"
    pulled = ferry("pull", "s3://deploy/models/model.tar.gz", f"{down}/")
    assert pulled.returncode == 0, pulled.stderr
    assert entries(down) == ["model.tar.gz", "model.tar.gz.sha256"]
    assert ferry("unpack", str(down / "model.tar.gz"), str(tmp_path / "out")).returncode == 0

    # A download that does not match its checksum is refused by unpack.
    data = (down / "model.tar.gz").read_bytes()
    (down / "model.tar.gz").write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    bad = ferry("unpack", str(down / "model.tar.gz"), str(tmp_path / "out2"))
    assert bad.returncode != 0 and "does not match" in bad.stderr


def test_a_stale_checksum_stops_the_push(moto_s3: MotoS3, tmp_path: Path) -> None:  # noqa: F811
    moto_s3.client.create_bucket(Bucket="deploy")
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"the archive as packed")
    (tmp_path / "model.tar.gz.sha256").write_text("0" * 64 + "  model.tar.gz\n")
    refused = ferry("push", str(archive), "s3://deploy/models/")
    assert refused.returncode == 1
    assert "changed after it was packed" in refused.stderr and "Traceback" not in refused.stderr
    listed = moto_s3.client.list_objects_v2(Bucket="deploy")
    assert listed.get("KeyCount", 0) == 0


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())
