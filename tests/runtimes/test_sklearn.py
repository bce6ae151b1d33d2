"""scikit-learn models: saved as ONNX with `ferry.save`, or pickled with the operator's
consent (`ferry serve --allow_pickle`), and served by a real `ferry serve`.

Answers over HTTP must equal scikit-learn's own: labels exactly, probabilities and
regression values within float32 rounding (the ONNX model computes in float32). A
pickle the operator did not allow must be refused with a message that says why and
names the flag, while every other model keeps serving; a ferry.toml saying
`allow_pickle = true` grants nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from support.framework_models import (
    predict_columns,
    predict_rows,
    settled_status,
    start_repository_server,
)
from support.models import mlp_model, write_model
from support.server import FerryProcess

import ferry
from ferry.consent import ExecutionConsent
from ferry.manager import ManagerOptions, ModelManager
from ferry.metrics import Metrics
from ferry.model_config import ModelSpec
from ferry.repository.source import LocalVersionSource

pytestmark = pytest.mark.sklearn

SPECIES = np.array(["setosa", "versicolor", "virginica"])


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    features, target = load_iris(return_X_y=True)
    return features.astype(np.float32), target


@pytest.fixture(scope="module")
def models(iris: tuple[np.ndarray, np.ndarray]) -> dict:
    features, target = iris
    return {
        "classifier": LogisticRegression(max_iter=1000).fit(features, target),
        # String classes through a pipeline: labels come back as strings.
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
            features, SPECIES[target]
        ),
        "regressor": Ridge().fit(features[:, 1:], features[:, 0]),
        "forest": RandomForestClassifier(n_estimators=5, random_state=0).fit(features, target),
    }


@pytest.fixture(scope="module")
def server(models: dict, tmp_path_factory: pytest.TempPathFactory) -> FerryProcess:
    root = tmp_path_factory.mktemp("sklearn") / "models"
    ferry.save(models["classifier"], root / "classifier")
    ferry.save(models["pipeline"], root / "pipeline", example=np.zeros((1, 4)))
    ferry.save(models["regressor"], root / "regressor")
    for name in ("pickled", "refused"):
        (root / name / "1").mkdir(parents=True)
        joblib.dump(models["forest"], root / name / "1" / "model.joblib")
    # The folder's own say-so, which no longer counts.
    (root / "refused" / "ferry.toml").write_text("allow_pickle = true\n")
    (root / "corrupt" / "1").mkdir(parents=True)
    (root / "corrupt" / "1" / "model.pkl").write_bytes(b"\x80\x05not really a pickle")
    process = start_repository_server(
        root, root.parent / "ferry.log", "--allow_pickle", "pickled,corrupt"
    )
    yield process
    process.stop()


def test_classifier_gives_label_and_probabilities(
    server: FerryProcess, models: dict, iris: tuple
) -> None:
    assert settled_status(server, "classifier")["state"] == "AVAILABLE"
    features = iris[0][::10]
    outputs = predict_columns(server, "classifier", {"input": features})
    model = models["classifier"]
    assert outputs["label"] == model.predict(features).tolist()
    np.testing.assert_allclose(outputs["probabilities"], model.predict_proba(features), atol=1e-5)


def test_pipeline_with_string_classes(server: FerryProcess, models: dict, iris: tuple) -> None:
    assert settled_status(server, "pipeline")["state"] == "AVAILABLE"
    features = iris[0][5::15]
    predictions = predict_rows(server, "pipeline", features)
    model = models["pipeline"]
    assert [row["label"] for row in predictions] == model.predict(features).tolist()
    np.testing.assert_allclose(
        [row["probabilities"] for row in predictions], model.predict_proba(features), atol=1e-5
    )


def test_regressor_gives_predictions(server: FerryProcess, models: dict, iris: tuple) -> None:
    assert settled_status(server, "regressor")["state"] == "AVAILABLE"
    features = iris[0][::7, 1:]
    metadata = server.get("/v2/models/regressor").json()
    assert [t["name"] for t in metadata["outputs"]] == ["predictions"]
    served = np.array(predict_rows(server, "regressor", features)).reshape(-1)
    np.testing.assert_allclose(served, models["regressor"].predict(features), atol=1e-4)


def test_pickle_is_refused_without_consent(server: FerryProcess) -> None:
    status = settled_status(server, "refused")
    assert status["state"] == "END"
    message = status["status"]["error_message"]
    assert "runs code" in message and "ferry serve --allow_pickle refused" in message
    assert "ferry save" in message
    assert "no longer allows anything" in server.log()


def test_pickle_serves_predict_and_predict_proba_with_consent(
    server: FerryProcess, models: dict, iris: tuple
) -> None:
    assert settled_status(server, "pickled")["state"] == "AVAILABLE"
    features = iris[0][::9].astype(np.float64)
    outputs = predict_columns(server, "pickled", {"input": features})
    forest = models["forest"]
    assert outputs["label"] == forest.predict(features).tolist()
    np.testing.assert_array_equal(outputs["probabilities"], forest.predict_proba(features))


def test_corrupt_pickle_fails_alone(server: FerryProcess) -> None:
    status = settled_status(server, "corrupt")
    assert status["state"] == "END"
    assert status["status"]["error_message"]
    assert settled_status(server, "classifier")["state"] == "AVAILABLE"


def test_missing_scikit_learn_is_a_load_error_naming_the_extra(
    tmp_path: Path, models: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pickled" / "1").mkdir(parents=True)
    joblib.dump(models["forest"], tmp_path / "pickled" / "1" / "model.joblib")
    write_model(mlp_model(width=4), tmp_path / "onnx_model", 1)
    # As if scikit-learn were not installed: `import sklearn` raises ImportError.
    monkeypatch.setitem(sys.modules, "sklearn", None)
    consent = ExecutionConsent.from_flags(pickle=["pickled"])
    manager = ModelManager(ManagerOptions(consent=consent), Metrics())
    for name in ("pickled", "onnx_model"):
        base = tmp_path / name
        manager.sync(ModelSpec(name, base), LocalVersionSource(base).list_versions())
    try:
        [record] = manager.version_status("pickled")
        assert record.state.name == "END"
        assert "pip install 'ferry-serve[sklearn]'" in record.error_message
        manager.acquire("onnx_model").release()
    finally:
        manager.shutdown()
