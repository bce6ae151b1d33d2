"""Keras models: `.keras` files, legacy full-model `.h5` files, and architecture + weights
pairs (`model.json` or `model.yaml` with a `*.weights.h5` or `.h5` weights file).

These are the files the common training recipes leave behind (`model.save("m.keras")`,
`model.save("m.h5")`, `model.to_json()` + `model.save_weights(...)`). Keras 3 (what
TensorFlow 2.16+ ships) reads all of them; Keras 3 has no YAML support, so `model.yaml`
(written by Keras 2's `to_yaml`) is parsed here and handed to Keras as its JSON
equivalent. The model runs as a traced `tf.function` on the TensorFlow backend.

The signature is the Keras model's own: its input names, `model.output_names`, and
shapes with -1 for `None`, all under `serving_default`.

What loading runs: a Lambda layer carries its function as marshalled Python bytecode
(every Keras format stores it so), and rebuilding a functional model calls it, so a
Lambda layer is code. ferry reads the model's config first (a `.keras` file's
`config.json`, an `.h5` file's `model_config`, the JSON/YAML file) and loads a model
with a Lambda layer only when the operator allows the model's code (`--allow_code`);
every other load runs with Keras's `safe_mode=True` explicitly, so a process-wide
`keras.config.enable_unsafe_deserialization()` (say, in an allowed model.py) never
widens it.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ferry.consent import ModelConsent
from ferry.runtimes.base import Runtime, RuntimeOptions
from ferry.runtimes.optional import import_framework
from ferry.runtimes.tensorflow import (
    EXTRA,
    configure_threads,
    export_function_onnx,
    import_tensorflow,
    run_in_fixed_batches,
)
from ferry.tensors import DEFAULT_SIGNATURE, STRING_DTYPE, Signature, TensorSpec

ARCHITECTURE_FILES = ("model.json", "model.yaml", "model.yml")


def find_keras_files(version_dir: Path) -> tuple[Path, Path | None] | None:
    """(model or architecture file, weights file or None) for a Keras version folder.

    A `.keras` file wins; then an architecture file with its weights; then a single
    full-model `.h5`. None when the folder holds no Keras model, a ValueError when it is
    ambiguous (two `.keras` files, an architecture file without weights, ...).
    """
    keras_files = sorted(version_dir.glob("*.keras"))
    if len(keras_files) > 1:
        raise ValueError(f"several .keras files in {version_dir}: {[p.name for p in keras_files]}")
    if keras_files:
        return keras_files[0], None
    h5_files = sorted(version_dir.glob("*.h5"))
    architecture = next(
        (version_dir / n for n in ARCHITECTURE_FILES if (version_dir / n).is_file()), None
    )
    if architecture is not None:
        weights = [p for p in h5_files if p.name.endswith(".weights.h5")] or h5_files
        if len(weights) != 1:
            raise ValueError(
                f"{architecture.name} needs exactly one weights file (*.weights.h5 or *.h5) "
                f"beside it in {version_dir}; found {[p.name for p in weights]}"
            )
        return architecture, weights[0]
    if len(h5_files) > 1:
        raise ValueError(f"several .h5 files in {version_dir}: {[p.name for p in h5_files]}")
    return (h5_files[0], None) if h5_files else None


def load_keras_model(
    keras: ModuleType, model_file: Path, weights: Path | None, consent: ModelConsent | None = None
) -> Any:
    """The Keras model from a `.keras`/`.h5` file or an architecture + weights pair.

    Raises CodeNotAllowed for a model with Lambda layers unless `consent` allows code
    (default: nothing allowed); see the module docstring.
    """
    consent = consent or ModelConsent()
    config = keras_config(model_file)
    lambdas = lambda_layers(config)
    if lambdas:
        consent.require_code(
            f"{model_file.name} has Lambda layers ({', '.join(lambdas[:3])}), whose "
            "functions are Python bytecode that runs when the model is rebuilt"
        )
    safe_mode = not consent.code
    if weights is None:
        # compile=False: serving needs no optimizer, and custom losses need not import.
        return keras.models.load_model(str(model_file), compile=False, safe_mode=safe_mode)
    model = keras.saving.deserialize_keras_object(config, safe_mode=safe_mode)
    model.load_weights(str(weights))
    return model


def keras_config(model_file: Path) -> Any:
    """The model's architecture as plain data, read without Keras (nothing runs)."""
    if model_file.suffix == ".keras":
        try:
            with zipfile.ZipFile(model_file) as archive:
                return json.loads(archive.read("config.json"))
        except (zipfile.BadZipFile, KeyError, ValueError) as exc:
            raise ValueError(f"{model_file.name} is not a Keras archive: {exc}") from None
    if model_file.suffix == ".h5":
        h5py = import_framework("h5py", EXTRA, "Keras .h5")
        with h5py.File(model_file, "r") as file:
            text = file.attrs.get("model_config")
        if text is None:
            raise ValueError(f"{model_file.name} holds no model (weights only?)")
        return json.loads(text.decode() if isinstance(text, bytes) else text)
    text = model_file.read_text()
    if model_file.suffix in (".yaml", ".yml"):
        return _yaml_config(text)
    return json.loads(text)


