"""Cluster benchmark: three ferry replicas in network namespaces behind HAProxy.

The cluster is tests/support/cluster.py's (docs/cluster.md): each replica a
`ferry serve s3://models/root` in its own namespace and address, with one core's
worth of model threads (`--intra_op_threads 1`, a 1-CPU pod), the S3 event queue and a
60 s fallback poll; moto (S3, SNS, SQS), HAProxy and wrk in a hub namespace. The model
is mlp_small from `ferry.examples`, TF REST JSON, one row per request.

1. Throughput and p99 through the retrying balancer with 1, 2 and 3 replicas in
   rotation (the others in HAProxy maintenance), wrk with `--connections`.
2. Replica loss: SIGKILL of one replica under load, failed requests through the
   retrying frontend and through the frontend that never retries, and the balancer's
   retries; the replica is started again.
3. Rolling restart (SIGTERM, drain, exit, start, ready, one at a time) under load,
   failed requests through both frontends: once with `--drain_grace_seconds` (2 s) on
   the replicas, once without.
4. Time from an upload's completion until every replica reports the new version
   AVAILABLE (asked directly), over `--versions` uploads (measured first, see main).

Usage::

    .venv/bin/python benchmarks/cluster.py            # 10 s runs
    .venv/bin/python benchmarks/cluster.py --quick    # 3 s runs

Needs root (network namespaces), HAProxy and wrk (`make bench-cluster` installs both).
The report is printed and written to benchmarks/results/cluster.md (git-ignored).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from report import machine_description  # noqa: E402
from support.cluster import (  # noqa: E402
    Cluster,
    WrkResult,
    balancer_log_size,
    cut_off_responses,
    netns_unavailable_reason,
    requests_sent,
    retried,
)

DEFAULT_OUTPUT = HERE / "results" / "cluster.md"
GRACE = ("--drain_grace_seconds", "2")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of process `pid`, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_s() -> float:
    """CPU seconds all cores spent outside idle and iowait since boot (/proc/stat)."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS


@dataclass
class ScalingRun:
    """One throughput run, with the cores each part used during it (CPU seconds per
    second of wall time): the replicas, HAProxy, wrk, and the whole machine (which
    includes anything else running on it)."""

    replicas: int
    result: WrkResult
    replica_cores: float
    balancer_cores: float
    wrk_cores: float
    machine_cores: float
    rows_per_batch: float


