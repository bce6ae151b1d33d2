"""NVIDIA's perf_analyzer (pip package `perf-analyzer`) loads ferry without a failed request.

perf_analyzer reads the V2 model metadata and configuration, sends inference requests at a
fixed concurrency (HTTP, gRPC, a gRPC `ModelStreamInfer` stream, or with its tensors in
system shared memory), and reads the statistics extension. A failed request stops its
worker thread ("Thread [n] had error") and the run exits non-zero; the test also reads
ferry's own statistics, so a failure perf_analyzer did not notice is caught too.

Its wheels need glibc >= 2.38: where the host is older, tests/support/perf_analyzer_root.py
runs it inside a cached Debian trixie root (built on first use, 1-3 minutes; see that
module). When the root cannot be built (no network, not root) these tests fail saying
why; set FERRY_SKIP_PERF_ANALYZER=1 to skip them instead.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.models import mlp_model, write_model
from support.perf_analyzer_root import (
    PerfAnalyzer,
    PerfAnalyzerUnavailable,
    find_perf_analyzer,
    remove_root,
)
from support.server import FerryProcess

# The first test may build the root (DEFAULT_BUILD_TIMEOUT_S, 540 s at most) in its
# fixture; every perf_analyzer run is bounded by `PerfAnalyzer.run`'s own timeout.
pytestmark = [pytest.mark.compat, pytest.mark.timeout(660)]

SKIP_ENV = "FERRY_SKIP_PERF_ANALYZER"
MODEL = "mlp"
# Short windows keep each case to a few seconds. perf_analyzer calls three windows stable
# when the largest throughput and latency are within (1 + percentage/100) of the smallest;
# on a busy 2-core CI machine 500 ms windows can differ 3x, so the bound is loose (the
# stability of ferry's throughput is not what these tests check).
MEASUREMENT = [
    "--concurrency-range",
    "2",
    "--measurement-interval",
    "500",
    "--max-trials",
    "5",
    "--stability-percentage",
    "1000",
]

# Each case: the interface and the extra perf_analyzer flags.
CASES = {
    "http": ("http", []),
    "grpc": ("grpc", []),
    "grpc_streaming": ("grpc", ["--streaming"]),
    "http_shared_memory": ("http", ["--shared-memory", "system"]),
    "grpc_shared_memory": ("grpc", ["--shared-memory", "system"]),
    "http_random_input": ("http", ["--input-data", "random"]),
    "grpc_batch_4": ("grpc", ["-b", "4"]),
    "http_batch_4": ("http", ["-b", "4"]),
}


@pytest.fixture(scope="module")
def perf_analyzer() -> PerfAnalyzer:
    if os.environ.get(SKIP_ENV):
        pytest.skip(f"{SKIP_ENV} is set")
    try:
        return find_perf_analyzer()
    except PerfAnalyzerUnavailable as error:
        pytest.fail(f"perf_analyzer cannot run here: {error}\n(set {SKIP_ENV}=1 to skip)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> FerryProcess:
    root = tmp_path_factory.mktemp("models")
    write_model(mlp_model(width=8), root / MODEL, 1)
    log = tmp_path_factory.mktemp("logs") / "ferry.log"
    # perf_analyzer runs on this machine: loopback clients may use shared memory.
    server = FerryProcess([str(root), "--allow_client_shm=loopback"], log).wait_ready()
    server.wait_version(MODEL, 1)
    yield server
    server.stop()


def _counts(server: FerryProcess) -> dict[str, int]:
    """ferry's statistics for the model: inferences (batch rows), successful and failed
    requests."""
    response = server.get(f"/v2/models/{MODEL}/stats")
    assert response.status_code == 200, response.text
    stats = response.json()["model_stats"][0]
    return {
        "inferences": stats["inference_count"],
        "success": stats["inference_stats"]["success"]["count"],
        "fail": stats["inference_stats"]["fail"]["count"],
    }


@pytest.mark.parametrize("case", list(CASES))
def test_perf_analyzer_runs_without_failed_requests(
    perf_analyzer: PerfAnalyzer, server: FerryProcess, case: str
) -> None:
    interface, extra = CASES[case]
    url = f"127.0.0.1:{server.port}" if interface == "http" else server.grpc_target
    batch = int(extra[extra.index("-b") + 1]) if "-b" in extra else 1
    before = _counts(server)

    run = perf_analyzer.run(["-m", MODEL, "-u", url, "-i", interface, *extra, *MEASUREMENT])

    after = _counts(server)
    context = f"{perf_analyzer.describe()} exit {run.returncode}:\n{run.output[-4000:]}"
    assert run.returncode == 0, context
    assert "had error" not in run.output, context
    assert len(run.rows) == 1, context
    assert float(run.rows[0]["Inferences/Second"]) > 0, context
    assert float(run.rows[0]["p99 latency"]) > 0, context
    requests = after["success"] - before["success"]
    assert after["fail"] == before["fail"], context
    assert requests > 0, context
    # Every request carried `batch` rows: `-b` reached the model as the batch dimension.
    assert after["inferences"] - before["inferences"] == batch * requests
    if "--shared-memory" in extra:
        # perf_analyzer unregisters its regions as it exits; ferry then holds none.
        status = server.get("/v2/systemsharedmemory/status")
        assert status.status_code == 200, status.text
        assert status.json() == []


def test_the_root_shares_the_hosts_shared_memory(perf_analyzer: PerfAnalyzer) -> None:
    """Inside the root, /dev/shm is the host's only while a run lasts, and never after."""
    if perf_analyzer.chroot is None:
        pytest.skip("perf_analyzer runs on the host here: no root to check")
    probe = Path("/dev/shm") / f"ferry-perf-analyzer-probe-{os.getpid()}"
    probe.write_bytes(b"x")
    try:
        seen_inside = perf_analyzer.chroot / "dev" / "shm" / probe.name
        assert not seen_inside.exists()
        with perf_analyzer.shared_memory():
            assert seen_inside.read_bytes() == b"x"
        assert not seen_inside.exists()
    finally:
        probe.unlink()


def test_removing_a_stale_root_never_touches_what_is_mounted_in_it(tmp_path: Path) -> None:
    """A run killed mid-way leaves /dev/shm bound inside the root; rebuilding the root
    unmounts it first and deletes without crossing file systems, so the host's files stay."""
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    host = tmp_path / "host"
    host.mkdir()
    (host / "keep").write_text("host file")
    stale = tmp_path / "root"
    (stale / "dev" / "shm").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(host), str(stale / "dev" / "shm")], check=True)
    try:
        assert (stale / "dev" / "shm" / "keep").exists()

        remove_root(stale)

        assert not stale.exists()
        assert (host / "keep").read_text() == "host file"
    finally:
        if (stale / "dev" / "shm").is_mount():
            subprocess.run(["umount", "--lazy", str(stale / "dev" / "shm")], check=False)