def lambda_layers(config: Any) -> list[str]:
    """Names of the Lambda layers anywhere in a Keras config (nested models, wrappers),
    and of any serialized Python function (`__lambda__`), which only a Lambda holds."""
    found: list[str] = []
    pending = [config]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if item.get("class_name") in ("Lambda", "__lambda__"):
                inner = item.get("config")
                name = inner.get("name") if isinstance(inner, dict) else None
                found.append(str(name or item.get("class_name")))
                continue  # a Lambda's own function is the same finding
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return found


def _yaml_config(text: str) -> Any:
    """Keras 2's `to_yaml` output as plain data; its `!!python/tuple` tags become lists
    (the only Python tags Keras wrote), and nothing else can run code."""
    yaml = import_framework("yaml", EXTRA, "Keras model.yaml")

    class KerasYamlLoader(yaml.SafeLoader):
        pass

    KerasYamlLoader.add_constructor(
        "tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node)
    )
    return yaml.load(text, Loader=KerasYamlLoader)  # a SafeLoader subclass: runs no code


def _spec(name: str, keras_tensor: Any) -> TensorSpec:
    dtype_name = str(getattr(keras_tensor, "dtype", "float32"))
    dtype = STRING_DTYPE if dtype_name == "string" else np.dtype(dtype_name)
    shape = tuple(-1 if d is None else int(d) for d in keras_tensor.shape)
    return TensorSpec(name, dtype, shape)


def keras_signature(model: Any) -> Signature:
    """The Keras model's inputs and outputs as ferry's `serving_default` signature."""
    inputs = list(model.inputs)
    input_names = [getattr(t, "name", f"input_{i}") for i, t in enumerate(inputs)]
    output_names = list(getattr(model, "output_names", None) or [])
    outputs = list(model.outputs)
    if len(output_names) != len(outputs):
        output_names = [f"output_{i}" for i in range(len(outputs))]
    return Signature(
        inputs={n: _spec(n, t) for n, t in zip(input_names, inputs, strict=True)},
        outputs={n: _spec(n, t) for n, t in zip(output_names, outputs, strict=True)},
    )


def named_call(model: Any, signature: Signature) -> Callable[..., dict[str, Any]]:
    """A function taking the signature's inputs by name and returning its outputs by name,
    whatever the Keras model takes (one tensor, a list) and returns (tensor, list, dict).
    Traced by tf.function for serving, ONNX export and SavedModel export alike."""
    input_names, output_names = list(signature.inputs), list(signature.outputs)

    def call(**feeds: Any) -> dict[str, Any]:
        ordered = [feeds[name] for name in input_names]
        result = model(ordered[0] if len(ordered) == 1 else ordered, training=False)
        if isinstance(result, dict):
            return {name: result[name] for name in output_names}
        if isinstance(result, list | tuple):
            return dict(zip(output_names, result, strict=True))
        return {output_names[0]: result}

    return call


class KerasRuntime(Runtime):
    """A Keras model; `run` is thread-safe (a traced tf.function allows concurrent calls)."""

    format_name = "keras"
    # "tensorflow" too: TF Serving configs name the platform, not the file format.
    platforms = ("keras", "tensorflow")

    def __init__(self, version_dir: Path, options: RuntimeOptions) -> None:
        super().__init__(version_dir, options)
        self._tf: ModuleType | None = None
        self._model: Any = None
        self._function: Any = None
        self._call: Callable[..., dict[str, Any]] | None = None
        self._signatures: dict[str, Signature] = {}

    @classmethod
    def can_load(cls, version_dir: Path) -> bool:
        return (
            any(version_dir.glob("*.keras"))
            or any(version_dir.glob("*.h5"))
            or any((version_dir / n).is_file() for n in ARCHITECTURE_FILES)
        )

    def load(self) -> None:
        tf = import_tensorflow("Keras")
        keras = import_framework("keras", EXTRA, "Keras")
        configure_threads(tf, self.options)
        found = find_keras_files(self.version_dir)
        if found is None:
            raise FileNotFoundError(f"no Keras model file in {self.version_dir}")
        model = load_keras_model(keras, *found, self.consent)
        signature = keras_signature(model)
        self._tf, self._model = tf, model
        self._signatures = {DEFAULT_SIGNATURE: signature}
        self._call = named_call(model, signature)
        self._function = tf.function(self._call, reduce_retracing=True)

    @property
    def signatures(self) -> dict[str, Signature]:
        return self._signatures

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf, function = self._tf, self._function
        if tf is None or function is None:
            raise RuntimeError("model is not loaded")

        def call(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            result = function(**{name: tf.constant(array) for name, array in feeds.items()})
            return {name: value.numpy() for name, value in result.items()}

        return run_in_fixed_batches(self._signatures[signature_name], inputs, call)

    def export_onnx(self, path: Path) -> None:
        if self._tf is None or self._call is None:
            raise RuntimeError("model is not loaded")
        export_function_onnx(self._tf, self._call, self._signatures[DEFAULT_SIGNATURE], path)

    def unload(self) -> None:
        self._function = None
        self._call = None
        self._model = None
        self._tf = None
