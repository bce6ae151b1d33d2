"""`ferry.save` for PyTorch and scikit-learn models: what lands in the version folder.

Serving is covered by tests/runtimes/; these tests check the files, the recorded
signature and the refusals, in process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

import ferry
from ferry.convert.save import SaveError
from ferry.runtimes import RuntimeOptions, runtime_for
from ferry.runtimes.optional import MissingExtra


class Dropout(torch.nn.Module):
    """Dropout makes training-mode outputs random: only an eval-mode trace is stable."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.dropout(self.linear(x))
        return y, y.sum(dim=1)


def signature(version_dir: Path) -> dict:
    return json.loads((version_dir / "signature.json").read_text())["signatures"]["serving_default"]


def run_saved(version_dir: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    runtime = runtime_for(version_dir, RuntimeOptions(intra_op_threads=1))
    runtime.load()
    try:
        return runtime.run("serving_default", inputs)
    finally:
        runtime.unload()


@pytest.mark.torch
class TestTorch:
    def test_module_is_traced_in_eval_mode_and_left_as_it_was(self, tmp_path: Path) -> None:
        torch.manual_seed(0)
        model = Dropout().train()
        version = ferry.save(model, tmp_path / "m", example=torch.randn(2, 3))
        assert version == tmp_path / "m" / "1"
        assert (version / "model.pt").is_file()
        assert model.training  # restored
        recorded = signature(version)
        assert recorded["inputs"] == {"x": {"dtype": "DT_FLOAT", "shape": [-1, 3]}}
        assert recorded["outputs"] == {
            "output_0": {"dtype": "DT_FLOAT", "shape": [-1, 2]},
            "output_1": {"dtype": "DT_FLOAT", "shape": [-1]},
        }
        rows = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
        with torch.no_grad():
            expected = model.eval()(torch.from_numpy(rows))
        served = run_saved(version, {"x": rows})
        np.testing.assert_allclose(served["output_0"], expected[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(served["output_1"], expected[1].numpy(), atol=1e-6)

    def test_formats_export_and_onnx(self, tmp_path: Path) -> None:
        torch.manual_seed(1)
        model = Dropout().eval()
        exported = ferry.save(model, tmp_path / "m", example=torch.randn(1, 3), format="export")
        onnx_version = ferry.save(model, tmp_path / "m", example=torch.randn(2, 3), format="onnx")
        assert (exported / "model.pt2").is_file() and exported.name == "1"
        assert (onnx_version / "model.onnx").is_file() and onnx_version.name == "2"
        session = ort.InferenceSession(str(onnx_version / "model.onnx"))
        assert [i.name for i in session.get_inputs()] == ["x"]
        assert [o.name for o in session.get_outputs()] == ["output_0", "output_1"]
        rows = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(rows))[0].numpy()
        for version in (exported, onnx_version):
            assert signature(version)["inputs"]["x"]["shape"] == [-1, 3]
            np.testing.assert_allclose(
                run_saved(version, {"x": rows})["output_0"], expected, atol=1e-5
            )

    def test_a_saved_export_program_file(self, tmp_path: Path) -> None:
        model = Dropout().eval()
        batch = torch.export.Dim("batch")
        program = torch.export.export(model, (torch.randn(2, 3),), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(tmp_path / "program.pt2"))
        version = ferry.save(tmp_path / "program.pt2", tmp_path / "m", format="export")
        assert signature(version)["outputs"]["output_0"]["shape"] == [-1, 2]

    def test_refusals(self, tmp_path: Path) -> None:
        with pytest.raises(SaveError, match="needs an example input"):
            ferry.save(Dropout(), tmp_path / "m")
        with pytest.raises(SaveError, match="torchscript, export, onnx"):
            ferry.save(Dropout(), tmp_path / "m", example=torch.randn(1, 3), format="keras")
        assert not (tmp_path / "m" / "1").exists()


@pytest.mark.sklearn
class TestSklearn:
    @pytest.fixture(scope="class")
    def iris(self) -> tuple[np.ndarray, np.ndarray]:
        features, target = load_iris(return_X_y=True)
        return features.astype(np.float32), target

    def test_classifier_outputs_label_and_probability_tensor(
        self, tmp_path: Path, iris: tuple
    ) -> None:
        features, target = iris
        model = LogisticRegression(max_iter=1000).fit(features, target)
        version = ferry.save(model, tmp_path / "m")  # width from n_features_in_
        assert (version / "model.onnx").is_file()
        recorded = signature(version)
        assert recorded["inputs"] == {"input": {"dtype": "DT_FLOAT", "shape": [-1, 4]}}
        assert recorded["outputs"] == {
            "label": {"dtype": "DT_INT64", "shape": [-1]},
            "probabilities": {"dtype": "DT_FLOAT", "shape": [-1, 3]},
        }

    def test_other_estimators_keep_skl2onnx_names(self, tmp_path: Path, iris: tuple) -> None:
        model = KMeans(n_clusters=3, n_init=1, random_state=0).fit(iris[0])
        version = ferry.save(model, tmp_path / "m", example=iris[0][:1])
        served = run_saved(version, {"input": iris[0][:5]})
        assert served["label"].tolist() == model.predict(iris[0][:5]).tolist()

    def test_refusals(self, tmp_path: Path, iris: tuple) -> None:
        with pytest.raises(SaveError, match="fit the model first"):
            ferry.save(LogisticRegression(), tmp_path / "m")
        with pytest.raises(SaveError, match="must be 2-D"):
            ferry.save(LogisticRegression().fit(*iris), tmp_path / "m", example=iris[0][0])
        # skl2onnx has no converter for a precomputed-kernel SVC: the error says what
        # would work instead.
        svc = SVC(kernel="precomputed").fit(iris[0] @ iris[0].T, iris[1])
        with pytest.raises(SaveError, match="start the server with --allow_pickle NAME"):
            ferry.save(svc, tmp_path / "m", example=np.zeros((1, 150)))
        assert not any(p.name.isdigit() for p in (tmp_path / "m").iterdir())

    def test_missing_skl2onnx_names_the_extra(
        self, tmp_path: Path, iris: tuple, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        model = LogisticRegression(max_iter=1000).fit(*iris)
        monkeypatch.setitem(sys.modules, "skl2onnx", None)
        with pytest.raises(MissingExtra, match=r"pip install 'ferry-serve\[sklearn\]'"):
            ferry.save(model, tmp_path / "m")
