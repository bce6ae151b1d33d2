"""`ferry optimize`: a lower-precision variant of an ONNX version, written only when it is
accurate enough.

The candidate is built in a private temporary folder, never in the model folder; it is
compared with the original on evaluation data (size, latency at batch 1 and 64, output
differences, accuracy when labels are given) and the gates (`max_accuracy_drop`,
`max_abs_diff`) refuse a worse candidate with the numbers in the message. Only then is
it copied into a staging folder beside the versions, its signature recorded, and the
staging folder renamed into place: a polling server sees the whole new version or
nothing, exactly as with `ferry save`.

Precisions (onnxruntime's tools; docs/commands.md says when to use which):

* `fp16`: onnxruntime's float16 converter with `keep_io_types`, so the signature keeps
  float32 inputs and outputs and clients need no change;
* `int8`: dynamic quantization (int8 weights, activations quantized on the fly per
  batch) of MatMul/Gemm-style ops: no calibration data needed;
* `int8-static`: static QDQ quantization (QuantizeLinear/DequantizeLinear pairs, int8
  weights and activations) with activation ranges calibrated on `--calibration` data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from ferry.convert.optimize_limits import DEFAULT_MAX_SLOWDOWN_PERCENT
from ferry.convert.save import SIGNATURE_FILE, next_version, record_signature
from ferry.errors import FerryError
from ferry.runtimes.onnx import find_model_file, session_signature
from ferry.tensors import DEFAULT_SIGNATURE, Signature
from ferry.warmup import generated_inputs

PRECISIONS = ("fp16", "int8", "int8-static")
# Written beside the candidate's model.onnx: where it came from and how it compared.
REPORT_FILE = "optimize.json"
# Files of the source version that belong to the new one too (warm-up requests, batching).
_CARRIED_OVER = ("assets.extra", "batching_params.pbtxt")
# Rows per calibration and evaluation batch.
_BATCH_ROWS = 64
# A progress callback: (description, iterable, total) -> the same items.
Progress = Callable[[str, Any, int], Iterator[Any]]


class OptimizeError(ValueError):
    """The variant cannot be built or was refused; the message says why, with numbers."""


@dataclass
class VariantReport:
    """How one model (the original or a candidate) measured on the same evaluation data."""

    label: str
    size_bytes: int
    latency_ms_batch1: float
    latency_ms_batch64: float
    max_abs_diff: float = 0.0
    mean_abs_diff: float = 0.0
    accuracy: float | None = None


@dataclass
class OptimizeResult:
    """What `optimize` did: the folder written (None when refused or a dry run) and the
    measurements of the original and the candidate."""

    original: VariantReport
    candidate: VariantReport
    written: Path | None = None
    notes: list[str] = field(default_factory=list)


def _no_progress(description: str, items: Any, total: int) -> Iterator[Any]:
    yield from items


def resolve_version(path: Path) -> tuple[Path, Path]:
    """(model folder, version folder) for `models/NAME` (its newest version) or
    `models/NAME/VERSION`."""
    path = Path(path)
    if not path.is_dir():
        raise OptimizeError(f"{path} is not a folder")
    if path.name.isdigit():
        return path.parent, path
    versions = sorted(
        (int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True
    )
    if not versions:
        raise OptimizeError(f"{path} has no integer version folders")
    return path, path / str(versions[0])


def onnx_model_file(version_dir: Path) -> Path:
    found = find_model_file(version_dir)
    if found is None:
        raise OptimizeError(
            f"{version_dir} holds no ONNX model: ferry optimize works on ONNX versions "
            "(save a framework model as ONNX first, e.g. `ferry save --format onnx`)"
        )
    return found


def model_signature(model_file: Path) -> Signature:
    """The model's serving signature, as ferry's ONNX runtime reports it."""
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    return session_signature(session, model_file)


# --- building -------------------------------------------------------------------------


def float_weight_count(model: onnx.ModelProto) -> int:
    """Float initializers with more than one element: what quantization can shrink."""
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE}
    return sum(
        1
        for init in model.graph.initializer
        if init.data_type in floats and int(np.prod(init.dims or [1])) > 1
    )


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer logs a pre-processing hint on the root logger every call;
    ferry's models are already shape-inferred, so the hint is noise in ferry's output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _BatchReader:
    """onnxruntime's CalibrationDataReader protocol over prepared batches, advancing a
    progress bar as the calibrator consumes them."""

    def __init__(self, batches: list[dict[str, np.ndarray]], progress: Progress) -> None:
        self._items = iter(progress("calibrating", batches, len(batches)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def rewind(self) -> None:  # pragma: no cover - MinMax calibration reads once
        """Part of the reader protocol; not needed by the MinMax calibrator ferry uses."""


def build_variant(
    source: Path,
    target: Path,
    precision: str,
    calibration: list[dict[str, np.ndarray]] | None = None,
    progress: Progress = _no_progress,
) -> None:
    """Write the `precision` variant of the ONNX model `source` to `target`.

    Raises OptimizeError when the model has no float weights to quantize, when
    `int8-static` gets no calibration data, or when onnxruntime's tools fail.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if precision not in PRECISIONS:
        raise OptimizeError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)}")
    model = onnx.load(str(source))
    if float_weight_count(model) == 0:
        raise OptimizeError(
            f"{source} has no float weights to quantize (no float32/float64 initializer "
            f"with more than one element): {precision} would not make it smaller"
        )
    try:
        if precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            converted = convert_float_to_float16(model, keep_io_types=True)
            onnx.save(converted, str(target))
        elif precision == "int8":
            # The loaded model, not its path: from a path onnxruntime writes its shape-
            # inferred copy beside the source, which fails on a read-only model folder
            # (SageMaker's /opt/ml/model); from a ModelProto it uses a temporary folder.
            with _quiet_quantizer():
                quantize_dynamic(model, str(target), weight_type=QuantType.QInt8)
        else:
            if not calibration:
                raise OptimizeError("int8-static needs calibration data (--calibration PATH)")
            reader = _BatchReader(calibration, progress)
            CalibrationDataReader.register(_BatchReader)
            with _quiet_quantizer():
                quantize_static(
                    str(source),
                    str(target),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                )
    except OptimizeError:
        raise
    except Exception as exc:
        raise OptimizeError(
            f"onnxruntime could not build the {precision} variant: {type(exc).__name__}: {exc}"
        ) from exc


