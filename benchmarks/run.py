"""ferry's benchmark: the in-process ceiling, a hand-written FastAPI server and ferry
over each of its wire protocols, measured side by side in one run on this machine.

Why one run: ferry's targets are ratios (ferry against the model's own ceiling, against
the server people usually write), and a ratio only means something when both sides were
measured on the same machine, under the same background load, minutes apart. So this
script builds the example models, measures the onnxruntime ceiling in-process, then
starts both servers on 127.0.0.1 and drives each with wrk (HTTP/1.1) or h2load (gRPC),
interleaving the servers and protocols at each (model, clients) point so slow drift on a
shared machine hits all of them alike.

Protocols (`--protocols`): `rest` is TF Serving REST JSON (ferry and the FastAPI
baseline), `grpc` is TF Serving gRPC Predict with tensor_content, `v2bin` is KServe V2
REST with binary input and output (both ferry only). Every row starts with one request
from a real client whose answer is checked against onnxruntime (benchmarks/protocols.py),
and counts ferry's own non-OK request outcomes as errors, because h2load cannot see a
failed gRPC call.

Usage::

    .venv/bin/python benchmarks/run.py                     # both models, 10 s per point
    .venv/bin/python benchmarks/run.py --quick --models mlp_small
    .venv/bin/python benchmarks/run.py --protocols grpc --grpc-multiplex
    .venv/bin/python benchmarks/run.py --ferry-arg=--allow_spinning=true \\
        --ferry-arg=--batching_parameters_file=/path/batching.txt

The report is printed and written to benchmarks/results/latest.md (git-ignored), with
perf_analyzer's section (benchmarks/perf_analyzer.py) at its end unless --no-perf-analyzer.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ceiling import measure_model  # noqa: E402
from loadgen import LoadError, LoadResult, predict_body, run_h2load, run_wrk, write_script  # noqa: E402
from perf_analyzer import section as perf_analyzer_section  # noqa: E402
from protocols import (  # noqa: E402
    CHECKS,
    PROTOCOLS,
    ModelCase,
    Payload,
    Protocol,
    model_case,
    target_url,
    write_payload,
)
from report import HttpResult, Report, render, targets  # noqa: E402
from servers import (  # noqa: E402
    HOST,
    FerrySnapshot,
    Server,
    ServerError,
    cpu_sample,
    ferry_snapshot,
    free_port,
    running_server,
)

from ferry.examples import EXAMPLES, build_examples  # noqa: E402
from ferry.runtimes.base import RuntimeOptions  # noqa: E402

# Width of the single input row each example model takes.
INPUT_WIDTH = {"mlp_small": 784, "mlp_large": 1024}
SERVERS = ("ferry", "fastapi")
# The protocols each server speaks: the baseline implements TF Serving REST JSON only.
SERVER_PROTOCOLS = {"ferry": tuple(PROTOCOLS), "fastapi": ("rest",)}
CEILING_BATCHES = (1, 32, 64)
DEFAULT_OUTPUT = HERE / "results" / "latest.md"
# A p99 this many times the p50 is called out in the notes as a latency outlier.
OUTLIER_FACTOR = 10.0
# Average cores used by others during a measurement above which the numbers are suspect.
NOISE_CORES = 0.25


def _csv(
    kind: Callable[[str], object], choices: Sequence[object] | None = None
) -> Callable[[str], list]:
    """argparse type for comma-separated lists, optionally restricted to `choices`."""

    def parse(text: str) -> list:
        items = [kind(x.strip()) for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        bad = [x for x in items if choices is not None and x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {list(choices or [])}")
        return items

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark ferry against a FastAPI server and the in-process ceiling.",
        epilog="Pass ferry flags as --ferry-arg=--flag=value (the '=' keeps argparse "
        "from reading them as this script's own flags).",
    )
    parser.add_argument(
        "--models", type=_csv(str, list(INPUT_WIDTH)), default=list(INPUT_WIDTH),
        help="comma-separated example models (default: mlp_small,mlp_large)",
    )  # fmt: skip
    parser.add_argument(
        "--servers", type=_csv(str, SERVERS), default=list(SERVERS),
        help="comma-separated servers (default: ferry,fastapi)",
    )  # fmt: skip
    parser.add_argument(
        "--protocols", type=_csv(str, list(PROTOCOLS)), default=list(PROTOCOLS),
        help="comma-separated protocols (default: rest,grpc,v2bin; FastAPI speaks rest only)",
    )  # fmt: skip
    parser.add_argument(
        "--connections", type=_csv(int), default=[1, 64],
        help="comma-separated concurrent client counts (default: 1,64)",
    )  # fmt: skip
    parser.add_argument(
        "--grpc-multiplex", action="store_true",
        help="gRPC: N clients as N streams on one HTTP/2 connection "
        "(default: N connections with one stream each, like wrk's N connections)",
    )  # fmt: skip
    parser.add_argument(
        "--duration", type=float, default=None,
        help="seconds per measured load run (default 10; 3 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=float, default=None,
        help="seconds of warm-up load before each measured run (default 2; 1 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--ceiling-seconds", type=float, default=None,
        help="seconds per in-process batch size (default 3; 1 with --quick; 0 skips)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="short runs, for trying things")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed or a run failed"
    )
    parser.add_argument(
        "--ferry-arg", action="append", default=[], metavar="ARG",
        help="extra argument for `ferry serve` (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--perf-analyzer", action=argparse.BooleanOptionalAction, default=True,
        help="append perf_analyzer on mlp_small (V2 HTTP, gRPC, stream; c1 and c8) to the "
        "report (benchmarks/perf_analyzer.py; default: on)",
    )  # fmt: skip
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"report file (default {DEFAULT_OUTPUT})",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration if args.duration is not None else (3.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    if args.ceiling_seconds is None:
        args.ceiling_seconds = 1.0 if quick else 3.0
    if args.duration < 1:
        parser.error("--duration must be at least 1 second (wrk's and h2load's resolution)")
    if any(c < 1 for c in args.connections):
        parser.error("--connections must be positive")
    return args


def _bool(text: str) -> bool:
    """click.BOOL's spellings, as ferry's CLI accepts them."""
    lowered = text.strip().lower()
    if lowered in {"1", "true", "t", "yes", "y", "on"}:
        return True
    if lowered in {"0", "false", "f", "no", "n", "off"}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def runtime_options_from_ferry_args(ferry_args: Sequence[str]) -> RuntimeOptions:
    """The RuntimeOptions ferry will use given `ferry_args`, so the in-process ceiling
    runs onnxruntime with the same thread and spinning settings as ferry does. The
    defaults are ferry's own (RuntimeOptions(): all cores, spinning on)."""
    defaults = RuntimeOptions()
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--intra_op_threads", "--tensorflow_intra_op_parallelism", type=int,
        default=defaults.intra_op_threads,
    )  # fmt: skip
    parser.add_argument(
        "--inter_op_threads", "--tensorflow_inter_op_parallelism", type=int,
        default=defaults.inter_op_threads,
    )  # fmt: skip
    parser.add_argument(
        "--allow_spinning", nargs="?", const="true", default=str(defaults.allow_spinning)
    )
    known, _ = parser.parse_known_args(list(ferry_args))
    return RuntimeOptions(
        known.intra_op_threads, known.inter_op_threads, _bool(known.allow_spinning)
    )


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into SystemExit so every `finally` stops the servers we started."""
    raise SystemExit(128 + signum)


def server_argv(
    name: str, root: Path, port: int, grpc_port: int, ferry_args: Sequence[str]
) -> list[str]:
    """The command line that starts server `name` on 127.0.0.1:`port` (REST) and, for
    ferry, `grpc_port` (always set: ferry's default 8500 may be taken on a shared host)."""
    bindir = Path(sys.executable).parent
    if name == "ferry":
        return [
            str(bindir / "ferry"), "serve", str(root),
            "--host", HOST, "--rest_api_port", str(port), "--port", str(grpc_port),
            *ferry_args,
        ]  # fmt: skip
    return [
        sys.executable, str(HERE / "baseline_fastapi.py"), str(root),
        "--host", HOST, "--port", str(port),
    ]  # fmt: skip


def load_driver(
    server: Server,
    protocol: Protocol,
    case: ModelCase,
    connections: int,
    payload: Payload,
    script: Path | None,
    args: argparse.Namespace,
) -> Callable[[float], LoadResult]:
    """A function that loads `server` for some seconds with `connections` concurrent
    clients of `protocol` and returns the result: wrk (running `script`) for HTTP/1.1,
    h2load for gRPC."""
    url = target_url(protocol, case, server.port, server.grpc_port)
    if protocol.tool == "h2load":
        conns, streams = (1, connections) if args.grpc_multiplex else (connections, 1)
        log_file = payload.body_file.with_suffix(".h2load.log")

        def h2load(seconds: float) -> LoadResult:
            return run_h2load(
                url, payload.body_file, payload.headers, conns, streams, seconds, log_file
            )

        return h2load

    if script is None:
        raise ValueError(f"protocol {protocol.name} is driven by wrk and needs its script")

    def wrk(seconds: float) -> LoadResult:
        return run_wrk(url, script, connections, seconds)

    return wrk


def measure_point(
    server: Server,
    protocol: Protocol,
    case: ModelCase,
    connections: int,
    payload: Payload,
    script: Path | None,
    args: argparse.Namespace,
) -> HttpResult:
    """Check one real-client request, warm up, then one measured run of one
    server/protocol/model/clients point, with the CPU the server and everyone else used
    during the measured window and, for ferry, its batches and request outcomes."""
    result = HttpResult(case.model, server.name, connections, protocol.name)
    try:
        CHECKS[protocol.name](case, server.port, server.grpc_port)
    except Exception as exc:  # any failure means a broken setup; the row says which
        result.failure = f"check request failed: {type(exc).__name__}: {exc}"[:300]
        return result
    drive = load_driver(server, protocol, case, connections, payload, script, args)

    def snapshot() -> FerrySnapshot | None:
        if server.name != "ferry":
            return None
        return ferry_snapshot(server, case.model, protocol.api)

    try:
        if args.warmup > 0:
            drive(args.warmup)
        before = snapshot()
        cpu_before, wall_before = cpu_sample(server), time.monotonic()
        load = drive(args.duration)
        cpu_after, wall_after = cpu_sample(server), time.monotonic()
        after = snapshot()
    except LoadError as exc:
        result.failure = str(exc).splitlines()[0]
        return result
    wall = wall_after - wall_before
    server_cpu = cpu_after.server - cpu_before.server
    busy = cpu_after.machine_busy - cpu_before.machine_busy
    result.load = load
    result.server_cores = server_cpu / wall
    result.other_cores = max(0.0, busy - server_cpu - load.client_cpu_s) / wall
    if before is not None and after is not None:
        runs = after.runs - before.runs
        if runs > 0:
            result.mean_batch = (after.rows - before.rows) / runs
        result.server_errors, result.cancelled = _failed_outcomes(before, after, connections)
        ok = round(after.outcomes.get("OK", 0.0) - before.outcomes.get("OK", 0.0))
        result.unconfirmed = max(0, load.requests - ok)
    return result


def _failed_outcomes(
    before: FerrySnapshot, after: FerrySnapshot, clients: int
) -> tuple[dict[str, int], int]:
    """ferry's non-OK request outcomes between two snapshots, and how many of them were
    cancellations at the end of the run.

    A load generator stops with up to one request per client in flight, and ferry counts
    those CANCELLED; that many is the end of the run, not an error. More than that is
    reported with the errors."""
    outcomes = {
        outcome: round(count - before.outcomes.get(outcome, 0.0))
        for outcome, count in after.outcomes.items()
        if outcome != "OK"
    }
    failed = {outcome: n for outcome, n in outcomes.items() if n > 0}
    cancelled = failed.get("CANCELLED", 0)
    if cancelled <= clients:
        failed.pop("CANCELLED", None)
        return failed, cancelled
    return failed, 0


def _log_findings(server: Server) -> list[str]:
    """Warnings, errors and tracebacks a server logged, deduplicated, at most five."""
    seen: list[str] = []
    for line in server.log_tail(200_000).splitlines():
        if any(mark in line for mark in ("WARNING", "ERROR", "CRITICAL", "Traceback")):
            text = line.strip()[:200]
            if text not in seen:
                seen.append(text)
    return seen[:5]


def notes_for(results: Sequence[HttpResult]) -> list[str]:
    """Observations worth a reader's attention: errors, tail outliers, noisy windows."""
    notes = []
    for r in results:
        where = f"{r.model} / {r.server} / {r.protocol} / c{r.connections}"
        if r.failure:
            notes.append(f"{where}: run failed: {r.failure}")
            continue
        assert r.load is not None
        w = r.load
        if r.errors:
            outcomes = ", ".join(f"{n} {k}" for k, n in sorted(r.server_errors.items()))
            notes.append(
                f"{where}: {r.errors} errors ({w.socket_errors} socket, "
                f"{w.status_errors} HTTP status >= 400, ferry outcomes: {outcomes or 'none'}, "
                f"{r.unconfirmed} responses beyond ferry's OK count)"
            )
        if r.cancelled:
            notes.append(
                f"{where}: {r.cancelled} request(s) CANCELLED in ferry's metrics, at most one "
                "per client: in flight when the load generator stopped; not counted as errors"
            )
        if w.p50_ms > 0 and w.p99_ms > OUTLIER_FACTOR * w.p50_ms:
            notes.append(
                f"{where}: tail outlier, p99 {w.p99_ms:.2f} ms is "
                f"{w.p99_ms / w.p50_ms:.0f}x p50 {w.p50_ms:.2f} ms (max {w.max_ms:.1f} ms)"
            )
        if r.other_cores is not None and r.other_cores > NOISE_CORES:
            notes.append(
                f"{where}: other processes used {r.other_cores:.2f} cores on average "
                "during the measurement; treat these numbers as disturbed"
            )
    return notes


def run(args: argparse.Namespace) -> Report:
    """Build models, measure the ceiling, then every server and protocol at every point."""
    runtime_options = runtime_options_from_ferry_args(args.ferry_arg)
    # (server, protocol) pairs, protocol-major so the two REST JSON servers run back to back.
    pairs = [
        (name, PROTOCOLS[p])
        for p in args.protocols
        for name in args.servers
        if p in SERVER_PROTOCOLS[name]
    ]
    names = [name for name in args.servers if any(n == name for n, _ in pairs)]
    layout = "1 connection x N streams" if args.grpc_multiplex else "N connections x 1 stream"
    timing = f"{args.duration:g} s measured after {args.warmup:g} s warm-up per point"
    settings = [
        ("models", ", ".join(args.models)),
        ("servers", ", ".join(names)),
        ("protocols", ", ".join(args.protocols)),
        ("clients", ", ".join(map(str, args.connections))),
        ("wrk (TF REST JSON, V2 REST binary)", f"-t1, {timing}"),
        ("h2load (TF gRPC)", f"-t1, h2c, {layout}, {timing}"),
        ("request", "one instance per request, float32 uniform [0,1), numpy seed 0; "
                    "TF REST: JSON instances; TF gRPC: PredictRequest with tensor_content; "
                    "V2 REST: binary_data_size input, binary_data_output: true"),
        ("check", "one real-client request per row before its warm-up (http.client, grpcio, "
                  "requests), answer compared with onnxruntime in-process"),
        ("ferry args", " ".join(args.ferry_arg) or "(defaults)"),
        ("ceiling", f"{args.ceiling_seconds:g} s per batch size; session options as ferry: "
                    f"{runtime_options}"),
        ("baseline", "FastAPI + pydantic, sync def endpoint, onnxruntime default session, "
                     "uvicorn (auto loop/http), no access log"),
    ]  # fmt: skip
    report = Report(settings, [], [])
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        folder = Path(tmp)
        root = folder / "models"
        build_examples(root, list(args.models))
        model_files = {m: root / m / "1" / "model.onnx" for m in args.models}

        if args.ceiling_seconds > 0:
            for model in args.models:
                print(f"ceiling {model} ...", file=sys.stderr, flush=True)
                report.ceilings += measure_model(
                    model, model_files[model], INPUT_WIDTH[model],
                    list(CEILING_BATCHES), args.ceiling_seconds,
                    min(1.0, args.ceiling_seconds), runtime_options,
                )  # fmt: skip

        cases = {
            m: model_case(m, model_files[m], INPUT_WIDTH[m], runtime_options) for m in args.models
        }
        payloads: dict[tuple[str, str], Payload] = {}
        scripts: dict[tuple[str, str], Path] = {}
        for p in args.protocols:
            for m in args.models:
                payload = write_payload(PROTOCOLS[p], cases[m], folder)
                payloads[m, p] = payload
                if PROTOCOLS[p].tool == "wrk":
                    script = folder / f"{m}.{p}.lua"
                    scripts[m, p] = write_script(script, payload.body_file, payload.headers)
        probes = {m: predict_body(INPUT_WIDTH[m]) for m in args.models}
        with contextlib.ExitStack() as stack:
            servers: dict[str, Server] = {}
            for name in names:
                port, grpc_port = free_port(), free_port()
                print(f"starting {name} on port {port} ...", file=sys.stderr, flush=True)
                try:
                    servers[name] = stack.enter_context(
                        running_server(
                            name,
                            server_argv(name, root, port, grpc_port, args.ferry_arg),
                            port,
                            folder / f"{name}.log",
                            probes,
                            grpc_port=grpc_port if name == "ferry" else None,
                        )
                    )
                except ServerError as exc:
                    report.notes.append(f"{name} did not start: {str(exc)[:1500]}")
                    report.http += [
                        HttpResult(m, name, c, protocol.name, failure="server did not start")
                        for server_name, protocol in pairs
                        if server_name == name
                        for m in args.models
                        for c in args.connections
                    ]
            for model in args.models:
                for connections in args.connections:
                    for name, protocol in pairs:
                        if name not in servers:
                            continue
                        print(
                            f"{protocol.tool} {model} {name} {protocol.name} c{connections} ...",
                            file=sys.stderr,
                            flush=True,
                        )
                        report.http.append(
                            measure_point(
                                servers[name],
                                protocol,
                                cases[model],
                                connections,
                                payloads[model, protocol.name],
                                scripts.get((model, protocol.name)),
                                args,
                            )
                        )
            for server in servers.values():
                report.notes += [f"{server.name} log: {x}" for x in _log_findings(server)]
                if server.process.poll() is not None:
                    report.notes.append(
                        f"{server.name} exited during the run with {server.process.returncode}"
                    )
        # ExitStack has stopped the servers. ferry drains and exits 0 on SIGTERM; uvicorn.run
        # re-raises the signal after its shutdown, so -SIGTERM is the baseline's normal end.
        for server in servers.values():
            code = server.process.returncode
            normal = (0, None) if server.name == "ferry" else (0, None, -signal.SIGTERM)
            if code not in normal:
                report.notes.append(f"{server.name} exit status after SIGTERM: {code}")
        order = [(name, protocol.name) for name, protocol in pairs]
        report.http.sort(
            key=lambda r: (
                args.models.index(r.model),
                args.connections.index(r.connections),
                order.index((r.server, r.protocol)),
            )
        )
        report.notes = notes_for(report.http) + report.notes
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    missing = [m for m in args.models if m not in EXAMPLES]
    if missing:
        print(f"unknown models {missing}", file=sys.stderr)
        return 2
    report = run(args)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = render(report, f"ferry benchmark, {stamp}")
    if args.perf_analyzer:
        # After run(): every server above has stopped, so perf_analyzer's ferry is alone.
        text += "\n" + perf_analyzer_section(args.quick)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"report written to {args.output}", file=sys.stderr)
    if args.check and any(t.status == "FAIL" for t in targets(report)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
