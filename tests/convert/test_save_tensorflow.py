"""`ferry save` / `ferry.save` for TensorFlow and Keras: every format from a Keras model,
SavedModel folders, tf.Modules and Keras files as paths; the signature it records; the
atomic versioning; and refusals that say what would work. In-process, no server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
tf_models = pytest.importorskip("support.tf_models")

import ferry  # noqa: E402 - after the TensorFlow skip
from ferry.convert.save import SaveError  # noqa: E402
from ferry.runtimes import RuntimeOptions, runtime_for  # noqa: E402

X = np.random.default_rng(5).random((3, 4), dtype=np.float32)


def served(version_dir: Path) -> tuple[str, dict[str, np.ndarray]]:
    """What ferry's runtime for the folder answers for X: (format, outputs)."""
    runtime = runtime_for(version_dir, RuntimeOptions(intra_op_threads=1))
    runtime.load()
    try:
        return runtime.format_name, runtime.run("serving_default", {"x": X})
    finally:
        runtime.unload()


@pytest.mark.parametrize(
    ("format", "runtime_format", "file", "tolerance"),
    [
        ("savedmodel", "tensorflow", "saved_model.pb", 1e-6),
        ("keras", "keras", "model.keras", 1e-6),
        ("onnx", "onnx", "model.onnx", 1e-5),
        ("tflite", "tflite", "model.tflite", 1e-5),
    ],
)
def test_keras_model_in_every_format(
    tmp_path: Path, format: str, runtime_format: str, file: str, tolerance: float
) -> None:
    model = tf_models.mlp_keras()
    version = ferry.save(model, tmp_path / "m", format=format)
    assert version == tmp_path / "m" / "1"
    assert (version / file).is_file()
    recorded = json.loads((version / "signature.json").read_text())
    assert recorded["format"] == runtime_format
    signature = recorded["signatures"]["serving_default"]
    assert signature["inputs"]["x"] == {"dtype": "DT_FLOAT", "shape": [-1, 4]}
    got_format, outputs = served(version)
    assert got_format == runtime_format
    # Keras's own output name in every format (TFLite keeps the SavedModel's names).
    assert list(outputs) == ["probs"]
    np.testing.assert_allclose(outputs["probs"], model.predict(X, verbose=0), rtol=tolerance)


def test_versions_count_up_and_leave_no_staging(tmp_path: Path) -> None:
    model = tf_models.mlp_keras()
    ferry.save(model, tmp_path / "m", format="keras")
    ferry.save(model, tmp_path / "m", format="keras")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2"]
    with pytest.raises(SaveError, match="already exists"):
        ferry.save(model, tmp_path / "m", format="keras", version=2)


def test_seed_recipe_files_as_paths(tmp_path: Path) -> None:
    model = tf_models.mlp_keras()
    expected = model.predict(X, verbose=0)
    files = tmp_path / "files"
    files.mkdir()
    model.save(files / "m.keras")
    model.export(str(tmp_path / "exported"), verbose=False)
    pair = tmp_path / "pair"
    pair.mkdir()
    (pair / "arch.json").write_text(model.to_json())
    model.save_weights(pair / "arch.weights.h5")

    keras_version = ferry.save(files / "m.keras", tmp_path / "a")
    assert served(keras_version)[0] == "tensorflow"  # default for Keras: a SavedModel
    pair_version = ferry.save(pair / "arch.json", tmp_path / "b", format="keras")
    assert sorted(p.name for p in pair_version.iterdir()) == [
        "arch.weights.h5",
        "model.json",
        "signature.json",
    ]
    exported_version = ferry.save(tmp_path / "exported", tmp_path / "c")
    assert set(json.loads((exported_version / "signature.json").read_text())["signatures"]) == {
        "serve",
        "serving_default",
    }
    for version in (keras_version, pair_version):
        np.testing.assert_allclose(served(version)[1]["probs"], expected, rtol=1e-6)
    np.testing.assert_allclose(served(exported_version)[1]["output_0"], expected, rtol=1e-6)


def test_tf_module_and_cli(tmp_path: Path) -> None:
    # tf.saved_model.save makes a module's only tf.function its serving_default ...
    version = ferry.save(tf_models.FixedBatch(), tmp_path / "module")
    fmt, outputs = served(version)
    assert fmt == "tensorflow"
    # Its batch size is fixed at 1: the runtime runs a stacked batch in slices of 1.
    np.testing.assert_allclose(outputs["y"], X * 3, rtol=1e-6)
    # ... but with two it cannot choose, and ferry refuses to publish what does not serve.
    with pytest.raises(SaveError, match="no serving signatures"):
        ferry.save(tf_models.TextAndScale(), tmp_path / "two_functions")
    saved = tmp_path / "saved"
    tf_models.save_text_and_scale(saved)
    result = subprocess.run(
        [sys.executable, "-m", "ferry.cli", "save", str(saved), str(tmp_path / "cli"),
         "--format", "onnx"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    fmt, outputs = served(tmp_path / "cli" / "1")
    assert fmt == "onnx"
    np.testing.assert_allclose(outputs["y"], X * 2, rtol=1e-6)


def test_refusals_say_what_would_work(tmp_path: Path) -> None:
    model = tf_models.mlp_keras()
    with pytest.raises(SaveError, match="savedmodel, keras, onnx, tflite"):
        ferry.save(model, tmp_path / "m", format="torchscript")
    empty = tmp_path / "empty_saved_model"
    tf_models.tf.saved_model.save(tf_models.tf.Module(), str(empty))
    with pytest.raises(SaveError, match=r"does not load.*no serving signatures"):
        ferry.save(empty, tmp_path / "n")
    assert not any((tmp_path / "n").iterdir())  # nothing published, no staging left