def batch_totals(cluster: Cluster) -> tuple[float, float]:
    """(model runs, rows run) over every replica, from ferry's `ferry_batch_size_rows`."""
    runs = rows = 0.0
    for replica in cluster.replicas:
        text = cluster.http.get(f"{replica.url}/monitoring/prometheus/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("ferry_batch_size_rows_count"):
                runs += float(line.rsplit(" ", 1)[1])
            elif line.startswith("ferry_batch_size_rows_sum"):
                rows += float(line.rsplit(" ", 1)[1])
    return runs, rows


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured_run(cluster: Cluster, serving: int, connections: int, seconds: int) -> ScalingRun:
    pids = [r.process.pid for r in cluster.replicas if r.process is not None]
    balancer = cluster.balancer_pid
    before = ([process_cpu_s(p) for p in pids], process_cpu_s(balancer))
    batches = batch_totals(cluster)
    machine, children, started = machine_busy_s(), _children_cpu_s(), time.monotonic()
    result = cluster.wrk(connections, seconds).result()  # wrk is the only child to exit
    wall = time.monotonic() - started
    replica_cpu = sum(process_cpu_s(p) for p in pids) - sum(before[0])
    (runs_after, rows_after), (runs_before, rows_before) = batch_totals(cluster), batches
    runs, rows = runs_after - runs_before, rows_after - rows_before
    return ScalingRun(
        replicas=serving,
        result=result,
        replica_cores=replica_cpu / wall,
        balancer_cores=(process_cpu_s(balancer) - before[1]) / wall,
        wrk_cores=(_children_cpu_s() - children) / wall,
        machine_cores=(machine_busy_s() - machine) / wall,
        rows_per_batch=rows / runs if runs else 0.0,
    )


def scaling(cluster: Cluster, connections: int, seconds: int) -> list[ScalingRun]:
    """Throughput with the first n replicas in rotation, n = 1..all."""
    runs = []
    cluster.wrk(connections, 2).result()  # warm every replica and connection
    for serving in range(1, len(cluster.replicas) + 1):
        for index, replica in enumerate(cluster.replicas):
            cluster.set_in_rotation(replica, index < serving)
        cluster.wait_balanced(serving)
        runs.append(measured_run(cluster, serving, connections, seconds))
    return runs


def replica_loss(cluster: Cluster, connections: int, seconds: int) -> dict[str, object]:
    victim = cluster.replicas[1]
    retries_before, log_start = retried(cluster), balancer_log_size(cluster)
    through_retries = cluster.wrk(connections, seconds)
    through_plain = cluster.wrk(connections, seconds, retrying=False)
    time.sleep(seconds / 3)
    cluster.stop_replica(victim, signal.SIGKILL)
    result = {
        "retrying": through_retries.result(),
        "plain": through_plain.result(),
        "resent": retried(cluster) - retries_before,
        "cut_off": len(cut_off_responses(cluster, log_start)),
    }
    cluster.start_replica(victim)
    cluster.wait_balanced(len(cluster.replicas))
    return result


def rolling_restart(cluster: Cluster, connections: int, restart_args: tuple[str, ...]):
    """Restart every replica in turn under load; the restarted ones get `restart_args`.
    Returns both frontends' results and each replica's SIGTERM-to-exit seconds."""
    through_retries = cluster.wrk(connections, 120)
    through_plain = cluster.wrk(connections, 120, retrying=False)
    time.sleep(1.0)
    drains = []
    cluster.ferry_args = restart_args
    for replica in cluster.replicas:
        stopped = time.monotonic()
        cluster.stop_replica(replica, signal.SIGTERM)
        drains.append(time.monotonic() - stopped)
        served = requests_sent(cluster)[replica.name]
        cluster.start_replica(replica)
        cluster.wait_balanced(len(cluster.replicas))
        deadline = time.monotonic() + 10
        while requests_sent(cluster)[replica.name] <= served and time.monotonic() < deadline:
            time.sleep(0.05)
    time.sleep(1.0)
    return through_retries.stop(), through_plain.stop(), drains


def propagation(cluster: Cluster, versions: int) -> list[float]:
    """Seconds from each upload until the last replica has it AVAILABLE."""
    times = []
    for version in range(2, 2 + versions):
        uploaded = time.monotonic()
        cluster.upload_version(version)
        pending = list(cluster.replicas)
        while pending and time.monotonic() - uploaded < 60:
            pending = [r for r in pending if not _available(cluster, r, version)]
            time.sleep(0.02)
        times.append(time.monotonic() - uploaded if not pending else float("inf"))
    return times


def _available(cluster: Cluster, replica, version: int) -> bool:
    try:
        return cluster.version_available(replica, version)
    except Exception:  # a replica busy loading answers late; ask again
        return False


def render(args, machine, scale, loss, rolls, moves, stamp: str) -> str:
    out = [f"# {stamp}", "", "## Machine", ""]
    out += [f"- {k}: {v}" for k, v in machine]
    out += [
        "",
        f"## Throughput through HAProxy (wrk -c{args.connections}, {args.seconds} s)",
        "",
        "| replicas | req/s | p50 ms | p99 ms | failed | rows per batch | cores: replicas "
        "| HAProxy | wrk | machine |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in scale:
        r = run.result
        out.append(
            f"| {run.replicas} | {r.requests_per_s:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} "
            f"| {r.errors} | {run.rows_per_batch:.1f} | {run.replica_cores:.2f} "
            f"| {run.balancer_cores:.2f} "
            f"| {run.wrk_cores:.2f} | {run.machine_cores:.2f} |"
        )
    base = scale[0].result.requests_per_s
    ratios = ", ".join(f"{run.replicas}: {run.result.requests_per_s / base:.2f}x" for run in scale)
    out += [
        "",
        f"Throughput relative to 1 replica: {ratios}. Cores: CPU seconds per second during "
        "the run; `machine` is every core's busy time, this benchmark's and anything else's. "
        "Rows per batch: the mean over every replica's model runs (ferry's dynamic batching).",
        "",
    ]
    out += [
        "## Failed requests under load",
        "",
        "| event | through retrying HAProxy | through HAProxy without retries |",
        "|---|---|---|",
        f"| SIGKILL of one replica ({loss['resent']} requests resent by HAProxy, "
        f"{loss['cut_off']} responses cut off mid-way) "
        f"| {loss['retrying'].errors} of {loss['retrying'].requests} "
        f"| {loss['plain'].errors} of {loss['plain'].requests} |",
    ]
    for label, (retrying, plain, drains) in rolls.items():
        drain = ", ".join(f"{d:.1f}" for d in drains)
        out.append(
            f"| rolling restart, {label} (SIGTERM to exit: {drain} s) "
            f"| {retrying.errors} of {retrying.requests} | {plain.errors} of {plain.requests} |"
        )
    finite = [m for m in moves if m != float("inf")]
    out += [
        "",
        "## A new version on every replica",
        "",
        f"Upload complete to AVAILABLE on all 3 replicas (S3 -> SNS -> SQS per replica), "
        f"{len(moves)} uploads: median {statistics.median(finite):.2f} s, "
        f"max {max(moves):.2f} s (fallback poll: 60 s).",
        "",
    ]
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s runs, 2 uploads")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--versions", type=int, default=3)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.versions = 3, 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reason = netns_unavailable_reason()
    if reason is not None:
        print(f"cannot build the cluster: {reason}", file=sys.stderr)
        return 2
    machine = machine_description()
    stamp = f"ferry cluster benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    with (
        tempfile.TemporaryDirectory(prefix="ferry-cluster-") as folder,
        Cluster(Path(folder), ferry_args=GRACE) as cluster,
    ):
        # Uploads first: a replica stopped less than SQS's 20 s long poll ago may leave a
        # poll pending that takes the next event with it for the queue's 30 s visibility
        # timeout (docs/cluster.md), which is a property of restarts, not of propagation.
        moves = propagation(cluster, args.versions)
        scale = scaling(cluster, args.connections, args.seconds)
        for replica in cluster.replicas:
            cluster.set_in_rotation(replica, True)
        cluster.wait_balanced(len(cluster.replicas))
        loss = replica_loss(cluster, args.connections // 2, max(args.seconds, 6))
        rolls = {
            "with --drain_grace_seconds 2": rolling_restart(cluster, args.connections // 2, ()),
            "without a grace": rolling_restart(cluster, args.connections // 2, GRACE),
        }
    text = render(args, machine, scale, loss, rolls, moves, stamp)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