# --- input data -----------------------------------------------------------------------


def read_input_batches(path: Path, signature: Signature, what: str) -> list[dict[str, np.ndarray]]:
    """Batches of checked inputs from a `.npy` file (single-input models), an `.npz` file
    (arrays by input name) or a folder of such files and TF Serving request JSON bodies.

    `what` ("calibration", "eval") starts every error message. Arrays are converted to the
    input's dtype only where numpy calls the cast same-kind (float64 to float32); a shape
    or dtype the model does not take is an OptimizeError naming the file and the input.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".npy", ".npz", ".json"))
        if not files:
            raise OptimizeError(f"{what} folder {path} holds no .npy, .npz or .json files")
    elif path.is_file():
        files = [path]
    else:
        raise OptimizeError(f"{what} data {path} does not exist")
    batches: list[dict[str, np.ndarray]] = []
    for file in files:
        arrays = _read_file(file, signature, what)
        batches.extend(_split(arrays))
    return batches


def _read_file(file: Path, signature: Signature, what: str) -> dict[str, np.ndarray]:
    names = list(signature.inputs)
    where = f"{what} file {file.name}"
    suffix = file.suffix.lower()
    if suffix == ".json":
        from ferry.codecs.tfserving_json import decode_predict_body, parse_json

        try:
            decoded = decode_predict_body(
                parse_json(file.read_bytes()), {DEFAULT_SIGNATURE: signature}
            )
        except FerryError as exc:
            raise OptimizeError(f"{where}: {exc.message}") from None
        return decoded.inputs
    try:
        loaded = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise OptimizeError(f"{where} is not a numpy file: {exc}") from None
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise OptimizeError(
                f"{where} holds one array but the model has inputs {names}: use an .npz "
                "file with one array per input name"
            )
        arrays = {names[0]: loaded}
    else:
        with loaded:
            arrays = {key: loaded[key] for key in loaded.files}
    missing = [name for name in names if name not in arrays]
    if missing:
        raise OptimizeError(
            f"{where} lacks the model's input(s) {missing} (it holds {sorted(arrays)}; "
            f"the model expects {names})"
        )
    checked = {}
    for name in names:
        spec = signature.inputs[name]
        array = arrays[name]
        if array.dtype != spec.dtype:
            # float64 (numpy's default) to float32 is fine; integers or strings for a float
            # input usually mean unscaled or wrong data, so they are refused, as the
            # server refuses a dtype that differs from the signature.
            if not (array.dtype.kind == "f" and spec.dtype.kind == "f"):
                raise OptimizeError(
                    f"{where}: input '{name}' has dtype {array.dtype}; the model expects "
                    f"{spec.dtype}"
                )
            array = array.astype(spec.dtype)
        try:
            spec.check(array)
        except FerryError as exc:
            raise OptimizeError(f"{where}: {exc.message}") from None
        checked[name] = array
    rows = {a.shape[0] for a in checked.values() if a.ndim}
    if len(rows) > 1:
        raise OptimizeError(f"{where}: inputs have different numbers of rows {sorted(rows)}")
    return checked


def _split(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    rows = min((a.shape[0] for a in arrays.values() if a.ndim), default=1)
    return [
        {name: a[start : start + _BATCH_ROWS] for name, a in arrays.items()}
        for start in range(0, rows, _BATCH_ROWS)
    ]


def read_labels(path: Path) -> np.ndarray:
    """Class labels: a `.npy` array of class indices, or one-hot rows (argmax taken)."""
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise OptimizeError(f"labels file {path} is not a numpy .npy file: {exc}") from None
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    if labels.ndim != 1:
        raise OptimizeError(f"labels must be one class index per row; got shape {labels.shape}")
    return labels.astype(np.int64)


# --- comparing ------------------------------------------------------------------------


def session(model_file: Path, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(
        str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
    )


def latency_ms(
    run: Callable[[dict[str, np.ndarray]], Any],
    inputs: dict[str, np.ndarray],
    seconds: float = 0.3,
) -> float:
    """Median milliseconds of `run(inputs)`, repeated for about `seconds` after a warm-up."""
    return paired_latency_ms([run], inputs, seconds)[0]


def paired_latency_ms(
    runs: list[Callable[[dict[str, np.ndarray]], Any]],
    inputs: dict[str, np.ndarray],
    seconds: float = 0.3,
) -> list[float]:
    """Median milliseconds per call of each of `runs` on `inputs`, measured in turns for
    about `seconds` each after a warm-up; NaN for a run that fails on these inputs.

    In turns, because on a shared machine the load drifts by 10 % and more within a
    second: timed one after the other, two equal models differ by that drift, and a
    gate on their ratio refuses by chance. Each sample times a group of calls lasting
    about `GROUP_SECONDS`, because a model of a few microseconds is otherwise measured
    at the timer's and the scheduler's resolution."""
    working: list[int] = []
    for index, run in enumerate(runs):
        try:
            run(inputs)
            working.append(index)
        except Exception:
            continue
    results = [float("nan")] * len(runs)
    if not working:
        return results
    group = {index: _group_size(runs[index], inputs) for index in working}
    times: dict[int, list[float]] = {index: [] for index in working}
    deadline = time.perf_counter() + seconds * len(working)
    while time.perf_counter() < deadline or len(times[working[-1]]) < 5:
        for index in working:
            run, calls = runs[index], group[index]
            start = time.perf_counter()
            for _ in range(calls):
                run(inputs)
            times[index].append((time.perf_counter() - start) / calls)
    for index in working:
        results[index] = statistics.median(times[index]) * 1000
    return results


# How long one timed sample lasts at least (see paired_latency_ms).
GROUP_SECONDS = 0.002


def _group_size(run: Callable[[dict[str, np.ndarray]], Any], inputs: dict[str, np.ndarray]) -> int:
    """How many calls of `run` last about GROUP_SECONDS (at least one)."""
    start = time.perf_counter()
    run(inputs)
    once = time.perf_counter() - start
    return max(1, min(1000, int(GROUP_SECONDS / max(once, 1e-7))))


def rows_of(batch: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """`rows` rows built from the batch's first row (so any batch measures any size)."""
    return {name: np.repeat(a[:1], rows, axis=0) if a.ndim else a for name, a in batch.items()}


