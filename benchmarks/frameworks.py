"""Model formats benchmark (`make bench-frameworks`): the same network served by ferry
from the formats people train in, side by side in one run on this machine.

The network is `mlp_small` (x float32[N,784] -> Dense 256 relu -> Dense 10 softmax ->
probs) with the weights of ferry.examples.mlp_small (numpy seed 0), rebuilt as

  tensorflow   a Keras model saved with ferry.save as a SavedModel, served through
               ferry's TensorFlow runtime;
  onnx         the same SavedModel with `accelerate = "onnx"` in the model's ferry.toml:
               converted at load, checked, served through onnxruntime (the server log
               must say so, or the row fails);
  torch        the PyTorch version, saved with ferry.save(model, dir, example=...) as
               TorchScript, served through ferry's PyTorch runtime.

Each variant gets its own `ferry serve` process on 127.0.0.1 (so "server CPU" is that
variant's alone), started one after another and all kept running; at each clients
point the variants are measured back to back, so slow drift on a shared machine hits
all of them alike. Every row starts with one real request whose answer is compared
with the framework's own in-process prediction (Keras, torch) on the same input row,
then a warm-up, then the measured wrk run: TF Serving REST JSON, one instance per
request (benchmarks/run.py's measure_point).

Target (issue 4): accelerate onnx >= 2x the TensorFlow runtime's req/s at 64 clients.

    .venv/bin/python benchmarks/frameworks.py            # 10 s per point, 2 s warm-up
    .venv/bin/python benchmarks/frameworks.py --quick    # 3 s per point, 1 s warm-up

The report is printed and written to benchmarks/results/frameworks.md (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loadgen import instance_values, predict_body, write_script  # noqa: E402
from protocols import PROTOCOLS, ModelCase, write_payload  # noqa: E402
from report import (  # noqa: E402
    HttpResult,
    Target,
    errors_target,
    fmt,
    load_average,
    machine_description,
)
from run import (  # noqa: E402
    _csv,
    _log_findings,
    _raise_on_sigterm,
    measure_point,
    notes_for,
    server_argv,
)
from servers import Server, ServerError, free_port, running_server  # noqa: E402

import ferry  # noqa: E402
from ferry.examples import mlp_small  # noqa: E402

MODEL = "mlp_small"
WIDTH = 784
DEFAULT_OUTPUT = HERE / "results" / "frameworks.md"
# The log line runtimes/accelerate.py writes when the ONNX export serves.
ACCELERATED_LOG = "serves through onnxruntime"
TARGET_RATIO = 2.0


@dataclass(frozen=True)
class Variant:
    """One served format: its label in the report, what serves it, and the folder."""

    name: str
    served_by: str
    root: Path
    case: ModelCase


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="mlp_small as SavedModel (TensorFlow), accelerated ONNX and "
        "TorchScript, served by ferry and driven by wrk."
    )
    parser.add_argument(
        "--connections", type=_csv(int), default=[1, 64],
        help="comma-separated concurrent client counts (default: 1,64)",
    )  # fmt: skip
    parser.add_argument(
        "--duration", type=float, default=None,
        help="seconds per measured run (default 10; 3 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=float, default=None,
        help="seconds of warm-up load before each measured run (default 2; 1 with --quick)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="short runs, for trying things")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the target is missed or a run failed"
    )
    parser.add_argument(
        "--ferry-arg", action="append", default=[], metavar="ARG",
        help="extra argument for every `ferry serve` (repeatable; write --ferry-arg=--flag=v)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    if args.duration < 1:
        parser.error("--duration must be at least 1 second (wrk's resolution)")
    if any(c < 1 for c in args.connections):
        parser.error("--connections must be positive")
    args.grpc_multiplex = False  # read by measure_point for gRPC only
    return args


def mlp_small_weights() -> list[np.ndarray]:
    """[w0 (784x256), b0, w1 (256x10), b1] from ferry's ONNX example, so every variant
    computes exactly the function `ferry examples` serves."""
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in mlp_small().graph.initializer}
    return [arrays[name] for name in ("w0", "b0", "w1", "b1")]


def keras_mlp_small(weights: list[np.ndarray]) -> Any:
    from ferry.runtimes.optional import prepare_tensorflow_import

    prepare_tensorflow_import()  # before TensorFlow: see its docstring
    import keras

    inputs = keras.Input((WIDTH,), name="x")
    hidden = keras.layers.Dense(256, activation="relu")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax", name="probs")(hidden)
    model = keras.Model(inputs, outputs, name=MODEL)
    model.set_weights(weights)  # Dense kernels are [in, out], as the Gemm weights
    return model


def torch_mlp_small(weights: list[np.ndarray]) -> Any:
    import torch

    model = torch.nn.Sequential(
        torch.nn.Linear(WIDTH, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10),
        torch.nn.Softmax(dim=-1),
    )  # fmt: skip
    w0, b0, w1, b1 = weights
    with torch.no_grad():
        for layer, kernel, bias in ((model[0], w0, b0), (model[2], w1, b1)):
            layer.weight.copy_(torch.from_numpy(kernel.T.copy()))  # Linear is [out, in]
            layer.bias.copy_(torch.from_numpy(bias))
    return model.eval()


def build_variants(folder: Path) -> list[Variant]:
    """Save the three model folders (one model root per server) and the expected answer
    of each framework, in-process, to the benchmark's input row."""
    import torch

    weights = mlp_small_weights()
    row = instance_values(WIDTH)
    batch = row.reshape(1, -1)

    keras_model = keras_mlp_small(weights)
    keras_expected = np.asarray(keras_model.predict(batch, verbose=0), dtype=np.float32)
    tf_root = folder / "tensorflow"
    version = ferry.save(keras_model, tf_root / MODEL, format="savedmodel")
    onnx_root = folder / "onnx"
    shutil.copytree(version, onnx_root / MODEL / version.name)
    (onnx_root / MODEL / "ferry.toml").write_text('accelerate = "onnx"\n')

    torch_model = torch_mlp_small(weights)
    example = torch.from_numpy(batch)
    with torch.inference_mode():
        torch_expected = torch_model(example).numpy()
    torch_root = folder / "torch"
    ferry.save(torch_model, torch_root / MODEL, example=example, format="torchscript")

    def case(expected: np.ndarray) -> ModelCase:
        return ModelCase(MODEL, "x", "probs", row, expected)

    return [
        Variant("tensorflow", "SavedModel via TensorFlow runtime", tf_root, case(keras_expected)),
        Variant("onnx", "SavedModel + accelerate = \"onnx\" (onnxruntime)", onnx_root,
                case(keras_expected)),
        Variant("torch", "TorchScript via PyTorch runtime", torch_root, case(torch_expected)),
    ]  # fmt: skip


