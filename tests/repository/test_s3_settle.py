"""The settle check over object storage: a new version downloads during the settle
window, and is served only if the second listing confirms what was downloaded. Real
moto S3 server, real manager and ONNX Runtime."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from support.models import scale_model
from support.s3 import MotoS3, moto_s3  # noqa: F401 - the fixture

from ferry.errors import NotFound
from ferry.manager import ManagerOptions, ModelManager
from ferry.metrics import Metrics
from ferry.model_config import ModelSpec
from ferry.repository.catalog import FixedCatalog
from ferry.repository.location import ObjectStoreOptions, S3Url
from ferry.repository.watcher import RepositoryWatcher

BUCKET = "models"


def upload(store: MotoS3, version: int, factor: float) -> None:
    body = scale_model(factor).SerializeToString()
    store.client.put_object(Bucket=BUCKET, Key=f"m/{version}/model.onnx", Body=body)


def answer(manager: ModelManager) -> float:
    served = manager.acquire("m")
    try:
        x = np.ones((1, 4), dtype=np.float32)
        return float(served.runtime.run("serving_default", {"x": x})["y"][0, 0])
    finally:
        served.release()


@pytest.fixture
def watched(moto_s3: MotoS3, tmp_path: Path):  # noqa: F811
    moto_s3.client.create_bucket(Bucket=BUCKET)
    manager = ModelManager(ManagerOptions(), Metrics())
    spec = ModelSpec("m", S3Url(BUCKET, "m"))
    options = ObjectStoreOptions(cache_dir=tmp_path / "cache")
    # Polled by hand (poll_once); the thread is never started.
    watcher = RepositoryWatcher(FixedCatalog([spec]), manager, 3600, 1.0, options)
    try:
        yield manager, watcher, tmp_path / "cache"
    finally:
        manager.shutdown()


def cached_contents(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.parent.name.isdigit() and p.is_dir())


def test_a_new_version_is_downloaded_and_served_after_one_settle_window(
    moto_s3: MotoS3,  # noqa: F811
    watched,
) -> None:
    manager, watcher, cache = watched
    upload(moto_s3, 1, 2.0)
    watcher.poll_once()
    assert answer(manager) == 2.0
    assert len(cached_contents(cache)) == 1


def test_a_version_replaced_during_the_window_is_not_served_as_first_listed(
    moto_s3: MotoS3,  # noqa: F811
    watched,
) -> None:
    manager, watcher, cache = watched
    upload(moto_s3, 1, 2.0)
    # Replaced while the first content downloads, before the window's second listing.
    replace = threading.Timer(0.3, upload, (moto_s3, 1, 3.0))
    replace.start()
    watcher.poll_once()
    replace.join()
    with pytest.raises(NotFound):
        manager.acquire("m")  # nothing served yet
    assert cached_contents(cache) == []  # the early download of the old content is gone
    watcher.poll_once()  # the replacement settles
    assert answer(manager) == 3.0
    [content] = cached_contents(cache)
    model = onnx.load(str(content / "model.onnx"))
    assert onnx.numpy_helper.to_array(model.graph.initializer[0]) == np.float32(3.0)
