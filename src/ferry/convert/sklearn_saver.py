"""Saving scikit-learn estimators and pipelines as ONNX (skl2onnx), served by onnxruntime.

Why ONNX rather than a pickle: a pickle runs code when it is loaded and needs the same
scikit-learn version at serving time; the ONNX file is data, loads anywhere without
scikit-learn, and runs in onnxruntime's threads outside the GIL.

The converted model has one input, `input`: float32 `[-1, n_features]` (the width
comes from the example input when given, else from the fitted estimator's
`n_features_in_`). Outputs, renamed from skl2onnx's to names that say what they hold:

  classifiers  `label` `[-1]` (the predicted class, int64 or string like `classes_`)
               and `probabilities` `[-1, n_classes]` float32, in `classes_` order
               (skl2onnx's ZipMap is off: a plain tensor, not a list of dicts)
  regressors   `predictions` (`[-1]` or `[-1, n_targets]`)
  others       skl2onnx's own names (a transformer's `variable`, a clusterer's
               `label` and `scores`)

onnxruntime computes in float32, so probabilities and regression values match
scikit-learn's float64 results to about 1e-5, not bit for bit; a tree whose split
threshold lies between a feature's float64 value and its float32 rounding can take the
other branch (fit on float32 data to rule that out). Models that skl2onnx
cannot convert (custom estimators, a ColumnTransformer over DataFrame columns) get a
SaveError that says so; such a model can still be served as a pickle when the operator
allows it (`ferry serve --allow_pickle NAME`, see `ferry.runtimes.sklearn_pickle`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from ferry.consent import PICKLE_FLAG
from ferry.convert.save import SaveError, Saver
from ferry.runtimes.onnx import MODEL_FILE
from ferry.runtimes.optional import import_framework

INPUT_NAME = "input"
# ONNX opset the converted models use; onnxruntime has served it for years.
TARGET_OPSET = 17


class SklearnSaver(Saver):
    name = "sklearn"
    formats = ("onnx",)

    def accepts(self, model: Any) -> bool:
        if "sklearn" not in sys.modules or isinstance(model, str | Path):
            return False
        module = type(model).__module__
        return module.split(".")[0] == "sklearn" and hasattr(model, "fit")

    def write(self, model: Any, folder: Path, format: str, example: Any | None) -> None:
        import_framework("skl2onnx", "sklearn", "scikit-learn")
        import onnx
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType
        from sklearn.base import is_classifier, is_regressor

        width = _n_features(model, example)
        options = {id(e): {"zipmap": False} for e in _estimators(model) if is_classifier(e)}
        try:
            converted = convert_sklearn(
                model,
                initial_types=[(INPUT_NAME, FloatTensorType([None, width]))],
                options=options,
                target_opset=TARGET_OPSET,
            )
        except Exception as exc:
            raise SaveError(
                f"skl2onnx cannot convert this {type(model).__name__} ({type(exc).__name__}: "
                f"{exc}). To serve it anyway, save it with joblib as model.joblib in a "
                f"version folder and start the server with {PICKLE_FLAG} NAME (unpickling "
                "runs code from the file: only for files you trust)."
            ) from exc
        outputs = [o.name for o in converted.graph.output]
        if is_classifier(model) and len(outputs) == 2:
            _rename_outputs(converted, dict(zip(outputs, ["label", "probabilities"], strict=True)))
        elif is_regressor(model) and len(outputs) == 1:
            _rename_outputs(converted, {outputs[0]: "predictions"})
        onnx.save(converted, str(folder / MODEL_FILE))


def _n_features(model: Any, example: Any | None) -> int:
    if example is not None:
        shape = np.shape(example)
        if len(shape) != 2:
            raise SaveError(f"the example must be 2-D (rows, features), not shape {shape}")
        return int(shape[1])
    width = getattr(model, "n_features_in_", None)
    if width is None:
        raise SaveError(
            "cannot tell the number of input features: fit the model first or pass example=X[:1]"
        )
    return int(width)


def _estimators(model: Any) -> list[Any]:
    """The model and every estimator nested in it (pipeline steps, ensemble members)."""
    found = [model]
    get_params = getattr(model, "get_params", None)
    if get_params is not None:
        found.extend(v for v in get_params(deep=True).values() if hasattr(v, "fit"))
    return found


def _rename_outputs(model: Any, names: dict[str, str]) -> None:
    """Rename graph outputs by adding Identity nodes (the producing node keeps its
    output name, so nothing else in the graph has to change)."""
    from onnx import helper

    for output in model.graph.output:
        new = names.get(output.name)
        if new is None or new == output.name:
            continue
        model.graph.node.append(
            helper.make_node("Identity", [output.name], [new], name=f"rename_{new}")
        )
        output.name = new


SAVERS: list[Saver] = [SklearnSaver()]
