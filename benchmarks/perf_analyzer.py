"""NVIDIA's perf_analyzer against ferry: the load generator Triton users measure with.

Triton users compare servers with perf_analyzer, so its numbers are the ones they will
quote. This runs it against one `ferry serve` of the example model mlp_small (built by
ferry.examples) over V2 HTTP, V2 gRPC and a gRPC `ModelStreamInfer` stream, at
concurrency 1 and 8, and reports infer/s, p50 and p99 as perf_analyzer measured them,
plus ferry's own count of failed requests in the window (from its statistics extension).

perf_analyzer needs glibc >= 2.38; on an older host it runs inside the cached Debian root
of tests/support/perf_analyzer_root.py (built on first use, about a minute). Where it
cannot run here, the section says why instead.

    .venv/bin/python benchmarks/perf_analyzer.py            # 3 s windows
    .venv/bin/python benchmarks/perf_analyzer.py --quick    # 1 s windows

`benchmarks/run.py` (`make bench`) appends this section to its report; alone, it is
printed and written to benchmarks/results/perf_analyzer.md (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from loadgen import predict_body  # noqa: E402
from report import fmt, load_average  # noqa: E402
from servers import HOST, Server, ServerError, free_port, get, running_server  # noqa: E402
from support.perf_analyzer_root import (  # noqa: E402
    PerfAnalyzer,
    PerfAnalyzerUnavailable,
    find_perf_analyzer,
)

from ferry.examples import build_examples  # noqa: E402

MODEL = "mlp_small"
INPUT_WIDTH = 784
CONCURRENCY = (1, 8)
# (label, perf_analyzer interface, extra flags)
INTERFACES = (
    ("V2 HTTP", "http", ()),
    ("V2 gRPC", "grpc", ()),
    ("V2 gRPC stream", "grpc", ("--streaming",)),
)
# perf_analyzer repeats windows until three in a row agree within this percentage; a
# shared 2-core machine rarely gets within its default 10 %.
STABILITY_PERCENTAGE = 50
# A level that cannot meet it (another process took the cores) is measured once more
# within this bound, and its row says so.
LOOSE_STABILITY_PERCENTAGE = 200
MAX_TRIALS = 10
RUN_TIMEOUT_S = 300.0
DEFAULT_OUTPUT = HERE / "results" / "perf_analyzer.md"


@dataclass
class PerfAnalyzerRow:
    """One interface at one concurrency: perf_analyzer's numbers and ferry's failures."""

    interface: str
    concurrency: int
    infer_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    failed: int | None = None
    failure: str = ""
    stability: int = STABILITY_PERCENTAGE  # the bound its windows met


def _failed_requests(server: Server) -> int | None:
    """ferry's failed-request count for the model (statistics extension), None unread."""
    try:
        status, body = get(server.port, f"/v2/models/{MODEL}/stats")
    except OSError:
        return None
    if status != 200:
        return None
    stats = json.loads(body)["model_stats"]
    return sum(s["inference_stats"]["fail"]["count"] for s in stats)


def measure_level(
    perf_analyzer: PerfAnalyzer,
    server: Server,
    label: str,
    interface: str,
    extra: Sequence[str],
    concurrency: int,
    window_ms: int,
) -> PerfAnalyzerRow:
    """One perf_analyzer run over `interface` at one concurrency. One run per level, not
    one sweep: a sweep stops at the first level that does not stabilise. A level that
    does not stabilise within STABILITY_PERCENTAGE is run once more within
    LOOSE_STABILITY_PERCENTAGE and its row marked, rather than left empty."""
    url = f"{HOST}:{server.port}" if interface == "http" else f"{HOST}:{server.grpc_port}"
    row = PerfAnalyzerRow(label, concurrency)
    before = _failed_requests(server)
    for stability in (STABILITY_PERCENTAGE, LOOSE_STABILITY_PERCENTAGE):
        args = [
            "-m", MODEL, "-u", url, "-i", interface, *extra,
            "--concurrency-range", str(concurrency),
            "--measurement-interval", str(window_ms),
            "--stability-percentage", str(stability),
            "--max-trials", str(MAX_TRIALS),
        ]  # fmt: skip
        run = perf_analyzer.run(args, timeout=RUN_TIMEOUT_S)
        row.stability = stability
        if run.returncode == 0 or "Failed to obtain stable measurement" not in run.output:
            break
    after = _failed_requests(server)
    if before is not None and after is not None:
        row.failed = after - before
    if run.returncode != 0 or len(run.rows) != 1:
        lines = [x.strip() for x in run.output.splitlines() if x.strip()]
        why = [x for x in lines if "error" in x.lower() or x.startswith("Failed")]
        last = (why or lines or ["no output"])[0]
        row.failure = f"exit {run.returncode}: {last}"[:300]
        return row
    found = run.rows[0]
    row.infer_per_s = float(found["Inferences/Second"])
    row.p50_ms = float(found["p50 latency"]) / 1000
    row.p99_ms = float(found["p99 latency"]) / 1000
    return row


