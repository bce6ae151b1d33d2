"""SageMaker mounts /opt/ml/model read-only: `ferry serve --sagemaker` must serve from such
a folder and put what it derives (here a model's `precision = "int8"` variant) under its
cache folder, never next to the model. The folder is a real read-only bind mount, so the
test needs the right to mount (root with CAP_SYS_ADMIN, as on CI's containers); without
it the test is skipped."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ferry.examples import mlp_small, write_version


@pytest.fixture
def read_only_model_dir(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(the read-only mount, the writable folder behind it)."""
    source, mounted = tmp_path / "source", tmp_path / "opt-ml-model"
    model_dir = source / "mlp_small"
    write_version(mlp_small(), model_dir, 1)
    (model_dir / "ferry.toml").write_text('precision = "int8"\n')
    mounted.mkdir()
    steps = (
        ["mount", "--bind", str(source), str(mounted)],
        ["mount", "-o", "remount,ro,bind", str(mounted)],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["umount", str(mounted)], capture_output=True)
            pytest.skip(f"cannot make a read-only bind mount here: {done.stderr.strip()}")
    try:
        yield mounted, source
    finally:
        subprocess.run(["umount", str(mounted)], check=True)


def test_conversions_of_a_read_only_model_go_to_the_cache(
    read_only_model_dir: tuple[Path, Path], tmp_path: Path, start_server
) -> None:
    mounted, source = read_only_model_dir
    with pytest.raises(OSError):
        (mounted / "probe").write_text("")
    cache = tmp_path / "cache"
    server = start_server(
        "--sagemaker",
        "--sagemaker_model_dir",
        str(mounted),
        env={"XDG_CACHE_HOME": str(cache)},
    )
    server.wait_version("mlp_small", 1)
    assert "serves model.int8.onnx" in server.log()
    (variant,) = (cache / "ferry" / "converted").glob("*/model.int8.onnx")
    assert variant.stat().st_size > 0
    # Nothing was written beside the model.
    assert not list(source.rglob(".ferry"))
    x = np.random.default_rng(3).random((2, 784), dtype=np.float32)
    response = server.post(
        "/invocations",
        json={"instances": x.tolist()},
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert np.array(response.json()["predictions"]).shape[0] == 2
