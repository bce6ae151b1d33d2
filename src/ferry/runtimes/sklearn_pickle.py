"""Pickled scikit-learn models (`model.joblib`, `model.pkl`), only with the operator's consent.

Unpickling runs whatever code the file names, so a pickle in a model folder is a
program, not data: anyone who can write to the model repository could run code in the
server. ferry therefore refuses to load one unless the operator allows it
(`ferry serve --allow_pickle NAME`, see `ferry.consent`); the load error names the flag.
The safer route is `ferry save`, which converts an estimator to ONNX.

Signature: `signature.json` when present, else from the estimator: one input, `input`,
float64 `[-1, n_features_in_]`; outputs named as in the ONNX conversion (see
`ferry.convert.sklearn_saver`): a classifier's `label` and, when it has
`predict_proba`, `probabilities` (float64, `classes_` order); anything else's
`predictions`. String labels are returned as bytes, as ferry carries strings.
`run` is thread-safe as far as the estimator's `predict` is (scikit-learn's fitted
estimators only read their state).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ferry.runtimes.base import Runtime, RuntimeOptions
from ferry.runtimes.optional import import_framework
from ferry.runtimes.signature_file import SIGNATURE_FILE, read_signature_file
from ferry.tensors import DEFAULT_SIGNATURE, STRING_DTYPE, Signature, TensorSpec

PICKLE_FILES = ("model.joblib", "model.pkl")
INPUT_NAME = "input"


class SklearnPickleRuntime(Runtime):
    """A pickled scikit-learn estimator or pipeline, served with predict/predict_proba."""

    format_name = "sklearn-pickle"
    platforms = ("sklearn", "scikit-learn", "sklearn_pickle")

    def __init__(self, version_dir: Path, options: RuntimeOptions) -> None:
        super().__init__(version_dir, options)
        self._estimator: Any = None
        self._signatures: dict[str, Signature] = {}

    @classmethod
    def can_load(cls, version_dir: Path) -> bool:
        return any((version_dir / name).is_file() for name in PICKLE_FILES)

    @property
    def model_file(self) -> Path:
        return next(
            (self.version_dir / n for n in PICKLE_FILES if (self.version_dir / n).is_file()),
            self.version_dir / PICKLE_FILES[0],
        )

    def load(self) -> None:
        path = self.model_file
        self.consent.require_pickle(
            f"{path.name} is a pickle, and loading a pickle runs code from the file",
            safer="Safer: convert the estimator to ONNX with `ferry save` "
            "(ferry.save(model, path)).",
        )
        # joblib comes with scikit-learn and reads plain pickles as well as its own files.
        import_framework("sklearn", "sklearn", "scikit-learn (pickled)")
        joblib = import_framework("joblib", "sklearn", "scikit-learn (pickled)")
        estimator = joblib.load(path)
        if not hasattr(estimator, "predict"):
            raise ValueError(f"{path.name} holds a {type(estimator).__name__}, not an estimator")
        recorded = self.version_dir / SIGNATURE_FILE
        if recorded.is_file():
            self._signatures = read_signature_file(recorded)
        else:
            self._signatures = {DEFAULT_SIGNATURE: _estimator_signature(estimator)}
        self._estimator = estimator

    @property
    def signatures(self) -> dict[str, Signature]:
        return self._signatures

    def run(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        estimator = self._estimator
        if estimator is None:
            raise RuntimeError("model is not loaded")
        signature = self._signatures[signature_name]
        features = next(iter(inputs.values())) if len(inputs) == 1 else inputs
        out: dict[str, np.ndarray] = {}
        for name in signature.outputs:
            if name == "probabilities":
                value = estimator.predict_proba(features)
            else:
                value = estimator.predict(features)
            out[name] = _servable(np.asarray(value))
        return out

    def unload(self) -> None:
        self._estimator = None


def _estimator_signature(estimator: Any) -> Signature:
    width = getattr(estimator, "n_features_in_", None)
    if width is None:
        raise ValueError(
            f"cannot tell the input width of this {type(estimator).__name__} "
            f"(no n_features_in_); write {SIGNATURE_FILE} beside it"
        )
    inputs = {INPUT_NAME: TensorSpec(INPUT_NAME, np.dtype(np.float64), (-1, int(width)))}
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        # Regressors: the rank of the answer depends on the number of targets, which
        # only a trial run tells reliably.
        trial = np.asarray(estimator.predict(np.zeros((1, int(width)))))
        shape = (-1, *trial.shape[1:])
        outputs = {"predictions": TensorSpec("predictions", trial.dtype, shape)}
        return Signature(inputs, outputs)
    label_dtype = STRING_DTYPE if np.asarray(classes).dtype.kind in "OUS" else classes.dtype
    outputs = {"label": TensorSpec("label", np.dtype(label_dtype), (-1,))}
    if hasattr(estimator, "predict_proba"):
        outputs["probabilities"] = TensorSpec(
            "probabilities", np.dtype(np.float64), (-1, len(classes))
        )
    return Signature(inputs, outputs)


def _servable(value: np.ndarray) -> np.ndarray:
    """String labels as the bytes objects ferry carries; everything else as it is."""
    if value.dtype.kind not in "OUS":
        return value
    out = np.empty(value.shape, dtype=object)
    out.flat[:] = [v.encode() if isinstance(v, str) else v for v in value.flat]
    return out
