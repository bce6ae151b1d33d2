"""`precision` in ferry.toml: a real `ferry serve` builds the variant once, caches it under
`.ferry/`, and serves it; on a GPU machine the option maps to TensorRT / CUDA providers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ferry.examples import mlp_small, write_version
from ferry.runtimes import RuntimeOptions
from ferry.runtimes.onnx import OnnxRuntime
from ferry.runtimes.precision import CPU, CUDA, TENSORRT, execution_plan, serve_precision
from ferry.tensors import DEFAULT_SIGNATURE

X = np.random.default_rng(5).random((3, 784), dtype=np.float32)


def reference(version_dir: Path) -> np.ndarray:
    session = ort.InferenceSession(
        str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"x": X})[0]


def test_the_plan_follows_the_available_providers(tmp_path: Path) -> None:
    cpu = execution_plan("int8", [CPU], tmp_path)
    assert cpu.variant == "int8" and cpu.providers == [CPU]
    assert execution_plan("fp16", [CUDA, CPU], tmp_path).variant == "fp16"
    assert execution_plan("fp16", [CUDA, CPU], tmp_path).providers == [CUDA, CPU]
    assert execution_plan("int8", [CUDA, CPU], tmp_path).providers == [CPU]
    trt = execution_plan("int8", [TENSORRT, CUDA, CPU], tmp_path)
    assert trt.variant is None  # TensorRT lowers the original model itself
    name, options = trt.providers[0]
    assert name == TENSORRT
    assert options["trt_int8_enable"] == "True" and options["trt_fp16_enable"] == "True"
    assert options["trt_engine_cache_path"] == str(tmp_path / "tensorrt")
    assert trt.providers[1:] == [CUDA, CPU]


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_ferry_serve_builds_caches_and_serves_the_variant(
    model_root: Path, start_server, precision: str
) -> None:
    model_dir = model_root / "mlp_small"
    version = write_version(mlp_small(), model_dir, 1)
    (model_dir / "ferry.toml").write_text(f'precision = "{precision}"\n')
    server = start_server(str(model_root))
    server.wait_version("mlp_small", 1)
    cached = version / ".ferry" / f"model.{precision}.onnx"
    assert cached.is_file()
    ops = {node.op_type for node in onnx.load(str(cached)).graph.node}
    if precision == "int8":
        assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops
    else:
        assert any(
            init.data_type == onnx.TensorProto.FLOAT16
            for init in onnx.load(str(cached)).graph.initializer
        )
    response = server.predict("mlp_small", {"instances": X.tolist()})
    assert response.status_code == 200, response.text
    got = np.array(response.json()["predictions"], dtype=np.float32)
    expected = reference(version)
    assert np.abs(got - expected).max() < (1e-3 if precision == "fp16" else 0.05)
    assert not np.array_equal(got, expected)  # really the variant, not the original
    assert f"precision {precision}" in server.log()
    # The signature the clients see is the original's (float32 in and out).
    inputs = server.get("/v2/models/mlp_small").json()["inputs"]
    assert inputs == [{"name": "x", "datatype": "FP32", "shape": [-1, 784]}]


def test_the_cache_is_reused_and_never_looks_like_a_new_version(tmp_path: Path) -> None:
    version = write_version(mlp_small(), tmp_path / "m", 1)
    first = OnnxRuntime(version, RuntimeOptions(intra_op_threads=1))
    first.load()
    served = serve_precision(first, RuntimeOptions(intra_op_threads=1), "int8")
    cached = version / ".ferry" / "model.int8.onnx"
    assert isinstance(served, OnnxRuntime) and served.model_file == cached
    stamp = cached.stat().st_mtime_ns
    again = OnnxRuntime(version, RuntimeOptions(intra_op_threads=1))
    again.load()
    assert serve_precision(again, RuntimeOptions(), "int8").model_file == cached
    assert cached.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (version / ".ferry").iterdir()) == ["model.int8.onnx"]


def test_a_model_that_cannot_be_quantized_serves_the_original(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    version = write_version(model, tmp_path / "relu", 1)
    runtime = OnnxRuntime(version, RuntimeOptions(intra_op_threads=1))
    runtime.load()
    assert serve_precision(runtime, RuntimeOptions(), "int8") is runtime
    assert not list((version / ".ferry").glob("*.onnx"))


GPU_PROVIDERS = {TENSORRT, CUDA} & set(ort.get_available_providers())


@pytest.mark.skipif(
    not GPU_PROVIDERS, reason="onnxruntime has no CUDA or TensorRT execution provider here"
)
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_gpu_precision_runs_on_the_gpu_provider(tmp_path: Path, precision: str) -> None:
    version = write_version(mlp_small(), tmp_path / "m", 1)
    runtime = OnnxRuntime(version, RuntimeOptions())
    runtime.load()
    served = serve_precision(runtime, RuntimeOptions(), precision)
    assert isinstance(served, OnnxRuntime)
    expected_provider = TENSORRT if TENSORRT in GPU_PROVIDERS else CUDA
    if expected_provider == CUDA and precision == "int8":
        pytest.skip("CUDA alone serves int8 on the CPU (no TensorRT here)")
    assert served.active_providers[0] == expected_provider
    got = served.run(DEFAULT_SIGNATURE, {"x": X})["probs"]
    assert np.abs(got - reference(version)).max() < 0.05