def _req_s(results: Sequence[HttpResult], variant: str, connections: int) -> float | None:
    for r in results:
        if (r.server, r.connections) == (variant, connections) and r.load is not None:
            return r.load.requests_per_s
    return None


def targets(results: Sequence[HttpResult], accelerated: bool) -> list[Target]:
    onnx, tf = _req_s(results, "onnx", 64), _req_s(results, "tensorflow", 64)
    ratio = onnx / tf if accelerated and onnx is not None and tf else None
    errors = sum(r.errors for r in results) + sum(1 for r in results if r.failure)
    return [
        Target(
            "c64: accelerate onnx req/s / TensorFlow runtime req/s",
            ratio,
            f">= {TARGET_RATIO:.1f}",
            lambda v: v >= TARGET_RATIO,
        ),
        errors_target(errors, bool(results)),
    ]


def _versions() -> list[tuple[str, str]]:
    found = []
    for package in ("tensorflow", "keras", "tf2onnx", "torch"):
        try:
            found.append((package, metadata.version(package)))
        except metadata.PackageNotFoundError:
            found.append((package, "not installed"))
    return found


def render(
    variants: Sequence[Variant],
    results: Sequence[HttpResult],
    connections: Sequence[int],
    settings: list[tuple[str, str]],
    machine: list[tuple[str, str]],
    notes: list[str],
    accelerated: bool,
) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# ferry model formats benchmark, {stamp}", "", "## Machine", ""]
    out += [f"- {k}: {v}" for k, v in machine + _versions()]
    out.append(f"- load average at end (1/5/15 min): {load_average()}")
    out += ["", "## Settings", ""]
    out += [f"- {k}: {v}" for k, v in settings]

    out += ["", "## Side by side (TF REST JSON, one instance per request)", ""]
    head = "| variant | served as |"
    rule = "|---|---|"
    for c in connections:
        head += f" c{c} req/s | c{c} p50 ms | c{c} p99 ms |"
        rule += "---:|---:|---:|"
    out += [head + " errors |", rule + "---:|"]
    for v in variants:
        line = f"| {v.name} | {v.served_by} |"
        errors = 0
        for c in connections:
            r = next((x for x in results if (x.server, x.connections) == (v.name, c)), None)
            if r is None or r.load is None:
                line += " FAILED | | |"
                errors += 1
                continue
            errors += r.errors
            line += f" {fmt(r.load.requests_per_s)} | {fmt(r.load.p50_ms, 2)} "
            line += f"| {fmt(r.load.p99_ms, 2)} |"
        out.append(f"{line} {errors} |")

    out += ["", "## Every run", ""]
    out += [
        "server CPU: the variant's ferry process; load gen CPU: wrk; other CPU: everything "
        "else on the machine (the other two idle ferry servers, other people's jobs). "
        "Cores, averaged over the measured window.",
        "",
        "| variant | clients | req/s | p50 ms | p99 ms | max ms | errors | server CPU "
        "| load gen CPU | other CPU | mean batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.load is None:
            out.append(f"| {r.server} | {r.connections} | FAILED: {r.failure} |||||||||")
            continue
        w = r.load
        client = w.client_cpu_s / w.duration_s if w.duration_s else None
        out.append(
            f"| {r.server} | {r.connections} | {fmt(w.requests_per_s)} | {fmt(w.p50_ms, 2)} "
            f"| {fmt(w.p99_ms, 2)} | {fmt(w.max_ms, 1)} | {r.errors} "
            f"| {fmt(r.server_cores, 2)} | {fmt(client, 2)} | {fmt(r.other_cores, 2)} "
            f"| {fmt(r.mean_batch, 1)} |"
        )

    out += ["", "## Targets (from this run)", ""]
    out += ["| target | value | goal | status |", "|---|---:|---|---|"]
    for t in targets(results, accelerated):
        value = "-" if t.value is None else f"{t.value:.{t.digits}f}"
        out.append(f"| {t.label} | {value} | {t.goal} | {t.status} |")
    if notes:
        out += ["", "## Notes", ""]
        out += [f"- {note}" for note in notes]
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> tuple[str, bool]:
    """Build, serve, check and measure every variant; returns the report and whether
    any target failed."""
    machine = machine_description()
    protocol = PROTOCOLS["rest"]
    timing = f"{args.duration:g} s measured after {args.warmup:g} s warm-up per point"
    settings = [
        ("model", f"{MODEL}: x float32[N,{WIDTH}] -> Dense 256 relu -> Dense 10 softmax, "
                  "weights of ferry.examples.mlp_small (numpy seed 0)"),
        ("clients", ", ".join(map(str, args.connections))),
        ("wrk", f"-t1, TF Serving REST JSON, {timing}"),
        ("request", "one instance per request, float32 uniform [0,1), numpy seed 0"),
        ("check", "one http.client request per row before its warm-up, answer compared "
                  "with the framework's in-process prediction (Keras predict for "
                  "tensorflow and onnx, torch for torch)"),
        ("servers", "one `ferry serve` per variant, all running, measured back to back "
                    "at each clients point"),
        ("ferry args", " ".join(args.ferry_arg) or "(defaults)"),
    ]  # fmt: skip
    results: list[HttpResult] = []
    notes: list[str] = []
    accelerated = False
    with tempfile.TemporaryDirectory(prefix="ferry-bench-frameworks-") as tmp:
        folder = Path(tmp)
        print("building the Keras and PyTorch models ...", file=sys.stderr, flush=True)
        variants = build_variants(folder)
        payload = write_payload(protocol, variants[0].case, folder)
        script = write_script(folder / f"{MODEL}.rest.lua", payload.body_file, payload.headers)
        with contextlib.ExitStack() as stack:
            servers: dict[str, Server] = {}
            for v in variants:
                port, grpc_port = free_port(), free_port()
                print(f"starting ferry ({v.name}) on port {port} ...", file=sys.stderr, flush=True)
                try:
                    servers[v.name] = stack.enter_context(
                        running_server(
                            v.name,
                            server_argv("ferry", v.root, port, grpc_port, args.ferry_arg),
                            port,
                            folder / f"ferry-{v.name}.log",
                            {MODEL: predict_body(WIDTH)},
                            grpc_port=grpc_port,
                        )
                    )
                except ServerError as exc:
                    notes.append(f"{v.name}: ferry did not start: {str(exc)[:1500]}")
            if "onnx" in servers:
                accelerated = ACCELERATED_LOG in servers["onnx"].log_tail(200_000)
                if not accelerated:
                    notes.append(
                        f"onnx: the server log does not say it {ACCELERATED_LOG}; it serves "
                        "the original model, so its rows do not measure onnxruntime"
                    )
            if "tensorflow" in servers and ACCELERATED_LOG in servers["tensorflow"].log_tail(
                200_000
            ):
                notes.append("tensorflow: the server log says it serves through onnxruntime")
            for connections in args.connections:
                for v in variants:
                    if v.name not in servers:
                        results.append(
                            HttpResult(MODEL, v.name, connections, failure="server did not start")
                        )
                        continue
                    print(f"wrk {v.name} c{connections} ...", file=sys.stderr, flush=True)
                    # measure_point reads ferry's metrics only for a server named "ferry".
                    as_ferry = replace(servers[v.name], name="ferry")
                    result = measure_point(
                        as_ferry, protocol, v.case, connections, payload, script, args
                    )
                    result.server = v.name
                    results.append(result)
            for name, server in servers.items():
                notes += [f"{name} log: {x}" for x in _log_findings(server)]
                if server.process.poll() is not None:
                    notes.append(f"{name} exited during the run with {server.process.returncode}")
        for name, server in servers.items():
            if server.process.returncode not in (0, None):
                notes.append(f"{name}: exit status after SIGTERM: {server.process.returncode}")
    notes = notes_for(results) + notes
    text = render(variants, results, args.connections, settings, machine, notes, accelerated)
    failed = any(t.status == "FAIL" for t in targets(results, accelerated))
    return text, failed


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    text, failed = run(args)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"report written to {args.output}", file=sys.stderr)
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
