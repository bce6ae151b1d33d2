"""A consistent rollout across replicas (docs/rollouts.md): two real `ferry serve`
processes poll one model folder; clients ask for the `stable` label; the operator moves
it in the folder's version_labels.json once every replica reports the new version
AVAILABLE. Requests by label follow on every replica, over REST and gRPC; a replica
that does not have the version keeps the old assignment and says so. Over a real (moto)
S3 store, the labels move on the bucket's events."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from support.models import scale_model, write_model
from support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture
from support.server import FerryProcess, wait_until

import ferry
from ferry.repository.label_file import VERSION_LABELS_FILE

FAST_POLL = ("--file_system_poll_wait_seconds", "0.3", "--version_settle_seconds", "0.1")
ONES = {"instances": [[1.0, 1.0, 1.0, 1.0]]}


def write_config(path: Path, base_path: str, policy: str) -> Path:
    path.write_text(
        f'model_config_list {{ config {{ name: "m" base_path: "{base_path}" '
        f'model_platform: "onnx" model_version_policy {{ {policy} }} }} }}'
    )
    return path


def write_labels(model_dir: Path, text: str) -> None:
    staging = model_dir / ".labels.tmp"
    staging.write_text(text)
    os.replace(staging, model_dir / VERSION_LABELS_FILE)


def answer(server: FerryProcess, suffix: str = "") -> float:
    """The factor of the scale model that answered: its version number here."""
    response = server.predict("m", ONES, suffix)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0][0]


def label_version(server: FerryProcess, label: str) -> str | None:
    """The version `label` is at on `server` (GetModelStatus by label), None if unknown."""
    response = server.get(f"/v1/models/m/labels/{label}")
    if response.status_code != 200:
        return None
    return response.json()["model_version_status"][0]["version"]


def test_the_stable_label_moves_on_every_replica_that_has_the_version(
    model_root: Path, tmp_path: Path, start_server
) -> None:
    model_dir = model_root / "m"
    write_model(scale_model(1.0), model_dir, 1)
    write_labels(model_dir, '{"stable": 1}')
    everything = write_config(tmp_path / "a.config", str(model_dir), "all {}")
    # Replica b's policy stands in for a replica that has not loaded version 3 yet.
    lagging = write_config(
        tmp_path / "b.config", str(model_dir), "specific { versions: 1 versions: 2 }"
    )
    replicas = [
        start_server("--model_config_file", str(config), *FAST_POLL)
        for config in (everything, lagging)
    ]
    for replica in replicas:
        replica.wait_version("m", 1)
        assert answer(replica, "/labels/stable") == 1.0

    # 1. Upload the new version; wait until every replica reports it AVAILABLE.
    write_model(scale_model(2.0), model_dir, 2)
    for replica in replicas:
        replica.wait_version("m", 2, timeout=15)
        # "latest" has moved on this replica; the label has not.
        assert answer(replica) == 2.0
        assert answer(replica, "/labels/stable") == 1.0

    # 2. Move the label; every replica follows within a poll.
    write_labels(model_dir, '{"stable": 2, "previous": 1}')
    for replica in replicas:
        wait_until(lambda r=replica: label_version(r, "stable") == "2", 10, message="stable at 2")
        assert answer(replica, "/labels/stable") == 2.0
        assert answer(replica, "/labels/previous") == 1.0
        with ferry.Client(f"grpc://{replica.grpc_target}", timeout=10) as client:
            [status] = client.status("m", label="stable")
            assert (status.version, status.state) == (2, "AVAILABLE")
            outputs = client.predict("m", np.ones((1, 4), np.float32), label="stable")
            assert outputs["y"].tolist() == [[2.0] * 4]

    # 3. A label moved to a version one replica does not have: there it stays, logged.
    write_model(scale_model(3.0), model_dir, 3)
    replicas[0].wait_version("m", 3, timeout=15)
    write_labels(model_dir, '{"stable": 3}')
    wait_until(lambda: label_version(replicas[0], "stable") == "3", 10, message="a's stable at 3")
    wait_until(
        lambda: (
            "Request to assign label to version 3 of model m, which is not currently "
            "available for inference; label 'stable' stays at version 2" in replicas[1].log()
        ),
        10,
        message="b's refusal in its log",
    )
    assert answer(replicas[0], "/labels/stable") == 3.0
    assert answer(replicas[1], "/labels/stable") == 2.0
    assert label_version(replicas[1], "previous") is None  # the file's labels, whole


def test_malformed_and_oversized_label_files_leave_the_labels_in_force(
    model_root: Path, tmp_path: Path, start_server
) -> None:
    model_dir = model_root / "m"
    for version in (1, 2):
        write_model(scale_model(float(version)), model_dir, version)
    write_labels(model_dir, '{"stable": 1}')
    config = write_config(tmp_path / "m.config", str(model_dir), "all {}")
    server = start_server(
        "--model_config_file", str(config), "--max_version_labels_file_bytes", "64", *FAST_POLL
    )
    server.wait_version("m", 2)
    wait_until(lambda: label_version(server, "stable") == "1", 10, message="stable at 1")

    write_labels(model_dir, '{"stable": 2,')
    wait_until(lambda: "version_labels.json refused" in server.log(), 10, message="refusal")
    assert "not JSON" in server.log()
    assert answer(server, "/labels/stable") == 1.0

    oversized = '{"stable": 2' + " " * 64 + "}"
    write_labels(model_dir, oversized)
    wait_until(
        lambda: f"{len(oversized)} bytes, more than 64" in server.log(), 10, message="size refusal"
    )
    assert answer(server, "/labels/stable") == 1.0

    write_labels(model_dir, '{"stable": 2}')
    wait_until(lambda: label_version(server, "stable") == "2", 10, message="stable at 2")


def test_labels_move_from_an_s3_store_on_its_events(
    moto_s3: MotoS3,  # noqa: F811
    tmp_path: Path,
    start_server,
) -> None:
    """Polls only at start-up: every later change arrives through the bucket's events."""
    queue_url = moto_s3.notified_queue("models")
    for version in (1, 2):
        folder = tmp_path / f"upload-{version}"
        write_model(scale_model(float(version)), folder, version)
        moto_s3.upload_folder(folder, "models", "m")
    key = f"m/{VERSION_LABELS_FILE}"
    moto_s3.client.put_object(Bucket="models", Key=key, Body=b'{"stable": 1}')
    config = write_config(tmp_path / "s3.config", "s3://models/m", "all {}")
    server = start_server(
        "--model_config_file", str(config), "--model_cache_dir", str(tmp_path / "cache"),
        "--file_system_poll_wait_seconds", "3600", "--version_settle_seconds", "0.1",
        "--s3_event_queue_url", queue_url, "--max_version_labels_file_bytes", "64",
        env=moto_s3.env,
    )  # fmt: skip
    server.wait_version("m", 2)
    wait_until(lambda: label_version(server, "stable") == "1", 10, message="stable at 1")
    assert answer(server, "/labels/stable") == 1.0

    moto_s3.client.put_object(Bucket="models", Key=key, Body=b'{"stable": 2}')
    wait_until(lambda: label_version(server, "stable") == "2", 10, message="stable at 2")
    assert answer(server, "/labels/stable") == 2.0

    moto_s3.client.put_object(Bucket="models", Key=key, Body=b" " * 100)
    wait_until(lambda: "100 bytes, more than 64" in server.log(), 10, message="size refusal")
    assert answer(server, "/labels/stable") == 2.0