def compare(
    original: Path,
    candidate: Path,
    batches: list[dict[str, np.ndarray]],
    labels: np.ndarray | None,
    progress: Progress = _no_progress,
    candidate_label: str = "candidate",
    latency_seconds: float = 0.3,
) -> tuple[VariantReport, VariantReport]:
    """Run every batch through both models and measure them the same way."""
    before, after = session(original), session(candidate)
    names = [o.name for o in before.get_outputs()]
    if [o.name for o in after.get_outputs()] != names:
        raise OptimizeError("the candidate's outputs differ in name from the original's")
    first: dict[str, list[np.ndarray]] = {"original": [], "candidate": []}
    max_diff, total_diff, count = 0.0, 0.0, 0
    for batch in progress("evaluating", batches, len(batches)):
        want = before.run(names, batch)
        got = after.run(names, batch)
        first["original"].append(want[0])
        first["candidate"].append(got[0])
        for a, b in zip(want, got, strict=True):
            if a.dtype.kind in "fc":
                difference = np.abs(a.astype(np.float64) - b.astype(np.float64))
                if difference.size:
                    max_diff = max(max_diff, float(difference.max()))
                    total_diff += float(difference.sum())
                    count += difference.size
    accuracies: dict[str, float | None] = {"original": None, "candidate": None}
    if labels is not None:
        for key, parts in first.items():
            predicted = np.concatenate(parts).reshape(len(labels), -1).argmax(axis=1)
            accuracies[key] = float(np.mean(predicted == labels))
    probe = batches[0]

    def runner(sess: ort.InferenceSession) -> Callable[[dict[str, np.ndarray]], Any]:
        return lambda inputs: sess.run(names, inputs)

    timed = [runner(before), runner(after)]
    batch1 = paired_latency_ms(timed, rows_of(probe, 1), latency_seconds)
    batch64 = paired_latency_ms(timed, rows_of(probe, 64), latency_seconds)
    reports = []
    for index, (key, path) in enumerate((("original", original), ("candidate", candidate))):
        report = VariantReport(
            label=key if key == "original" else candidate_label,
            size_bytes=path.stat().st_size,
            latency_ms_batch1=batch1[index],
            latency_ms_batch64=batch64[index],
            accuracy=accuracies[key],
        )
        if key == "candidate":
            report.max_abs_diff = max_diff
            report.mean_abs_diff = total_diff / count if count else 0.0
        reports.append(report)
    return reports[0], reports[1]


