"""`ferry lite`: .tflite from a Keras model and .ort from an ONNX model, checked against the
original, giving the same class as the server; refusals write nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ferry.edge
from ferry.cli import main
from ferry.convert.lite import LiteError, convert_lite
from ferry.examples import mlp_small, write_version
from ferry.runtimes import RUNTIMES

X = np.random.default_rng(7).random((32, 16), dtype=np.float32)


@pytest.fixture(scope="module")
def keras_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/digits/1/model.keras: 16 features -> 32 relu -> 4 softmax classes."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,), name="features")
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    outputs = keras.layers.Dense(4, activation="softmax", name="probs")(hidden)
    folder = tmp_path_factory.mktemp("models") / "digits" / "1"
    folder.mkdir(parents=True)
    keras.Model(inputs, outputs).save(folder / "model.keras")
    return folder


@pytest.fixture
def onnx_version(tmp_path: Path) -> Path:
    return write_version(mlp_small(), tmp_path / "models" / "mlp_small", 1)


def classes(outputs: dict[str, np.ndarray]) -> np.ndarray:
    (value,) = outputs.values()
    return value.argmax(axis=1)


@pytest.mark.tensorflow
@pytest.mark.parametrize("quantize", ["none", "dynamic", "fp16", "int8"])
def test_tflite_from_keras_matches_the_original(
    keras_version: Path, tmp_path: Path, quantize: str
) -> None:
    keras = pytest.importorskip("keras")
    representative = None
    if quantize == "int8":
        representative = tmp_path / "representative.npy"
        np.save(representative, X)
    report = convert_lite(
        keras_version, tmp_path / "m.tflite", quantize=quantize, representative_data=representative
    )
    assert report.path.is_file() and report.size_bytes == report.path.stat().st_size
    model = keras.models.load_model(keras_version / "model.keras", compile=False)
    expected = np.asarray(model(X)).argmax(axis=1)
    assert (classes(ferry.edge.load(report.path).predict(X)) == expected).mean() >= 0.9
    if quantize != "none":
        assert report.size_bytes < (keras_version / "model.keras").stat().st_size


@pytest.mark.tensorflow
def test_tflite_gives_the_servers_class(keras_version: Path, start_server, tmp_path: Path):
    if "keras" not in {r.format_name for r in RUNTIMES}:
        pytest.skip("this ferry does not serve Keras models")
    lite = convert_lite(keras_version, tmp_path / "digits.tflite").path
    server = start_server("--model_name", "digits", "--model_base_path", str(keras_version.parent))
    server.wait_version("digits", 1)
    response = server.predict("digits", {"instances": X.tolist()})
    assert response.status_code == 200, response.text
    served = np.array(response.json()["predictions"]).argmax(axis=1)
    assert (classes(ferry.edge.load(lite).predict(X)) == served).all()


def test_ort_gives_the_servers_class(onnx_version: Path, start_server, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["lite", str(onnx_version), "-o", str(tmp_path / "m.ort")])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "same class on 100.0% of rows: OK" in result.output
    x = np.random.default_rng(1).random((20, 784), dtype=np.float32)
    server = start_server(str(onnx_version.parent.parent))
    server.wait_version("mlp_small", 1)
    served = np.array(server.predict("mlp_small", {"instances": x.tolist()}).json()["predictions"])
    lite = ferry.edge.load(tmp_path / "m.ort")
    assert (classes(lite.predict(x)) == served.argmax(axis=1)).all()
    np.testing.assert_allclose(lite.predict(x)["probs"], served, rtol=1e-5, atol=1e-7)


@pytest.mark.tensorflow
def test_refusals_name_the_problem_and_write_nothing(
    keras_version: Path, onnx_version: Path, tmp_path: Path
) -> None:
    cases = [
        (onnx_version, "m.tflite", {}, "holds no TensorFlow SavedModel"),
        (keras_version, "m.ort", {}, "holds no ONNX model"),
        (onnx_version, "m.ort", {"quantize": "dynamic"}, "ferry optimize"),
        (keras_version, "m.tflite", {"quantize": "int8"}, "needs --representative-data"),
        (keras_version, "m.bin", {}, "write a .tflite"),
        (
            keras_version,
            "m.tflite",
            {"quantize": "fp16", "tolerance": 1e-12},
            "outputs differ from the original's by up to",
        ),
    ]
    for version, name, options, message in cases:
        with pytest.raises(LiteError, match=message):
            convert_lite(version, tmp_path / "out" / name, **options)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []
