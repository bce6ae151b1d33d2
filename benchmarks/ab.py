"""A/B: this working tree's ferry against a git revision's, in one run, alternating.

Why: a change's cost on the hot path (a size check, a limit) is a few per cent, well
inside the 3x day-to-day spread of these shared machines. Only a ratio measured minutes
apart under the same background load says anything, so both servers run side by side
(the one not under load sits idle) and wrk loads them in turn, round after round; the
report is each round's ratio and their median.

Usage::

    .venv/bin/python benchmarks/ab.py                      # HEAD vs the working tree
    .venv/bin/python benchmarks/ab.py --baseline main~3 --rounds 7 --connections 64
    .venv/bin/python benchmarks/ab.py --ferry-arg=--enable_batching=false
    .venv/bin/python benchmarks/ab.py --protocol grpc --model mlp_large   # h2load, TF gRPC
    .venv/bin/python benchmarks/ab.py --protocol v2json --ferry-arg=--dataplane=rust

The baseline is checked out with `git worktree add` into a temporary folder (removed at
the end) and served by the same interpreter and packages through PYTHONPATH; with
`--ferry-arg=--dataplane=rust` (or `auto`) its own Rust front is built into it first
(cargo). Besides requests per second, each side's server CPU time per request is
reported: on a host that steals time from this machine it moves less than throughput does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from loadgen import LoadResult, run_h2load, run_wrk, write_script  # noqa: E402
from protocols import CHECKS, PROTOCOLS, model_case, target_url, write_payload  # noqa: E402
from servers import HOST, Server, free_port, running_server  # noqa: E402

from ferry.examples import build_examples  # noqa: E402
from ferry.runtimes.base import RuntimeOptions  # noqa: E402

INPUT_WIDTH = {"mlp_small": 784, "mlp_large": 1024}


@contextlib.contextmanager
def baseline_tree(revision: str) -> Iterator[Path]:
    """A detached worktree of `revision`, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="ferry-ab-"))
    tree = folder / "tree"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), revision],
        check=True,
        capture_output=True,
    )
    try:
        yield tree
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
            check=False,
            capture_output=True,
        )


def uses_rust_front(ferry_args: Sequence[str]) -> bool:
    """Whether the baseline may serve on its Rust front (`--dataplane rust` or `auto`)."""
    return any(
        arg in ("--dataplane=rust", "rust", "--dataplane=auto", "auto") for arg in ferry_args
    )


def build_rust_front(tree: Path) -> None:
    """Build the baseline's Rust front into its worktree (`ferry._dataplane` is not
    committed), sharing this checkout's cargo target folder so only ferry's crate builds."""
    print("building the baseline's Rust front ...", file=sys.stderr)
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "--features", "extension-module",
         "--manifest-path", str(tree / "rust" / "Cargo.toml")],
        check=True,
        env={**os.environ, "CARGO_TARGET_DIR": str(REPO / "rust" / "target-ab")},
    )  # fmt: skip
    built = REPO / "rust" / "target-ab" / "release" / "lib_dataplane.so"
    (tree / "src" / "ferry" / "_dataplane.abi3.so").write_bytes(built.read_bytes())


