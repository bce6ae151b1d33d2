"""Model runtimes, one module per model format, and the choice of runtime for a folder."""

from __future__ import annotations

from pathlib import Path

from ferry.consent import ModelConsent
from ferry.model_options import ModelOptions
from ferry.runtimes.base import Runtime, RuntimeOptions
from ferry.runtimes.keras import KerasRuntime
from ferry.runtimes.onnx import OnnxRuntime
from ferry.runtimes.python import PythonRuntime
from ferry.runtimes.sklearn_pickle import SklearnPickleRuntime
from ferry.runtimes.tensorflow import TensorFlowRuntime
from ferry.runtimes.tflite import TFLiteRuntime
from ferry.runtimes.torch import TorchRuntime

# Checked in order; the first runtime that recognises a version folder loads it.
# A `model.py` comes first: it says "this folder is custom code", typically wrapping a
# model file of another format that sits beside it (a folder without one is unaffected).
RUNTIMES: list[type[Runtime]] = [
    PythonRuntime,
    OnnxRuntime,
    TensorFlowRuntime,
    KerasRuntime,
    TFLiteRuntime,
    TorchRuntime,
    SklearnPickleRuntime,
]


def runtime_for(
    version_dir: Path,
    options: RuntimeOptions,
    platform: str = "",
    model_options: ModelOptions | None = None,
    consent: ModelConsent | None = None,
) -> Runtime:
    """A runtime (not yet loaded) for the model in `version_dir`.

    `platform` (a config's `model_platform`) restricts the choice when given;
    `model_options` are the model's `ferry.toml` settings; `consent` is what the operator
    allows the model to run or unpickle (default: nothing).
    Raises FileNotFoundError naming the formats looked for when nothing matches.
    """
    candidates = [r for r in RUNTIMES if not platform or platform.lower() in r.platforms]
    if options.prefer_tflite_model and {TFLiteRuntime, TensorFlowRuntime} <= set(candidates):
        # TF Serving's --prefer_tflite_model: a SavedModel folder's model.tflite wins.
        candidates.remove(TFLiteRuntime)
        candidates.insert(candidates.index(TensorFlowRuntime), TFLiteRuntime)
    if not candidates:
        known = sorted(p for r in RUNTIMES for p in r.platforms)
        raise ValueError(f"unknown model_platform {platform!r}; ferry serves {known}")
    for runtime_class in candidates:
        if runtime_class.can_load(version_dir):
            runtime = runtime_class(version_dir, options)
            runtime.model_options = model_options or ModelOptions()
            runtime.consent = consent or ModelConsent()
            return runtime
    formats = ", ".join(r.format_name for r in candidates)
    raise FileNotFoundError(f"no servable model found in {version_dir} (formats: {formats})")


__all__ = ["RUNTIMES", "Runtime", "RuntimeOptions", "runtime_for"]
