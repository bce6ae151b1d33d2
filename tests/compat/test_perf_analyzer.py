"""NVIDIA's perf_analyzer (pip package `perf-analyzer`) loads ferry over HTTP and gRPC.

perf_analyzer reads the V2 model metadata and configuration, sends binary inference
requests at a fixed concurrency and reads the statistics extension; it exits non-zero
on any failed request. Its PyPI wheels are built for glibc >= 2.38 (manylinux_2_38);
on older systems pip installs a binary-less placeholder and these tests skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.models import mlp_model, write_model
from support.server import FerryProcess

pytestmark = pytest.mark.compat


def _perf_analyzer() -> str | None:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which("perf_analyzer", path=path)


PERF_ANALYZER = _perf_analyzer()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> FerryProcess:
    root = tmp_path_factory.mktemp("models")
    write_model(mlp_model(width=8), root / "mlp", 1)
    log = tmp_path_factory.mktemp("logs") / "ferry.log"
    server = FerryProcess([str(root)], log).wait_ready()
    server.wait_version("mlp", 1)
    yield server
    server.stop()


@pytest.mark.skipif(
    PERF_ANALYZER is None,
    reason="perf_analyzer binary absent (its wheels need glibc >= 2.38; pip installed the "
    "binary-less placeholder)",
)
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_runs_without_errors(server: FerryProcess, protocol: str) -> None:
    url = f"127.0.0.1:{server.port}" if protocol == "http" else server.grpc_target
    assert PERF_ANALYZER is not None
    command = [
        PERF_ANALYZER,
        "-m",
        "mlp",
        "-u",
        url,
        "-i",
        protocol,
        "-b",
        "1",
        "--concurrency-range",
        "2",
        "--measurement-interval",
        "1000",
        "--max-trials",
        "3",
        "--stability-percentage",
        "100",
    ]

    done = subprocess.run(command, capture_output=True, text=True, timeout=120)

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Throughput:" in output
