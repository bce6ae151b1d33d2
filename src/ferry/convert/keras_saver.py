"""Saving Keras models: Keras 3 model objects, and `.keras`/`.h5` files or architecture +
weights pairs given as paths.

Formats: `savedmodel` (one `serving_default` signature whose input and output names
are the Keras model's own, unlike `model.export()`, which names outputs `output_0` and
adds a second `serve` signature), `keras` (`model.keras`; for paths, the files as they
are), `onnx` (tf2onnx, same names) and `tflite` (through a SavedModel).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ferry.convert.save import SaveError, Saver
from ferry.convert.tensorflow_saver import (
    is_saved_model_dir,
    saved_model_to_onnx,
    saved_model_to_tflite,
)
from ferry.runtimes.keras import (
    find_keras_files,
    keras_signature,
    load_keras_model,
    named_call,
)
from ferry.runtimes.optional import import_framework
from ferry.runtimes.tensorflow import EXTRA, import_tensorflow
from ferry.tensors import DEFAULT_SIGNATURE, STRING_DTYPE

KERAS_FILE = "model.keras"
# What to give `ferry save` instead of a file without a model (a weights-only .h5).
_WHOLE_MODEL_HINT = (
    "save the whole model with model.save('model.keras'), or give the architecture "
    "(model.json from model.to_json()) with the weights file beside it"
)
_MODEL_CLASSES = ("Model", "Sequential", "Functional")


def export_saved_model(model: Any, folder: Path) -> None:
    """Write `model` as a SavedModel with one `serving_default` signature, named as the
    Keras model names its inputs and outputs."""
    tf = import_tensorflow("Keras")
    keras = import_framework("keras", EXTRA, "Keras")
    signature = keras_signature(model)
    call = named_call(model, signature)
    names = list(signature.inputs)
    specs = [
        tf.TensorSpec(
            [None if d == -1 else d for d in spec.shape or ()],
            tf.string if spec.dtype == STRING_DTYPE else tf.as_dtype(spec.dtype),
            name=name,
        )
        for name, spec in signature.inputs.items()
    ]

    def serve(*args: Any) -> dict[str, Any]:
        return call(**dict(zip(names, args, strict=True)))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(DEFAULT_SIGNATURE, serve, input_signature=specs)
    archive.write_out(str(folder), verbose=False)


class KerasSaver(Saver):
    """Keras model objects (Keras 3, or tf_keras) and Keras files given as paths."""

    name = "keras"
    formats = ("savedmodel", "keras", "onnx", "tflite")

    def accepts(self, model: Any) -> bool:
        if isinstance(model, str | Path):
            return _keras_files(Path(model)) is not None
        return any(
            cls.__module__.startswith(("keras", "tf_keras")) and cls.__name__ in _MODEL_CLASSES
            for cls in type(model).__mro__
        )

    def write(self, model: Any, folder: Path, format: str, example: Any | None) -> None:
        if isinstance(model, str | Path):
            found = _keras_files(Path(model))
            assert found is not None  # accepts() said so
            if format == "keras":
                # The user's files as they are (a .h5 stays .h5, a json + weights pair stays).
                model_file, weights = found
                if weights is None:
                    shutil.copyfile(model_file, folder / model_file.name)
                else:  # the runtime looks for model.json / model.yaml by name
                    shutil.copyfile(model_file, folder / f"model{model_file.suffix}")
                    shutil.copyfile(weights, folder / weights.name)
                return
            keras = import_framework("keras", EXTRA, "Keras")
            try:
                model = load_keras_model(keras, *found)
            except ValueError as exc:  # Keras' and ferry's words for a file with no model
                raise SaveError(f"{_first_line(exc)}; {_WHOLE_MODEL_HINT}") from None
        if format == "keras":
            model.save(str(folder / KERAS_FILE))
        elif format == "savedmodel":
            export_saved_model(model, folder)
        else:
            with tempfile.TemporaryDirectory(prefix="ferry-savedmodel-") as scratch:
                export_saved_model(model, Path(scratch))
                if format == "onnx":
                    saved_model_to_onnx(Path(scratch), folder)
                else:
                    saved_model_to_tflite(Path(scratch), folder)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _keras_files(path: Path) -> tuple[Path, Path | None] | None:
    """The Keras files a path names: a `.keras`/`.h5` file, an architecture file (its
    weights beside it), or a folder holding either; None when it is not Keras."""
    try:
        if path.is_dir():
            return None if is_saved_model_dir(path) else find_keras_files(path)
        if path.suffix == ".keras" or (path.suffix == ".h5" and path.is_file()):
            return path, None
        if path.suffix in (".json", ".yaml", ".yml") and path.is_file():
            h5_files = sorted(path.parent.glob("*.h5"))
            weights = [p for p in h5_files if p.name.endswith(".weights.h5")] or h5_files
            return (path, weights[0]) if len(weights) == 1 else None
    except ValueError as exc:
        raise SaveError(str(exc)) from None
    return None


SAVERS: list[Saver] = [KerasSaver()]
