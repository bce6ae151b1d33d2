"""Where requests meet versions: a request for the latest version never fails because a
newer one arrived, and a version that stopped serving leaves nothing behind in the metrics.

The race is forced deterministically (the swap runs exactly between the routes lookup and
the acquire), then provoked by a bounded stress run of real swaps.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support.models import scale_model, write_model

from ferry.errors import NotFound
from ferry.manager import ManagerOptions, ModelManager
from ferry.metrics import Metrics
from ferry.model_config import ModelSpec
from ferry.repository.source import LocalVersionSource
from ferry.served_version import ServedVersion

MODEL = "m"


@pytest.fixture
def manager() -> ModelManager:
    manager = ModelManager(ManagerOptions(), Metrics())
    yield manager
    manager.shutdown()


def sync(manager: ModelManager, base: Path) -> None:
    manager.sync(ModelSpec(MODEL, base), LocalVersionSource(base).list_versions())


def swap_to(manager: ModelManager, base: Path, version: int) -> None:
    """Publish `version` and retire every older one (the default policy serves the newest)."""
    write_model(scale_model(float(version)), base, version)
    sync(manager, base)


def test_latest_retried_on_the_new_snapshot_when_its_version_retires_in_between(
    manager: ModelManager, tmp_path: Path
) -> None:
    base = tmp_path / MODEL
    swap_to(manager, base, 1)
    first = manager.acquire(MODEL)
    first.release()
    original = ServedVersion.acquire

    def swap_then_acquire() -> ServedVersion:
        # The routes lookup already chose version 1; now version 2 arrives and version 1
        # finishes retiring before this request takes its reference.
        swap_to(manager, base, 2)
        manager.wait_for_retirements(10)
        return original(first)

    first.acquire = swap_then_acquire  # this instance only

    served = manager.acquire(MODEL)

    assert served.version == 2
    served.release()
    with pytest.raises(NotFound, match=r"Specific\(m, 1\)"):
        manager.acquire(MODEL, 1)  # a request for the retired version still fails


def test_no_request_for_latest_fails_across_hundreds_of_swaps(
    manager: ModelManager, tmp_path: Path
) -> None:
    base = tmp_path / MODEL
    swap_to(manager, base, 1)
    stop = threading.Event()
    failures: list[str] = []
    acquired = [0] * 4

    def requests(index: int) -> None:
        while not stop.is_set():
            try:
                served = manager.acquire(MODEL)
            except NotFound as exc:
                failures.append(str(exc))
                continue
            served.release()
            acquired[index] += 1

    threads = [threading.Thread(target=requests, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    # A swap loads and warms up a model while four threads contend for the GIL: a few
    # per second on a loaded 2-core machine. The old acquire failed within 20 swaps.
    deadline = time.monotonic() + 40
    swaps = 0
    try:
        for version in range(2, 102):
            if time.monotonic() > deadline:
                break
            swap_to(manager, base, version)
            shutil.rmtree(base / str(version - 1))
            swaps += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)

    assert swaps >= 20, f"only {swaps} swaps ran in time"
    assert min(acquired) > 0
    assert not failures, f"{len(failures)} requests failed: {failures[:3]}"


def test_metrics_of_a_version_that_stopped_serving_are_removed(
    model_root: Path, start_server
) -> None:
    write_model(scale_model(1.0), model_root / MODEL, 1)
    server = start_server(str(model_root), "--file_system_poll_wait_seconds", "0.2")
    body = {"instances": np.ones((2, 4)).tolist()}
    assert server.predict(MODEL, body).status_code == 200

    def series(version: int) -> list[str]:
        text = server.get("/monitoring/prometheus/metrics").text
        return [line for line in text.splitlines() if f'version="{version}"' in line]

    assert any(line.startswith("ferry_requests_total") for line in series(1))
    write_model(scale_model(2.0), model_root / MODEL, 2)
    server.wait_version(MODEL, 2)
    assert server.predict(MODEL, body).json()["predictions"][0] == [2.0] * 4

    deadline = time.monotonic() + 10
    while series(1) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert series(1) == []
    assert any(line.startswith("ferry_requests_total") for line in series(2))