def serve_argv(root: Path, port: int, grpc_port: int, ferry_args: Sequence[str]) -> list[str]:
    return [
        sys.executable, "-m", "ferry.cli", "serve", str(root),
        "--host", HOST, "--rest_api_port", str(port), "--port", str(grpc_port),
        *ferry_args,
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare against")
    parser.add_argument("--model", default="mlp_small", choices=sorted(INPUT_WIDTH))
    parser.add_argument("--protocol", default="rest", choices=sorted(PROTOCOLS))
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--ferry-arg", action="append", default=[], dest="ferry_args")
    # The cost of a flag: `--candidate-arg=--access_log` serves this tree with it and the
    # baseline without; on a clean tree (baseline HEAD = this code) that is the flag alone.
    parser.add_argument("--candidate-arg", action="append", default=[], dest="candidate_args")
    args = parser.parse_args(argv)

    with (
        tempfile.TemporaryDirectory(prefix="ferry-ab-run-") as tmp,
        baseline_tree(args.baseline) as tree,
    ):
        work = Path(tmp)
        if uses_rust_front(args.ferry_args):  # both sides on their own Rust front
            build_rust_front(tree)
        root = work / "models"
        build_examples(root, [args.model])
        case = model_case(
            args.model, root / args.model / "1" / "model.onnx", INPUT_WIDTH[args.model],
            RuntimeOptions(),
        )  # fmt: skip
        protocol = PROTOCOLS[args.protocol]
        payload = write_payload(protocol, case, work)
        script = write_script(work / "post.lua", payload.body_file, payload.headers)
        # The readiness probe is always TF REST JSON; the load is the chosen protocol.
        probes = {args.model: write_payload(PROTOCOLS["rest"], case, work).body_file.read_bytes()}
        sides = {"baseline": tree / "src", "this tree": REPO / "src"}
        extra = {"baseline": [], "this tree": args.candidate_args}
        rates: dict[str, list[float]] = {name: [] for name in sides}
        cpu_us: dict[str, list[float]] = {name: [] for name in sides}
        with contextlib.ExitStack() as stack:
            servers = {}
            for name, src in sides.items():
                port, grpc_port = free_port(), free_port()
                env = {**os.environ, "PYTHONPATH": str(src)}
                servers[name] = stack.enter_context(
                    running_server(
                        name,
                        serve_argv(root, port, grpc_port, [*args.ferry_args, *extra[name]]),
                        port,
                        work / f"{name.replace(' ', '_')}.log",
                        probes,
                        env=env,
                        grpc_port=grpc_port,
                    )
                )

            for server in servers.values():  # a real client gets the right answer first
                CHECKS[protocol.name](case, server.port, server.grpc_port)

            def load(server: Server) -> LoadResult:
                url = target_url(protocol, case, server.port, server.grpc_port)
                if protocol.tool == "h2load":
                    return run_h2load(
                        url, payload.body_file, payload.headers, args.connections, 1,
                        args.seconds, work / "h2load.log",
                    )  # fmt: skip
                return run_wrk(url, script, args.connections, args.seconds)

            for round_number in range(args.rounds):
                # Alternate who goes first, so drift within a round favours neither.
                order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
                for name in order:
                    process = psutil.Process(servers[name].pid)
                    before = sum(process.cpu_times()[:2])
                    result = load(servers[name])
                    spent = sum(process.cpu_times()[:2]) - before
                    if result.errors:
                        print(f"{name}: {result.errors} errors", file=sys.stderr)
                    rates[name].append(result.requests_per_s)
                    cpu_us[name].append(spent / max(result.requests, 1) * 1e6)
                ratio = rates["this tree"][-1] / rates["baseline"][-1]
                print(
                    f"round {round_number + 1}: baseline {rates['baseline'][-1]:,.0f} req/s "
                    f"({cpu_us['baseline'][-1]:.0f} µs CPU/req), this tree "
                    f"{rates['this tree'][-1]:,.0f} req/s ({cpu_us['this tree'][-1]:.0f} µs), "
                    f"ratio {ratio:.3f}"
                )
        ratios = [b / a for a, b in zip(rates["baseline"], rates["this tree"], strict=True)]
        cpu = [b / a for a, b in zip(cpu_us["baseline"], cpu_us["this tree"], strict=True)]
        print(
            f"{args.model} {protocol.label} c{args.connections}, "
            f"{args.rounds} rounds of {args.seconds:.0f} s: "
            f"req/s this tree / {args.baseline} = {statistics.median(ratios):.3f} (median; "
            f"min {min(ratios):.3f}, max {max(ratios):.3f}); server CPU per request "
            f"{statistics.median(cpu):.3f} (median; min {min(cpu):.3f}, max {max(cpu):.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
