"""Quantization and lite-model benchmark on a real data set (`make bench-quant`).

Trains a small Keras MLP and a scikit-learn MLP (when scikit-learn and skl2onnx are
installed) on scikit-learn's bundled `load_digits` (8x8 images, 10 classes; no
download), then measures, side by side in one run, for fp32, fp16, int8 dynamic,
int8 static (QDQ) and the lite variants (.tflite through the TFLite converter, .ort
through onnxruntime): file size, accuracy on the held-out split, and in-process latency
at batch 1 and 64 (one thread, so numbers are stable on a shared machine). It serves
the fp32 and int8 digits models with `ferry serve` and drives them with Python threads
for a served-throughput figure, and quantizes `mlp_large` (size, batch-1/batch-64
latency). The issue's targets are reported as ratios at the end.

    python benchmarks/quantization.py [--quick] [--out benchmarks/results/quantization.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from servers import HOST, free_port, running_server

import ferry.edge
from ferry.convert.lite import convert_lite
from ferry.convert.optimize import build_variant, latency_ms
from ferry.examples import mlp_large, write_version

Run = Callable[[np.ndarray], np.ndarray]


@dataclass
class Row:
    """One model variant's measurements."""

    model: str
    variant: str
    size_bytes: int
    accuracy: float
    batch1_ms: float
    batch64_ms: float
    same_class_as_served: float | None = None


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """load_digits scaled to [0, 1], split 75/25 with a fixed seed."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    cut = int(len(x) * 0.75)
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


def train_keras(x: np.ndarray, y: np.ndarray, epochs: int) -> Any:
    from ferry.runtimes.optional import prepare_tensorflow_import

    prepare_tensorflow_import()  # before TensorFlow: see its docstring
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,), name="x")
    hidden = keras.layers.Dense(512, activation="relu")(inputs)
    hidden = keras.layers.Dense(512, activation="relu")(hidden)
    outputs = keras.layers.Dense(10, activation="softmax", name="probs")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def keras_to_onnx(model: Any) -> onnx.ModelProto:
    """The Dense stack as ONNX Gemm nodes with the same weights (exact, no converter)."""
    nodes, initializers, current = [], [], "x"
    dense = [layer for layer in model.layers if layer.weights]
    for index, layer in enumerate(dense):
        kernel, bias = (np.asarray(w) for w in layer.get_weights())
        initializers += [
            numpy_helper.from_array(kernel.astype(np.float32), f"w{index}"),
            numpy_helper.from_array(bias.astype(np.float32), f"b{index}"),
        ]
        nodes.append(helper.make_node("Gemm", [current, f"w{index}", f"b{index}"], [f"g{index}"]))
        current = f"g{index}"
        activation = "Relu" if index < len(dense) - 1 else "Softmax"
        out = "probs" if activation == "Softmax" else f"a{index}"
        nodes.append(helper.make_node(activation, [current], [out]))
        current = out
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])],
        initializers,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    return onnx_model


def sklearn_onnx(x: np.ndarray, y: np.ndarray) -> onnx.ModelProto | None:
    """A scikit-learn MLP as ONNX (skl2onnx), or None when either is missing."""
    try:
        from skl2onnx import to_onnx
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        return None
    model = MLPClassifier(hidden_layer_sizes=(512,), max_iter=200, random_state=0).fit(x, y)
    return to_onnx(
        model, x[:1], options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3}
    )


def onnx_runner(path: Path) -> Run:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    probs = [o.name for o in session.get_outputs() if o.name in ("probs", "probabilities")]
    names = probs or [session.get_outputs()[-1].name]
    return lambda x: session.run(names, {input_name: x})[0]


def edge_runner(path: Path) -> Run:
    model = ferry.edge.load(path, num_threads=1)
    return lambda x: next(iter(model.predict(x).values()))


def measure(
    model: str, variant: str, path: Path, run: Run, x: np.ndarray, y: np.ndarray, seconds: float
) -> Row:
    predicted = run(x).argmax(axis=1)

    def timed(inputs: dict[str, np.ndarray]) -> Any:
        return run(inputs["x"])

    return Row(
        model,
        variant,
        path.stat().st_size,
        float(np.mean(predicted == y)),
        latency_ms(timed, {"x": x[:1]}, seconds),
        latency_ms(timed, {"x": np.repeat(x[:1], 64, axis=0)}, seconds),
    )


def onnx_variants(
    name: str, model: onnx.ModelProto, folder: Path, x_train: np.ndarray
) -> dict[str, Path]:
    """fp32, fp16, int8 dynamic and int8 static files of one ONNX model."""
    version = write_version(model, folder / name, 1)
    source = version / "model.onnx"
    paths = {"fp32": source}
    input_name = model.graph.input[0].name
    calibration = [{input_name: x_train[i : i + 64]} for i in range(0, 256, 64)]
    for precision, label in (
        ("fp16", "fp16"),
        ("int8", "int8 dynamic"),
        ("int8-static", "int8 static"),
    ):
        target = folder / f"{name}.{precision}.onnx"
        build_variant(source, target, precision, calibration)
        paths[label] = target
    return paths


# --- serving ---------------------------------------------------------------------------


def served_throughput(
    model_file: Path, x: np.ndarray, seconds: float, clients: int = 8
) -> tuple[float, np.ndarray]:
    """(requests/s of one-row predicts from `clients` Python threads, the served
    predictions for `x`) for `model_file` served by a real `ferry serve`."""
    with tempfile.TemporaryDirectory() as scratch:
        version = Path(scratch) / "m" / "1"
        version.mkdir(parents=True)
        (version / "model.onnx").write_bytes(model_file.read_bytes())
        port = free_port()
        argv = [sys.executable, "-m", "ferry.cli", "serve", "--model_name", "m"]
        argv += ["--model_base_path", str(version.parent), "--port", "0"]
        argv += ["--rest_api_port", str(port), "--host", HOST]
        probe = json.dumps({"instances": x[:1].tolist()}).encode()
        log_path = Path(scratch) / "ferry.log"
        with running_server("ferry", argv, port, log_path, {"m": probe}):
            url = f"http://{HOST}:{port}/v1/models/m:predict"
            predictions = np.array(_post(url, {"instances": x.tolist()})["predictions"])
            bodies = [json.dumps({"instances": x[i : i + 1].tolist()}).encode() for i in range(64)]
            count = [0] * clients
            stop_at = time.monotonic() + seconds

            def client(slot: int) -> None:
                while time.monotonic() < stop_at:
                    _post_raw(url, bodies[count[slot] % 64])
                    count[slot] += 1

            threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return sum(count) / (time.monotonic() - started), predictions


def _post_raw(url: str, body: bytes) -> bytes:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    return json.loads(_post_raw(url, json.dumps(body).encode()))


# --- report ----------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    fp32 = {row.model: row for row in rows if row.variant == "fp32"}
    lines = [
        "| model | variant | size | x smaller | accuracy | Δ acc (pp) | batch-1 ms | batch-64 ms "
        "| same class as served fp32 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        base = fp32[row.model]
        same = "-" if row.same_class_as_served is None else f"{row.same_class_as_served:.1%}"
        lines.append(
            f"| {row.model} | {row.variant} | {row.size_bytes / 1e3:,.0f} kB "
            f"| {base.size_bytes / row.size_bytes:.2f} | {row.accuracy:.2%} "
            f"| {(row.accuracy - base.accuracy) * 100:+.2f} | {row.batch1_ms:.3f} "
            f"| {row.batch64_ms:.3f} | {same} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, shorter timings")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quantization.md"))
    args = parser.parse_args()
    seconds = 0.2 if args.quick else 1.0
    serve_seconds = 2.0 if args.quick else 10.0
    x_train, y_train, x_test, y_test = digits()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ferry-bench-quant-") as scratch:
        folder = Path(scratch)
        print("training the Keras MLP on load_digits ...", file=sys.stderr)
        keras_model = train_keras(x_train, y_train, epochs=15 if args.quick else 40)
        paths = onnx_variants("digits_keras", keras_to_onnx(keras_model), folder, x_train)
        for variant, path in paths.items():
            rows.append(
                measure("digits_keras", variant, path, onnx_runner(path), x_test, y_test, seconds)
            )
        print("serving fp32 and int8 ...", file=sys.stderr)
        served_fp32_rps, served = served_throughput(paths["fp32"], x_test, serve_seconds)
        served_int8_rps, _ = served_throughput(paths["int8 dynamic"], x_test, serve_seconds)
        served_class = served.argmax(axis=1)
        keras_dir = folder / "keras" / "1"
        keras_dir.mkdir(parents=True)
        keras_model.save(keras_dir / "model.keras")
        np.save(folder / "representative.npy", x_train[:300])
        lite_files = {}
        for quantize in ("none", "dynamic", "fp16", "int8"):
            target = folder / f"digits_{quantize}.tflite"
            representative = folder / "representative.npy" if quantize == "int8" else None
            convert_lite(keras_dir, target, quantize=quantize, representative_data=representative)
            lite_files[f".tflite {quantize}"] = target
        lite_files[".ort fp32"] = folder / "digits.ort"
        convert_lite(paths["fp32"].parent, lite_files[".ort fp32"])
        for variant, path in lite_files.items():
            row = measure("digits_keras", variant, path, edge_runner(path), x_test, y_test, seconds)
            row.same_class_as_served = float(
                np.mean(edge_runner(path)(x_test).argmax(axis=1) == served_class)
            )
            rows.append(row)
        sk = sklearn_onnx(x_train, y_train)
        if sk is not None:
            for variant, path in onnx_variants("digits_sklearn", sk, folder, x_train).items():
                rows.append(
                    measure(
                        "digits_sklearn", variant, path, onnx_runner(path), x_test, y_test, seconds
                    )
                )
        print("mlp_large ...", file=sys.stderr)
        large = write_version(mlp_large(), folder / "mlp_large", 1) / "model.onnx"
        large_int8 = folder / "mlp_large.int8.onnx"
        build_variant(large, large_int8, "int8")
        probe = np.random.default_rng(0).random((64, 1024), dtype=np.float32)
        large_rows = []
        for variant, path in (("fp32", large), ("int8 dynamic", large_int8)):
            run = onnx_runner(path)
            large_rows.append(
                (
                    variant,
                    path.stat().st_size,
                    latency_ms(lambda i, run=run: run(i["x"]), {"x": probe[:1]}, seconds),
                    latency_ms(lambda i, run=run: run(i["x"]), {"x": probe}, seconds),
                )
            )

    by = {(r.model, r.variant): r for r in rows}
    base, int8 = by[("digits_keras", "fp32")], by[("digits_keras", "int8 dynamic")]
    static = by[("digits_keras", "int8 static")]
    lite_same = min(r.same_class_as_served for r in rows if r.same_class_as_served is not None)
    (_, large_size, large_b1, large_b64), (_, large_q_size, large_q_b1, large_q_b64) = large_rows
    report = [
        "### Quantization and lite models (`make bench-quant`)",
        "",
        f"load_digits: {len(x_train)} training rows, {len(x_test)} held-out rows. "
        "In-process latency with one onnxruntime / LiteRT thread.",
        "",
        table(rows),
        "",
        "| mlp_large | size | batch-1 ms | batch-64 ms |",
        "|---|---:|---:|---:|",
        f"| fp32 | {large_size / 1e6:.1f} MB | {large_b1:.2f} | {large_b64:.2f} |",
        f"| int8 dynamic | {large_q_size / 1e6:.1f} MB | {large_q_b1:.2f} | {large_q_b64:.2f} |",
        "",
        f"Served (`ferry serve`, 8 Python client threads, one row per request, "
        f"{serve_seconds:g} s): digits fp32 {served_fp32_rps:,.0f} req/s, "
        f"int8 dynamic {served_int8_rps:,.0f} req/s.",
        "",
        "| target | measured | goal |",
        "|---|---:|---|",
        f"| digits MLP int8 dynamic: fp32 size / int8 size "
        f"| {base.size_bytes / int8.size_bytes:.2f}x | ≥ 3.5x |",
        f"| digits MLP int8 static: fp32 size / int8 size "
        f"| {base.size_bytes / static.size_bytes:.2f}x | ≥ 3.5x |",
        f"| mlp_large int8: fp32 size / int8 size | {large_size / large_q_size:.2f}x | ≥ 3.5x |",
        f"| digits accuracy drop, int8 dynamic / static | "
        f"{(base.accuracy - int8.accuracy) * 100:.2f} / "
        f"{(base.accuracy - static.accuracy) * 100:.2f} pp | ≤ 1 pp |",
        f"| mlp_large batch 1: fp32 ms / int8 ms | {large_b1 / large_q_b1:.2f}x | ≥ 1.5x |",
        f"| .tflite and .ort: same class as the server (worst variant) | {lite_same:.1%} "
        "| ≥ 99 % |",
    ]
    text = "\n".join(report) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
