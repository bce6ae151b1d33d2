"""`ferry optimize`'s gate, through the command: a candidate larger or slower than its
source is refused with the numbers, and so is a source that is already quantized, unless
`--force`. Nothing is published when refused (a polling server would swap to it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ferry.convert.optimize import OptimizeError, VariantReport, check_gains
from ferry.examples import mlp_small, write_version


def ferry(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ferry.cli", *args], capture_output=True, text=True, timeout=300
    )


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def tiny_matmul(folder: Path) -> Path:
    """models/tiny/1: y = x @ W with a 2x2 W, which int8 quantization makes larger (the
    quantize/dequantize nodes and their scales outweigh four float weights)."""
    weight = numpy_helper.from_array(np.array([[1, 2], [3, 4]], dtype=np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    version = folder / "1"
    version.mkdir(parents=True)
    onnx.save(model, str(version / "model.onnx"))
    return folder


def test_a_candidate_larger_than_its_source_is_refused_with_the_sizes(tmp_path: Path) -> None:
    model = tiny_matmul(tmp_path / "models" / "tiny")
    refused = ferry("optimize", str(model), "--precision", "int8")
    assert refused.returncode == 1, refused.stderr
    assert "refused the int8 candidate: it is larger:" in refused.stderr
    assert "x the original's" in refused.stderr and "--force" in refused.stderr
    assert entries(model) == ["1"]

    forced = ferry("optimize", str(model), "--precision", "int8", "--force")
    assert forced.returncode == 0, forced.stderr
    assert entries(model) == ["1", "2"]


def test_an_already_quantized_version_is_not_quantized_again(tmp_path: Path) -> None:
    model = tmp_path / "models" / "mlp"
    write_version(mlp_small(), model, 1)
    # This test is about the source gate: a generous slowdown bound keeps a busy machine's
    # timing out of the first, legitimate run.
    first = ferry("optimize", str(model), "--precision", "int8", "--max-slowdown", "1000")
    assert first.returncode == 0, first.stderr
    assert entries(model) == ["1", "2"]

    again = ferry("optimize", str(model), "--precision", "int8")
    assert again.returncode == 1
    assert f"{model / '2'} is already a lower-precision version" in again.stderr
    assert "optimize.json says it is the int8 variant of" in again.stderr
    fp16 = ferry("optimize", str(model / "2"), "--precision", "fp16")
    assert fp16.returncode == 1 and "already a lower-precision version" in fp16.stderr
    assert "Traceback" not in fp16.stderr

    # Without its provenance file, the graph itself gives it away.
    (model / "2" / "optimize.json").unlink()
    bare = ferry("optimize", str(model), "--precision", "int8")
    assert bare.returncode == 1 and "its graph holds quantized ops (" in bare.stderr
    assert "MatMulInteger" in bare.stderr
    assert entries(model) == ["1", "2"]


def report(label: str, size: int, batch1: float, batch64: float) -> VariantReport:
    return VariantReport(label, size, batch1, batch64)


def test_a_slower_candidate_is_refused_with_both_latencies() -> None:
    original = report("original", 1000, 1.0, 10.0)
    with pytest.raises(OptimizeError) as slower:
        check_gains(original, report("int8", 500, 1.05, 14.0), max_slowdown_percent=10)
    message = str(slower.value)
    assert "slower at batch 64: 14.000 ms vs 10.000 ms (1.40x" in message
    assert "batch 1" not in message  # 5 % slower is within the allowed 10 %
    check_gains(original, report("int8", 500, 0.5, 10.9), max_slowdown_percent=10)
    # A batch size the model does not take (NaN) is not compared.
    check_gains(original, report("int8", 500, float("nan"), 9.0), max_slowdown_percent=10)
