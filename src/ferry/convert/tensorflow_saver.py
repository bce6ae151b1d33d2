"""Saving TensorFlow models: a `tf.Module` (with `tf.function` signatures) or a SavedModel
folder, written as a SavedModel (default), ONNX (tf2onnx) or TFLite (TFLiteConverter).

The writers here are shared with the Keras saver, which first turns a Keras model into
a SavedModel with exactly one `serving_default` signature.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ferry.convert.save import SaveError, Saver
from ferry.runtimes.onnx import MODEL_FILE as ONNX_FILE
from ferry.runtimes.tensorflow import SAVED_MODEL_FILES, import_tensorflow
from ferry.runtimes.tflite import MODEL_FILE as TFLITE_FILE


def is_saved_model_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in SAVED_MODEL_FILES)


def saved_model_to_onnx(saved_model: Path, folder: Path) -> None:
    """`model.onnx` from a SavedModel's `serving_default`, with the signature's tensor names
    (the same conversion `accelerate = "onnx"` runs at load)."""
    from ferry.runtimes.base import RuntimeOptions
    from ferry.runtimes.tensorflow import TensorFlowRuntime

    runtime = TensorFlowRuntime(saved_model, RuntimeOptions())
    runtime.load()
    try:
        runtime.export_onnx(folder / ONNX_FILE)
    except Exception as exc:
        raise SaveError(f"conversion to ONNX failed: {type(exc).__name__}: {exc}") from exc
    finally:
        runtime.unload()


def saved_model_to_tflite(saved_model: Path, folder: Path) -> None:
    """`model.tflite` from a SavedModel (its signature keys are kept as signature runners)."""
    tf = import_tensorflow()
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        (folder / TFLITE_FILE).write_bytes(converter.convert())
    except Exception as exc:
        raise SaveError(f"conversion to TFLite failed: {type(exc).__name__}: {exc}") from exc


def write_from_saved_model(saved_model: Path, folder: Path, format: str) -> None:
    """Write an existing SavedModel folder into `folder` in `format`."""
    if format == "savedmodel":
        shutil.copytree(saved_model, folder, dirs_exist_ok=True)
    elif format == "onnx":
        saved_model_to_onnx(saved_model, folder)
    elif format == "tflite":
        saved_model_to_tflite(saved_model, folder)
    else:  # save() checked the format against Saver.formats
        raise SaveError(f"unknown format {format!r}")


class TensorFlowSaver(Saver):
    """`tf.Module` objects and SavedModel folders (paths)."""

    name = "tensorflow"
    formats = ("savedmodel", "onnx", "tflite")

    def accepts(self, model: Any) -> bool:
        if isinstance(model, str | Path):
            return is_saved_model_dir(Path(model))
        return any(
            cls.__module__.startswith("tensorflow") and cls.__name__ in ("Module", "AutoTrackable")
            for cls in type(model).__mro__
        )

    def write(self, model: Any, folder: Path, format: str, example: Any | None) -> None:
        if isinstance(model, str | Path):
            write_from_saved_model(Path(model), folder, format)
            return
        tf = import_tensorflow()
        if format == "savedmodel":
            tf.saved_model.save(model, str(folder))
            return
        with tempfile.TemporaryDirectory(prefix="ferry-savedmodel-") as scratch:
            tf.saved_model.save(model, scratch)
            write_from_saved_model(Path(scratch), folder, format)


SAVERS: list[Saver] = [TensorFlowSaver()]
