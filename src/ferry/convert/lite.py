"""`ferry lite`: a lite model for devices from a model version, checked before it is kept.

* `.tflite` from a TensorFlow SavedModel (the version folder holds `saved_model.pb`) or
  a Keras `.keras` file, through `tf.lite.TFLiteConverter`, optionally with the
  converter's post-training quantization (`dynamic`: int8 weights; `fp16`: float16
  weights; `int8`: weights and activations, calibrated on `--representative-data`).
* `.ort` from an ONNX model, through onnxruntime's ORT-format tool
  (`onnxruntime.tools.convert_onnx_models_to_ort`), for onnxruntime's mobile builds.
  Quantize first with `ferry optimize`, then convert that version.

The lite model is written to a temporary file beside the output, run through
`ferry.edge` on generated (or given) inputs and compared with the original; only a
model that matches within the tolerance is renamed to the output path. TensorFlow is
imported only for `.tflite` conversions.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferry.distribution import install_hint
from ferry.edge import EdgeSignature, load, read_inputs
from ferry.runtimes.optional import prepare_tensorflow_import

QUANTIZE_MODES = ("none", "dynamic", "int8", "fp16")
# The largest output difference the check accepts by default, per quantization mode:
# float conversions only reorder arithmetic; quantized ones round weights (and
# activations for int8).
DEFAULT_TOLERANCE = {"none": 1e-4, "fp16": 1e-2, "dynamic": 5e-2, "int8": 1e-1}
CHECK_ROWS = 16


class LiteError(ValueError):
    """The conversion cannot be done or its check failed; nothing was written."""


@dataclass
class LiteReport:
    """What was written and how it compared with the original."""

    path: Path
    size_bytes: int
    source_bytes: int
    rows: int
    max_abs_diff: float
    tolerance: float
    same_class: float


def convert_lite(
    version_dir: Path,
    output: Path,
    quantize: str = "none",
    representative_data: Path | None = None,
    check_inputs: Path | None = None,
    tolerance: float | None = None,
) -> LiteReport:
    """Convert the model in `version_dir` to `output` (.tflite or .ort) and check it.

    Raises LiteError naming the problem (no model of the right kind, an option that does
    not apply, the converter's refusal, outputs that differ more than `tolerance`).
    """
    version_dir, output = Path(version_dir), Path(output)
    if quantize not in QUANTIZE_MODES:
        raise LiteError(f"--quantize must be one of {list(QUANTIZE_MODES)}")
    suffix = output.suffix.lower()
    if suffix not in (".tflite", ".ort"):
        raise LiteError(f"{output.name}: write a .tflite (TensorFlow/Keras) or .ort (ONNX) file")
    if not version_dir.is_dir():
        raise LiteError(f"{version_dir} is not a model version folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.{os.getpid()}.tmp{suffix}")
    try:
        if suffix == ".ort":
            if quantize != "none" or representative_data is not None:
                raise LiteError(
                    "--quantize and --representative-data apply to .tflite; for ONNX run "
                    "`ferry optimize --precision int8|int8-static|fp16` and convert that version"
                )
            source, reference = _onnx_source(version_dir)
            _convert_ort(source, staging)
        else:
            source, reference, converter = _tensorflow_source(version_dir)
            staging.write_bytes(
                _convert_tflite(converter, quantize, representative_data, reference)
            )
        report = _check(
            staging,
            reference,
            check_inputs,
            DEFAULT_TOLERANCE[quantize] if tolerance is None else tolerance,
        )
        report.path = output
        report.source_bytes = _size(source)
        os.replace(staging, output)
        return report
    finally:
        staging.unlink(missing_ok=True)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and ".ferry" not in p.parts)


# --- ONNX -> ORT ----------------------------------------------------------------------

Reference = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def _onnx_source(version_dir: Path) -> tuple[Path, Reference]:
    from ferry.runtimes.onnx import find_model_file

    model_file = find_model_file(version_dir)
    if model_file is None:
        raise LiteError(f"{version_dir} holds no ONNX model: .ort files are made from ONNX")
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return model_file, lambda inputs: session.run(names, inputs)


def _convert_ort(source: Path, target: Path) -> None:
    """onnxruntime's converter writes `<name>.ort` into an output folder; ferry runs it
    in a scratch folder and moves the one file to `target`."""
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    with tempfile.TemporaryDirectory(prefix="ferry-ort-") as scratch:
        copy = Path(scratch) / "in" / "model.onnx"
        copy.parent.mkdir()
        shutil.copy2(source, copy)
        chatter = io.StringIO()
        try:
            with contextlib.redirect_stdout(chatter):
                convert_onnx_models_to_ort(
                    copy,
                    output_dir=Path(scratch) / "out",
                    optimization_styles=[OptimizationStyle.Fixed],
                )
        except Exception as exc:
            raise LiteError(
                f"onnxruntime could not convert {source.name} to ORT format: {exc}"
            ) from exc
        written = sorted((Path(scratch) / "out").glob("*.ort"))
        if len(written) != 1:
            raise LiteError(f"onnxruntime's converter wrote no .ort file: {chatter.getvalue()}")
        shutil.move(written[0], target)


# --- TensorFlow/Keras -> TFLite -------------------------------------------------------


def _tensorflow_source(version_dir: Path) -> tuple[Path, Reference, Any]:
    """(source path, reference function, converter) for a SavedModel or .keras file."""
    keras_files = sorted(version_dir.glob("*.keras"))
    saved_model = (version_dir / "saved_model.pb").is_file()
    if not keras_files and not saved_model:
        raise LiteError(
            f"{version_dir} holds no TensorFlow SavedModel (saved_model.pb) or .keras file: "
            ".tflite files are made from TensorFlow/Keras models (for ONNX, write .ort)"
        )
    prepare_tensorflow_import()
    try:
        import tensorflow as tf
    except ImportError:
        hint = install_hint("tensorflow")
        raise LiteError(f".tflite conversion needs TensorFlow: {hint}") from None
    if keras_files:
        import keras

        model = keras.models.load_model(keras_files[0], compile=False)

        def run_keras(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
            names = [t.name.split(":")[0] for t in model.inputs]
            args = [inputs[n] for n in names] if len(names) > 1 else inputs[names[0]]
            result = model(args, training=False)
            if isinstance(result, dict):
                return [np.asarray(result[k]) for k in sorted(result)]
            if isinstance(result, list | tuple):
                return [np.asarray(r) for r in result]
            return [np.asarray(result)]

        return keras_files[0], run_keras, tf.lite.TFLiteConverter.from_keras_model(model)
    loaded = tf.saved_model.load(str(version_dir))
    if "serving_default" not in loaded.signatures:
        raise LiteError(f"{version_dir}: the SavedModel has no serving_default signature")
    function = loaded.signatures["serving_default"]

    def run_saved(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = function(**{k: tf.constant(v) for k, v in inputs.items()})
        return [np.asarray(result[k]) for k in sorted(result)]

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(version_dir), signature_keys=["serving_default"]
    )
    return version_dir, run_saved, converter


def _convert_tflite(
    converter: Any, quantize: str, representative_data: Path | None, reference: Reference
) -> bytes:
    import tensorflow as tf

    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        if representative_data is None:
            raise LiteError("--quantize int8 needs --representative-data (about 100-500 rows)")
        samples = _representative_samples(representative_data)
        converter.representative_dataset = lambda: iter(samples)
    elif representative_data is not None:
        raise LiteError("--representative-data is for --quantize int8")
    try:
        return converter.convert()
    except Exception as exc:
        message = str(exc).strip().splitlines()
        raise LiteError(
            "the TFLite converter cannot convert this model: " + " | ".join(message[-3:])
        ) from exc


def _representative_samples(path: Path) -> list[Any]:
    """One-row samples, as the converter's representative_dataset generator yields them."""
    files = sorted(path.glob("*.np[yz]")) if path.is_dir() else [path]
    samples: list[Any] = []
    for file in files:
        loaded = read_inputs(file, [])
        if isinstance(loaded, dict):
            rows = len(next(iter(loaded.values())))
            samples += [
                {k: np.asarray(v[i : i + 1], np.float32) for k, v in loaded.items()}
                for i in range(rows)
            ]
        else:
            array = np.asarray(loaded, np.float32)
            samples += [[array[i : i + 1]] for i in range(len(array))]
    if not samples:
        raise LiteError(f"--representative-data {path} holds no rows")
    return samples


# --- the check ------------------------------------------------------------------------


def _generated(signature: EdgeSignature, rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    inputs = {}
    for name, info in signature.inputs.items():
        shape = tuple(rows if d == -1 else d for d in (info.shape or (rows,)))
        if info.dtype.kind == "f":
            inputs[name] = rng.random(shape).astype(info.dtype)
        else:
            inputs[name] = np.zeros(shape, dtype=info.dtype)
    return inputs


def _check(
    lite_file: Path, reference: Reference, check_inputs: Path | None, tolerance: float
) -> LiteReport:
    """Run the lite model through ferry.edge and compare it with the original."""
    try:
        model = load(lite_file)
    except Exception as exc:
        raise LiteError(f"the lite model does not load: {type(exc).__name__}: {exc}") from exc
    if check_inputs is not None:
        inputs = model.signature.prepare(read_inputs(check_inputs, model.input_names))
    else:
        inputs = _generated(model.signature, CHECK_ROWS)
    got = model.predict(inputs)
    want = reference(inputs)
    got_list = [got[n] for n in sorted(got)] if len(got) > 1 else list(got.values())
    if len(got_list) != len(want):
        raise LiteError(f"the lite model has {len(got_list)} outputs, the original {len(want)}")
    max_diff, same = 0.0, []
    for a, b in zip(want, got_list, strict=True):
        if a.shape != b.shape:
            raise LiteError(f"an output has shape {b.shape}, the original {a.shape}")
        if a.dtype.kind in "fc":
            max_diff = max(max_diff, float(np.max(np.abs(a.astype(np.float64) - b))))
        if a.ndim == 2 and a.shape[1] > 1:
            same.append(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    rows = next(iter(inputs.values())).shape[0] if inputs else 0
    same_class = float(np.mean(same)) if same else 1.0
    if max_diff > tolerance:
        raise LiteError(
            f"the lite model's outputs differ from the original's by up to {max_diff:.4g} "
            f"(tolerance {tolerance:g}; same class on {same_class:.1%} of {rows} rows); "
            "nothing written"
        )
    return LiteReport(lite_file, lite_file.stat().st_size, 0, rows, max_diff, tolerance, same_class)
