"""`precision = "fp16" | "int8"` in a model's ferry.toml: serve a lower-precision variant.

How the option is honoured depends on what onnxruntime can use on this machine
(`execution_plan`, a pure function so the choice is testable without a GPU):

* TensorRT execution provider available: the original ONNX model is handed to TensorRT
  with `trt_fp16_enable` (fp16) or `trt_int8_enable` + `trt_fp16_enable` (int8), CUDA and
  CPU as fallbacks for unsupported nodes. TensorRT builds its engine on the first run
  and caches it under the version's `.ferry/tensorrt/`. int8 is accurate only with a
  Q/DQ model (`ferry optimize --precision int8-static`); TensorRT keeps other layers in
  fp16. fp8: TensorRT runs FP8 Q/DQ models on Hopper-class GPUs as given; ferry does
  not make them.
* CUDA execution provider only: fp16 serves the float16 variant on CUDA; int8 serves
  the int8 variant on the CPU (CUDA has no int8 kernels for these ops).
* CPU only: the variant built by ferry.convert.optimize.build_variant (fp16 through the
  float16 converter, int8 through dynamic quantization, which needs no calibration data).

A variant is built once and cached under the version folder's `.ferry/` (written to a
temporary name and renamed, so a crash never leaves half a file; the watcher ignores
`.ferry/`, so the cache never looks like a changed version). Like `accelerate`, a
precision that cannot be honoured (not an ONNX model, no float weights) logs why and
serves the original: the option never turns a loadable model into a failed load.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ferry.runtimes.base import Runtime, RuntimeOptions
from ferry.runtimes.conversion_cache import conversion_dir
from ferry.runtimes.onnx import OnnxRuntime

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# An onnxruntime provider: its name, or its name and its options.
Provider = str | tuple[str, dict[str, str]]
# ferry's precision names for the variants ferry.convert.optimize builds.
_VARIANT_FOR = {"fp16": "fp16", "int8": "int8"}


@dataclass(frozen=True)
class ExecutionPlan:
    """Which model file to build (None: the original) and which providers run it."""

    variant: str | None
    providers: list[Provider]


def execution_plan(precision: str, available: list[str], cache_dir: Path) -> ExecutionPlan:
    """How to serve `precision` given onnxruntime's `available` providers."""
    if TENSORRT in available:
        options = {
            "trt_fp16_enable": "True",
            "trt_int8_enable": "True" if precision == "int8" else "False",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache_dir / "tensorrt"),
        }
        fallbacks: list[str | tuple[str, dict[str, str]]] = (
            [CUDA, CPU] if CUDA in available else [CPU]
        )
        return ExecutionPlan(None, [(TENSORRT, options), *fallbacks])
    if CUDA in available and precision == "fp16":
        return ExecutionPlan("fp16", [CUDA, CPU])
    return ExecutionPlan(_VARIANT_FOR[precision], [CPU])


def serve_precision(runtime: Runtime, options: RuntimeOptions, precision: str) -> Runtime:
    """The runtime to serve for `precision`: a loaded variant (the original is unloaded), or
    `runtime` itself for "", "fp32", a non-ONNX model, or a variant that cannot be built."""
    if precision in ("", "fp32"):
        return runtime
    where = f"{runtime.version_dir} ({runtime.format_name})"
    if not isinstance(runtime, OnnxRuntime) or runtime.model_file is None:
        log.warning(
            'precision %s: %s is not served through onnxruntime (set accelerate = "onnx" '
            "to convert it first); serving it at its own precision",
            precision,
            where,
        )
        return runtime
    import onnxruntime as ort

    cache_dir = conversion_dir(runtime.version_dir)
    plan = execution_plan(precision, ort.get_available_providers(), cache_dir)
    try:
        model_file = runtime.model_file
        if plan.variant is not None:
            model_file = cache_dir / f"model.{plan.variant}.onnx"
            if not model_file.is_file():
                _build(runtime.model_file, model_file, plan.variant)
        else:
            (cache_dir / "tensorrt").mkdir(parents=True, exist_ok=True)
        candidate = OnnxRuntime(
            runtime.version_dir, options, model_file=model_file, providers=plan.providers
        )
        candidate.model_options = runtime.model_options
        candidate.load()
    except Exception as exc:
        log.warning(
            "precision %s: %s could not be served at that precision, serving the original: %s: %s",
            precision,
            where,
            type(exc).__name__,
            exc,
        )
        return runtime
    log.info(
        "precision %s: %s serves %s on %s",
        precision,
        where,
        model_file.name,
        ", ".join(candidate.active_providers),
    )
    runtime.unload()
    return candidate


def _build(source: Path, target: Path, variant: str) -> None:
    """Build into a temporary name and rename, so the cache never holds half a file."""
    from ferry.convert.optimize import build_variant

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        build_variant(source, staging, variant)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