def check_gates(
    original: VariantReport,
    candidate: VariantReport,
    max_accuracy_drop: float | None,
    max_abs_diff: float | None,
) -> None:
    """Raise OptimizeError, with the measured numbers, when the candidate is worse than
    allowed. `max_accuracy_drop` is in percentage points."""
    problems = []
    if max_accuracy_drop is not None:
        if original.accuracy is None or candidate.accuracy is None:
            raise OptimizeError("--max-accuracy-drop needs --eval data with --labels")
        drop = (original.accuracy - candidate.accuracy) * 100
        if drop > max_accuracy_drop:
            problems.append(
                f"accuracy drops {drop:.2f} pp ({original.accuracy:.2%} -> "
                f"{candidate.accuracy:.2%}), more than the allowed {max_accuracy_drop:g} pp"
            )
    if max_abs_diff is not None and candidate.max_abs_diff > max_abs_diff:
        problems.append(
            f"outputs differ by up to {candidate.max_abs_diff:.4g} (mean "
            f"{candidate.mean_abs_diff:.4g}), more than the allowed {max_abs_diff:g}"
        )
    if problems:
        raise OptimizeError(f"refused the {candidate.label} candidate: " + "; ".join(problems))


# Ops that only a quantized graph holds (onnxruntime's dynamic and QDQ/QOperator formats).
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "QLinearMatMul",
        "QLinearConv",
        "QGemm",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
    }
)


