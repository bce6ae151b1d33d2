"""A bundle's `run.py` prints what `ferry edge predict` prints: one shape,
`{"outputs": {name: values}}`; bad use exits with one line, not a traceback. Both as
processes, on a model the test builds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from support.models import scale_model, write_model


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), capture_output=True, text=True, cwd=cwd, timeout=120)


def test_run_py_and_edge_predict_print_the_same_document(tmp_path: Path) -> None:
    version = write_model(scale_model(3.0), tmp_path / "m", 1)
    np.save(tmp_path / "x.npy", np.ones((2, 4), dtype=np.float32))
    made = run(
        sys.executable, "-m", "ferry.cli", "edge", "bundle", str(version / "model.onnx"),
        "-o", str(tmp_path / "bundle"), cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr

    predicted = run(
        sys.executable, "-m", "ferry.cli", "edge", "predict", str(version / "model.onnx"),
        "--input", str(tmp_path / "x.npy"), cwd=tmp_path,
    )  # fmt: skip
    bundled = run(
        sys.executable, "-I", str(tmp_path / "bundle" / "run.py"), str(tmp_path / "x.npy"),
        cwd=tmp_path,
    )  # fmt: skip
    assert predicted.returncode == 0 and bundled.returncode == 0, bundled.stderr
    assert json.loads(bundled.stdout) == json.loads(predicted.stdout)
    assert json.loads(bundled.stdout) == {"outputs": {"y": [[3.0] * 4, [3.0] * 4]}}


def test_run_py_without_inputs_or_with_bad_ones_says_so_in_one_line(tmp_path: Path) -> None:
    version = write_model(scale_model(3.0), tmp_path / "m", 1)
    bundle = tmp_path / "bundle"
    made = run(
        sys.executable, "-m", "ferry.cli", "edge", "bundle", str(version / "model.onnx"),
        "-o", str(bundle), cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    bare = run(sys.executable, "-I", str(bundle / "run.py"), cwd=tmp_path)
    assert bare.returncode == 1
    assert bare.stderr.strip() == "usage: python run.py INPUTS (.npy, .npz or TF Serving .json)"
    np.save(tmp_path / "bad.npy", np.ones((2, 5), dtype=np.float32))
    bad = run(sys.executable, "-I", str(bundle / "run.py"), str(tmp_path / "bad.npy"), cwd=tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
