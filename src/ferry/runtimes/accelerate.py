"""`accelerate = "onnx"`: serve a framework model through onnxruntime when that is safe.

The model's runtime exports itself to ONNX (`Runtime.export_onnx`) once; the file is
cached in the version folder under `.ferry/` (the watcher ignores that folder, so the
cache never looks like a changed version). The ONNX model is then checked against the
original on generated inputs: only when every output matches within the tolerance does
it serve. Otherwise, or when the export fails, the original runtime serves and the log
says why. Acceleration never turns a loadable model into a failed load.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ferry.runtimes.base import Runtime, RuntimeOptions
from ferry.runtimes.conversion_cache import conversion_dir
from ferry.runtimes.onnx import OnnxRuntime
from ferry.tensors import DEFAULT_SIGNATURE
from ferry.warmup import generated_inputs

log = logging.getLogger(__name__)

ACCELERATED_FILE = "accelerated.onnx"


def accelerate_onnx(runtime: Runtime, options: RuntimeOptions, tolerance: float) -> Runtime:
    """The ONNX version of a loaded `runtime` if it exports and matches, else `runtime`."""
    if isinstance(runtime, OnnxRuntime):
        return runtime
    where = f"{runtime.version_dir} ({runtime.format_name})"
    if set(runtime.signatures) != {DEFAULT_SIGNATURE}:
        log.warning(
            "accelerate: %s has signatures %s; only a single serving_default "
            "signature is converted, serving the original",
            where,
            sorted(runtime.signatures),
        )
        return runtime
    cached = conversion_dir(runtime.version_dir, ACCELERATED_FILE) / ACCELERATED_FILE
    try:
        if not cached.is_file():
            _export(runtime, cached)
        candidate = OnnxRuntime(runtime.version_dir, options, model_file=cached)
        candidate.load()
    except Exception as exc:
        log.warning(
            "accelerate: %s could not be converted to ONNX, serving the original: %s: %s",
            where,
            type(exc).__name__,
            exc,
        )
        return runtime
    try:
        problem = _mismatch(runtime, candidate, tolerance)
    except Exception as exc:  # e.g. the export declares other dtypes: not a load failure
        problem = f"comparing outputs failed: {type(exc).__name__}: {exc}"
    if problem:
        candidate.unload()
        log.warning(
            "accelerate: %s ONNX export differs from the original (%s), serving the original",
            where,
            problem,
        )
        return runtime
    log.info(
        "accelerate: %s serves through onnxruntime (outputs match within %g)", where, tolerance
    )
    runtime.unload()
    return candidate


def _export(runtime: Runtime, target: Path) -> None:
    """Export to a temporary name and rename, so a crash never leaves a half file cached."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        runtime.export_onnx(staging)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


def _mismatch(original: Runtime, candidate: OnnxRuntime, tolerance: float) -> str:
    """'' when the candidate has the same signature and matching outputs, else the reason."""
    want = original.signatures[DEFAULT_SIGNATURE]
    got = candidate.signatures[DEFAULT_SIGNATURE]
    if set(want.inputs) != set(got.inputs) or set(want.outputs) != set(got.outputs):
        return (
            f"names differ: inputs {sorted(got.inputs)} vs {sorted(want.inputs)}, "
            f"outputs {sorted(got.outputs)} vs {sorted(want.outputs)}"
        )
    inputs = generated_inputs(want, rows=3)
    expected = original.run(DEFAULT_SIGNATURE, inputs)
    actual = candidate.run(DEFAULT_SIGNATURE, inputs)
    for name, value in expected.items():
        other = actual[name]
        if other.shape != value.shape:
            return f"output {name} has shape {other.shape}, expected {value.shape}"
        if value.dtype.kind in "fc":
            difference = float(np.max(np.abs(other.astype(np.float64) - value)))
            if difference > tolerance:
                return f"output {name} differs by up to {difference:.3g}"
        elif not np.array_equal(other, value):
            return f"output {name} differs"
    return ""