def quantized_evidence(version_dir: Path, model: onnx.ModelProto) -> str | None:
    """Why `version_dir`'s model is already lower-precision (None: it is not): its
    optimize.json provenance, quantized ops, or float16 weights."""
    report = version_dir / REPORT_FILE
    if report.is_file():
        try:
            provenance = json.loads(report.read_text())
        except (OSError, ValueError):
            provenance = {}
        if isinstance(provenance, dict) and provenance.get("precision"):
            return (
                f"its {REPORT_FILE} says it is the {provenance['precision']} variant of "
                f"{provenance.get('source', 'another version')}"
            )
    ops = sorted({node.op_type for node in model.graph.node} & QUANTIZED_OPS)
    if ops:
        return f"its graph holds quantized ops ({', '.join(ops)})"
    halves = sum(
        1 for init in model.graph.initializer if init.data_type == onnx.TensorProto.FLOAT16
    )
    if halves and float_weight_count(model) == 0:
        return f"its weights are float16 ({halves} float16 initializers)"
    return None


def check_source(version_dir: Path, source: Path, precision: str) -> None:
    """Refuse to lower the precision of a version that already is lower-precision:
    quantizing int8 weights again (or fp16 on int8) adds conversions and loses accuracy
    for no gain in size. Raises OptimizeError naming the evidence."""
    evidence = quantized_evidence(version_dir, onnx.load(str(source), load_external_data=False))
    if evidence is not None:
        raise OptimizeError(
            f"refused: {version_dir} is already a lower-precision version ({evidence}); "
            f"build the {precision} variant from the float32 version instead, or pass --force"
        )


def check_gains(
    original: VariantReport, candidate: VariantReport, max_slowdown_percent: float
) -> None:
    """Refuse a candidate that is larger than its source, or slower by more than
    `max_slowdown_percent` at any batch size measured on both, with the numbers: a
    variant that costs more than the original is never worth publishing (a polling
    server would swap to it)."""
    problems = []
    if candidate.size_bytes > original.size_bytes:
        ratio = candidate.size_bytes / original.size_bytes
        problems.append(
            f"it is larger: {candidate.size_bytes} bytes, {ratio:.2f}x the original's "
            f"{original.size_bytes}"
        )
    for rows, before, after in (
        (1, original.latency_ms_batch1, candidate.latency_ms_batch1),
        (64, original.latency_ms_batch64, candidate.latency_ms_batch64),
    ):
        if math.isnan(before) or math.isnan(after) or before <= 0:
            continue
        slowdown = (after / before - 1) * 100
        if slowdown > max_slowdown_percent:
            problems.append(
                f"it is slower at batch {rows}: {after:.3f} ms vs {before:.3f} ms "
                f"({after / before:.2f}x, more than the allowed {max_slowdown_percent:g} %)"
            )
    if problems:
        raise OptimizeError(
            f"refused the {candidate.label} candidate: "
            + "; ".join(problems)
            + " (--force publishes it anyway)"
        )


# --- the whole command ----------------------------------------------------------------


