"""ferry.edge: lite models run with the server's signature rules, the `ferry edge` commands,
bundles, and the small install (a fresh virtual environment with numpy + onnxruntime)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from support.fresh_venv import package_source

import ferry.edge
from ferry.cli import main
from ferry.convert.lite import convert_lite
from ferry.edge.bundle import write_bundle
from ferry.examples import mlp_small, write_version

REPO = Path(__file__).resolve().parents[2]
# Nothing of these may be imported by `import ferry.edge` (nor by loading an ONNX model).
FORBIDDEN = {
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "grpc",
    "orjson",
    "pydantic",
    "prometheus_client",
    "click",
    "rich",
    "tensorflow",
    "keras",
    "torch",
    "sklearn",
    "onnx",
}


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_version(mlp_small(), tmp_path_factory.mktemp("models") / "mlp_small", 1)


@pytest.fixture(scope="module")
def ort_file(version_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_lite(version_dir, tmp_path_factory.mktemp("lite") / "model.ort").path


def reference(version_dir: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"x": x})[0]


def x_rows(count: int) -> np.ndarray:
    return np.random.default_rng(3).random((count, 784), dtype=np.float32)


def test_onnx_and_ort_models_predict_like_onnxruntime(version_dir: Path, ort_file: Path) -> None:
    x = x_rows(5)
    for path in (version_dir / "model.onnx", ort_file, version_dir):
        model = ferry.edge.load(path)
        assert model.input_names == ["x"] and model.output_names == ["probs"]
        np.testing.assert_allclose(model.predict(x)["probs"], reference(version_dir, x), rtol=1e-6)
        np.testing.assert_allclose(model.predict({"x": x})["probs"], reference(version_dir, x))


def test_inputs_are_converted_and_checked_like_the_server(version_dir: Path) -> None:
    model = ferry.edge.load(version_dir / "model.onnx")
    x = x_rows(2)
    # Nested lists and float64 become the signature's float32, as from JSON.
    got = model.predict(x.astype(np.float64).tolist())["probs"]
    np.testing.assert_allclose(got, reference(version_dir, x), rtol=1e-5)
    cases = {
        "Missing input(s) ['x']; the model expects ['x']": {"y": x},
        "Unknown input(s) ['y']; the model expects ['x']": {"x": x, "y": x},
        "has shape [2, 3] but the model expects [-1, 784] (dimension 1 must be 784)": x[:, :3],
        "has rank 1": x[0],
        "holds <U1 values but the model expects float32": np.array([["a"] * 784]),
    }
    for message, inputs in cases.items():
        with pytest.raises(ferry.edge.EdgeInputError) as caught:
            model.predict(inputs)
        assert message in str(caught.value)


@pytest.mark.tensorflow
def test_tflite_models_run_through_litert(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    pytest.importorskip("ai_edge_litert")
    inputs = keras.Input((8,), name="features")
    outputs = keras.layers.Dense(3, activation="softmax", name="scores")(inputs)
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    keras.Model(inputs, outputs).save(folder / "model.keras")
    lite = convert_lite(folder, tmp_path / "model.tflite").path
    model = ferry.edge.load(lite)
    assert model.input_names == ["features"]
    x = np.random.default_rng(0).random((4, 8), dtype=np.float32)
    (name,) = model.output_names
    assert model.predict(x)[name].shape == (4, 3)
    assert model.predict(x[:1])[name].shape == (1, 3)  # the batch dimension resizes
    with pytest.raises(ferry.edge.EdgeInputError, match="dimension 1 must be 8"):
        model.predict(x[:, :5])


def test_edge_predict_command_reads_npy_and_json(version_dir: Path, tmp_path: Path) -> None:
    x = x_rows(2)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "x.json").write_text(json.dumps({"instances": x.tolist()}))
    expected = reference(version_dir, x)
    runner = CliRunner()
    for name in ("x.npy", "x.json"):
        result = runner.invoke(
            main,
            ["edge", "predict", str(version_dir / "model.onnx"), "--input", str(tmp_path / name)],
        )
        assert result.exit_code == 0, result.output
        got = np.array(json.loads(result.output)["outputs"]["probs"])
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.save(tmp_path / "bad.npy", x[:, :10])
    bad = runner.invoke(
        main, ["edge", "predict", str(version_dir), "--input", str(tmp_path / "bad.npy")]
    )
    assert bad.exit_code == 1 and "dimension 1 must be 784" in bad.output


def test_a_bundle_runs_with_its_own_runner(ort_file: Path, version_dir: Path, tmp_path: Path):
    bundle = write_bundle(ort_file, tmp_path / "bundle")
    names = sorted(p.name for p in bundle.iterdir())
    assert names == ["ferry_edge", "model.ort", "requirements.txt", "run.py", "signature.json"]
    signature = json.loads((bundle / "signature.json").read_text())
    assert signature["signatures"]["serving_default"]["inputs"]["x"]["shape"] == [-1, 784]
    x = x_rows(3)
    np.save(tmp_path / "x.npy", x)
    # -I: no PYTHONPATH, no user site; the runner imports its own ferry_edge copy.
    completed = subprocess.run(
        [sys.executable, "-I", str(bundle / "run.py"), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    got = np.array(json.loads(completed.stdout)["outputs"]["probs"])
    np.testing.assert_allclose(got, reference(version_dir, x), rtol=1e-5)
    with pytest.raises(FileExistsError):
        write_bundle(ort_file, bundle)


@pytest.mark.slow
def test_fresh_venv_imports_ferry_edge_without_server_or_frameworks(
    ort_file: Path, version_dir: Path, tmp_path: Path
) -> None:
    source = package_source()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    subprocess.run([*pip, *source, "numpy", "onnxruntime"], check=True, timeout=300)

    # A bundle needs numpy and the runtime only: it runs before ferry-edge is installed.
    bundle = write_bundle(ort_file, tmp_path / "bundle")
    x = x_rows(2)
    np.save(tmp_path / "x.npy", x)
    ran = subprocess.run(
        [str(python), str(bundle / "run.py"), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    np.testing.assert_allclose(
        np.array(json.loads(ran.stdout)["outputs"]["probs"]), reference(version_dir, x), rtol=1e-5
    )

    wheels = tmp_path / "wheels"
    build = ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build, str(REPO / "packaging" / "ferry-edge")],
        check=True,
        timeout=120,
    )
    (wheel,) = wheels.glob("ferry_edge-*.whl")
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True, timeout=120)

    probe = f"""
import json, sys
import ferry.edge
after_import = sorted(sys.modules)
model = ferry.edge.load({str(version_dir / "model.onnx")!r})
out = model.predict([[0.5] * 784])
print(json.dumps({{"import": after_import, "load": sorted(sys.modules),
                   "file": ferry.edge.__file__, "shape": list(out["probs"].shape)}}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["file"].startswith(str(venv))  # the installed copy, not the repository's
    assert report["shape"] == [1, 10]
    for phase in ("import", "load"):
        modules = report[phase]
        tops = {name.split(".")[0] for name in modules}
        assert not tops & FORBIDDEN, f"{phase} pulled in {sorted(tops & FORBIDDEN)}"
        ferry_modules = {m for m in modules if m.startswith("ferry")}
        assert ferry_modules <= {"ferry"} | {m for m in modules if m.startswith("ferry.edge")}
    assert "onnxruntime" not in {name.split(".")[0] for name in report["import"]}
