"""Version labels, from the config file or a model's version_labels.json, follow TF
Serving's rule (server_core.cc): a label moves only to a version AVAILABLE on this
replica; otherwise it stays where it is and the refusal is logged once. The real watcher
and manager over a real model folder, polled by hand (`poll_once`), real ONNX models."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.models import scale_model, write_model

from ferry.errors import InvalidArgument, NotFound
from ferry.manager import ManagerOptions, ModelManager
from ferry.metrics import Metrics
from ferry.model_config import ModelSpec
from ferry.repository.catalog import FixedCatalog
from ferry.repository.label_file import VERSION_LABELS_FILE
from ferry.repository.policy import AllVersions
from ferry.repository.watcher import RepositoryWatcher

X = np.ones((1, 4), dtype=np.float32)


class Replica:
    """One manager and its watcher over `model_dir`, polled by hand."""

    def __init__(self, model_dir: Path, labels: dict[str, int], allow: bool = False) -> None:
        options = ManagerOptions(allow_version_labels_for_unavailable_models=allow)
        self.manager = ModelManager(options, Metrics())
        spec = ModelSpec("m", model_dir, policy=AllVersions(), labels=labels)
        # settle 0: a version is confirmed at once; the thread is never started.
        self.watcher = RepositoryWatcher(FixedCatalog([spec]), self.manager, 3600, 0.0)
        self.model_dir = model_dir

    def poll(self) -> None:
        self.watcher.poll_once()

    def answer(self, label: str) -> float:
        """The factor (the version number here) of the version `label` routes to."""
        served = self.manager.acquire("m", label=label)
        try:
            return float(served.runtime.run("serving_default", {"x": X})["y"][0, 0])
        finally:
            served.release()

    def write_labels(self, text: str) -> None:
        staging = self.model_dir / ".labels.tmp"
        staging.write_text(text)
        os.replace(staging, self.model_dir / VERSION_LABELS_FILE)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "m"
    for version in (1, 2):
        write_model(scale_model(float(version)), folder, version)
    return folder


@pytest.fixture
def replicas():
    made: list[Replica] = []

    def make(model_dir: Path, labels: dict[str, int] | None = None, allow: bool = False):
        made.append(Replica(model_dir, labels or {}, allow))
        return made[-1]

    yield make
    for replica in made:
        replica.manager.shutdown()


def test_labels_from_the_file_appear_and_move_on_the_next_poll(model_dir: Path, replicas):
    replica = replicas(model_dir)
    replica.write_labels('{"stable": 1, "canary": 2}')
    replica.poll()

    assert replica.answer("stable") == 1.0
    assert replica.answer("canary") == 2.0
    assert replica.manager.version_status("m", label="stable")[0].version == 1
    assert replica.manager.labels("m") == {"stable": 1, "canary": 2}

    replica.write_labels('{"stable": 2}')
    replica.poll()
    assert replica.answer("stable") == 2.0
    with pytest.raises(InvalidArgument, match="Unrecognized servable version label: canary"):
        replica.answer("canary")


def test_a_label_moved_to_a_version_not_available_here_stays_until_it_is(
    model_dir: Path, replicas, caplog: pytest.LogCaptureFixture
):
    replica = replicas(model_dir)
    replica.write_labels('{"stable": 2}')
    replica.poll()
    # Version 3 arrives broken: it fails to load, so it is not AVAILABLE here.
    (model_dir / "3").mkdir()
    (model_dir / "3" / "model.onnx").write_bytes(b"not an onnx model")
    replica.write_labels('{"stable": 3, "canary": 3}')
    with caplog.at_level(logging.ERROR, logger="ferry.manager"):
        for _ in range(3):
            replica.poll()

    assert replica.answer("stable") == 2.0  # the old assignment stays
    with pytest.raises(InvalidArgument, match="Unrecognized servable version label: canary"):
        replica.answer("canary")  # a new label waits for its version
    refusals = [
        r.getMessage() for r in caplog.records if "Request to assign label" in r.getMessage()
    ]
    assert sorted(refusals) == [
        "model m: Request to assign label to version 3 of model m, which is not currently "
        "available for inference; label 'canary' not assigned",
        "model m: Request to assign label to version 3 of model m, which is not currently "
        "available for inference; label 'stable' stays at version 2",
    ]  # once each, not once per poll

    shutil.rmtree(model_dir / "3")
    write_model(scale_model(3.0), model_dir, 3)
    replica.poll()
    assert replica.answer("stable") == 3.0  # moved once version 3 is AVAILABLE
    assert replica.answer("canary") == 3.0


def test_the_config_labels_apply_until_a_label_file_exists_and_after_it_is_removed(
    model_dir: Path, replicas
):
    replica = replicas(model_dir, labels={"stable": 1, "old": 1})
    replica.poll()
    assert replica.manager.labels("m") == {"stable": 1, "old": 1}

    replica.write_labels('{"stable": 2}')
    replica.poll()
    assert replica.manager.labels("m") == {"stable": 2}  # the file's, whole

    (model_dir / VERSION_LABELS_FILE).unlink()
    replica.poll()
    assert replica.manager.labels("m") == {"stable": 1, "old": 1}


def test_a_malformed_label_file_keeps_the_labels_in_force(model_dir: Path, replicas):
    replica = replicas(model_dir)
    replica.write_labels('{"stable": 1}')
    replica.poll()
    replica.write_labels('{"stable": 2')
    replica.poll()

    assert replica.answer("stable") == 1.0


def test_allowed_labels_for_unavailable_versions_are_new_labels_only(model_dir: Path, replicas):
    """--allow_version_labels_for_unavailable_models, as in TF Serving: a label not yet in
    force may name any version; a label in force still moves only to an AVAILABLE one."""
    replica = replicas(model_dir, allow=True)
    replica.write_labels('{"stable": 1}')
    replica.poll()
    replica.write_labels('{"stable": 5, "canary": 5}')
    replica.poll()

    assert replica.manager.labels("m") == {"stable": 1, "canary": 5}
    with pytest.raises(NotFound, match=r"Servable not found for request: Specific\(m, 5\)"):
        replica.answer("canary")