def optimize(
    model_path: Path,
    precision: str,
    output: Path | None = None,
    calibration: Path | None = None,
    eval_data: Path | None = None,
    labels: Path | None = None,
    max_accuracy_drop: float | None = None,
    max_abs_diff: float | None = None,
    progress: Progress = _no_progress,
    on_report: Callable[[OptimizeResult], None] | None = None,
    force: bool = False,
    max_slowdown_percent: float = DEFAULT_MAX_SLOWDOWN_PERCENT,
) -> OptimizeResult:
    """Build, compare, gate and write the `precision` variant of an ONNX version.

    Writes a new version of the same model (the next number) unless `output` names a
    folder (which must not exist yet, or be empty). `on_report` sees the measurements
    before the gates run, so a refused candidate's table is still shown. Unless `force`,
    a source that is already lower-precision and a candidate larger or slower than its
    source (`check_source`, `check_gains`) are refused. Raises
    OptimizeError for bad input and refused candidates; nothing is left in the model
    folder (or `output`) then.
    """
    if precision not in PRECISIONS:
        raise OptimizeError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)}")
    if labels is not None and eval_data is None:
        raise OptimizeError("--labels label the --eval inputs: give --eval too")
    if max_accuracy_drop is not None and labels is None:
        raise OptimizeError("--max-accuracy-drop needs --eval data with --labels")
    if calibration is not None and precision != "int8-static":
        raise OptimizeError(f"--calibration is for int8-static; {precision} needs no data")
    if output is not None and output.exists() and any(output.iterdir()):
        raise OptimizeError(f"{output} exists and is not empty")
    model_dir, version_dir = resolve_version(model_path)
    source = onnx_model_file(version_dir)
    if not force:
        check_source(version_dir, source, precision)
    signature = model_signature(source)
    calibration_batches = None
    if precision == "int8-static":
        if calibration is None:
            raise OptimizeError("int8-static needs calibration data (--calibration PATH)")
        calibration_batches = read_input_batches(calibration, signature, "calibration")
    if eval_data is not None:
        eval_batches = read_input_batches(eval_data, signature, "eval")
    else:
        eval_batches = _split(generated_inputs(signature, rows=256))
    label_array = read_labels(labels) if labels is not None else None
    if label_array is not None:
        rows = sum(next(iter(b.values())).shape[0] for b in eval_batches)
        if rows != len(label_array):
            raise OptimizeError(f"--labels has {len(label_array)} labels for {rows} eval rows")

    with tempfile.TemporaryDirectory(prefix="ferry-optimize-") as scratch:
        candidate = Path(scratch) / "model.onnx"
        build_variant(source, candidate, precision, calibration_batches, progress)
        original_report, candidate_report = compare(
            source, candidate, eval_batches, label_array, progress, candidate_label=precision
        )
        result = OptimizeResult(original_report, candidate_report)
        if on_report is not None:
            on_report(result)
        check_gates(original_report, candidate_report, max_accuracy_drop, max_abs_diff)
        if not force:
            check_gains(original_report, candidate_report, max_slowdown_percent)
        result.written = _publish(
            candidate, version_dir, model_dir, output, precision, result, source
        )
    return result


def _publish(
    candidate: Path,
    version_dir: Path,
    model_dir: Path,
    output: Path | None,
    precision: str,
    result: OptimizeResult,
    source: Path,
) -> Path:
    """Stage the candidate with its signature and provenance, then rename it into place."""
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        parent, target = output.parent, output
    else:
        parent, target = model_dir, model_dir / str(next_version(model_dir))
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{target.name}-", dir=parent))
    try:
        shutil.copy2(candidate, staging / "model.onnx")
        for name in _CARRIED_OVER:
            item = version_dir / name
            if item.is_dir():
                shutil.copytree(item, staging / name)
            elif item.is_file():
                shutil.copy2(item, staging / name)
        record_signature(staging)
        provenance = {
            "source": str(source),
            "precision": precision,
            "original": asdict(result.original),
            "candidate": asdict(result.candidate),
        }
        (staging / REPORT_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
        if target.exists():  # an empty -o folder
            target.rmdir()
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


__all__ = [
    "PRECISIONS",
    "SIGNATURE_FILE",
    "OptimizeError",
    "OptimizeResult",
    "VariantReport",
    "build_variant",
    "compare",
    "optimize",
    "read_input_batches",
]