def measure(quick: bool = False) -> tuple[list[PerfAnalyzerRow], list[str]]:
    """Every interface at every concurrency, and notes; raises PerfAnalyzerUnavailable
    when perf_analyzer cannot run here."""
    perf_analyzer = find_perf_analyzer()
    window_ms = 1000 if quick else 3000
    notes = [
        f"{perf_analyzer.describe()}, {window_ms} ms windows, stability "
        f"{STABILITY_PERCENTAGE} % (unsteady: windows agreed only within "
        f"{LOOSE_STABILITY_PERCENTAGE} %), at most {MAX_TRIALS} windows per level"
    ]
    rows: list[PerfAnalyzerRow] = []
    with tempfile.TemporaryDirectory(prefix="ferry-perf-analyzer-") as tmp:
        folder = Path(tmp)
        build_examples(folder / "models", [MODEL])
        port, grpc_port = free_port(), free_port()
        argv = [
            str(Path(sys.executable).parent / "ferry"), "serve", str(folder / "models"),
            "--host", HOST, "--rest_api_port", str(port), "--port", str(grpc_port),
        ]  # fmt: skip
        probes = {MODEL: predict_body(INPUT_WIDTH)}
        with running_server("ferry", argv, port, folder / "ferry.log", probes, None, grpc_port) as (
            server
        ):
            for label, interface, extra in INTERFACES:
                for level in CONCURRENCY:
                    print(f"perf_analyzer {MODEL} {label} c{level} ...", file=sys.stderr)
                    rows.append(
                        measure_level(
                            perf_analyzer, server, label, interface, extra, level, window_ms
                        )
                    )
    notes.append(f"load average at end (1/5/15 min): {load_average()}")
    return rows, notes


def section(quick: bool = False) -> str:
    """The report's perf_analyzer section as markdown: the table, or why there is none."""
    out = ["## perf_analyzer (Triton's load generator, V2 protocol)", ""]
    try:
        rows, notes = measure(quick)
    except (PerfAnalyzerUnavailable, ServerError) as error:
        out.append(f"Not measured: {str(error)[:1500]}")
        return "\n".join(out) + "\n"
    out += [
        f"{MODEL}, one row per request, perf_analyzer's random input; infer/s and latency as "
        "perf_analyzer reports them; failed: ferry's failed-request count over the run.",
        "",
        "| interface | concurrency | infer/s | p50 ms | p99 ms | failed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        head = f"| {r.interface} | {r.concurrency} "
        failed = "-" if r.failed is None else str(r.failed)
        if r.failure:
            out.append(f"{head}| FAILED: {r.failure} | | | {failed} |")
        else:
            loose = "" if r.stability == STABILITY_PERCENTAGE else " (unsteady)"
            out.append(
                f"{head}| {fmt(r.infer_per_s)}{loose} | {fmt(r.p50_ms, 2)} | {fmt(r.p99_ms, 2)} "
                f"| {failed} |"
            )
    out += [""] + [f"- {note}" for note in notes]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s windows instead of 3 s")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = f"# ferry perf_analyzer benchmark, {stamp}\n\n" + section(args.quick)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"report written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
