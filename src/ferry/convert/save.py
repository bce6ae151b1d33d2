"""`ferry save`: write a trained model as the next version of a model folder.

One entry point for every framework. A `Saver` per framework (one module each) knows
how to recognise its models (an in-memory object or a path) and write them into a
folder; this module picks the saver, writes into a staging folder beside the versions,
checks that ferry can load the result (and records its signature in
`signature.json`), then renames it into place. The rename is atomic, so a polling
server never sees half a version, and a model that does not load is never published.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ferry.runtimes import RuntimeOptions, runtime_for
from ferry.tensors import tf_dtype_name

SIGNATURE_FILE = "signature.json"

# Saver modules, imported only when needed so that saving a scikit-learn model never
# imports TensorFlow. Each module defines SAVERS: list[Saver]; earlier entries win.
SAVER_MODULES = (
    "ferry.convert.onnx_saver",
    "ferry.convert.torch_saver",
    "ferry.convert.sklearn_saver",
    # Keras before TensorFlow: a Keras model is also a TensorFlow trackable object.
    "ferry.convert.keras_saver",
    "ferry.convert.tensorflow_saver",
)


class SaveError(ValueError):
    """The model cannot be saved as asked; the message says why and what would work."""


class Saver(ABC):
    """Saves models of one framework."""

    #: Framework name, as printed and as accepted by `--framework`.
    name: str = ""
    #: Formats this saver can write; the first is the default.
    formats: tuple[str, ...] = ()

    @abstractmethod
    def accepts(self, model: Any) -> bool:
        """True for models (objects or paths) of this framework. Must not import the
        framework unless the object's type already comes from it."""

    @abstractmethod
    def write(self, model: Any, folder: Path, format: str, example: Any | None) -> None:
        """Write the model's files into the empty `folder` in `format`."""


def savers() -> list[Saver]:
    found: list[Saver] = []
    for module_name in SAVER_MODULES:
        module = importlib.import_module(module_name)
        found.extend(module.SAVERS)
    return found


def save(
    model: Any,
    model_dir: str | os.PathLike[str],
    example: Any | None = None,
    version: int | None = None,
    format: str | None = None,
) -> Path:
    """Save `model` as version `version` (default: the next one) of `model_dir`.

    `model` is a framework object or a path to a saved model; `example` is an example
    input for frameworks that need one to trace (PyTorch); `format` picks the file
    format where several fit. Returns the new version folder.
    """
    model_dir = Path(model_dir)
    saver = _saver_for(model)
    chosen = format or saver.formats[0]
    if chosen not in saver.formats:
        raise SaveError(
            f"{saver.name} models can be saved as {', '.join(saver.formats)}, not {chosen!r}"
        )
    model_dir.mkdir(parents=True, exist_ok=True)
    number = version if version is not None else next_version(model_dir)
    target = model_dir / str(number)
    if target.exists():
        raise SaveError(f"{target} already exists; versions are never overwritten")
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{number}-", dir=model_dir))
    try:
        saver.write(model, staging, chosen, example)
        record_signature(staging)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def next_version(model_dir: Path) -> int:
    """One more than the highest integer version folder (1 for an empty folder)."""
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def record_signature(folder: Path) -> dict[str, Any]:
    """Load the saved model with ferry's own runtime and write its signatures to
    `signature.json`; raises SaveError when ferry cannot load what was written."""
    try:
        runtime = runtime_for(folder, RuntimeOptions(intra_op_threads=1))
        runtime.load()
    except Exception as exc:
        raise SaveError(f"the saved model does not load: {type(exc).__name__}: {exc}") from exc
    try:
        description = {
            "format": runtime.format_name,
            "signatures": {
                name: {
                    "inputs": {n: _spec_json(s) for n, s in sig.inputs.items()},
                    "outputs": {n: _spec_json(s) for n, s in sig.outputs.items()},
                    "method_name": sig.method_name,
                }
                for name, sig in runtime.signatures.items()
            },
        }
    finally:
        runtime.unload()
    (folder / SIGNATURE_FILE).write_text(json.dumps(description, indent=2) + "\n")
    return description


def _spec_json(spec: Any) -> dict[str, Any]:
    return {"dtype": tf_dtype_name(spec.dtype), "shape": list(spec.shape or [])}


def _saver_for(model: Any) -> Saver:
    candidates = savers()
    for saver in candidates:
        if saver.accepts(model):
            return saver
    kinds = ", ".join(s.name for s in candidates)
    what = model if isinstance(model, str | os.PathLike) else type(model).__name__
    raise SaveError(f"cannot tell which framework {what!r} belongs to (ferry saves: {kinds})")
