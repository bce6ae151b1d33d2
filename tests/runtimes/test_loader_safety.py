"""What each loader runs at load, in process: nothing the operator did not allow.

tests/security/test_consent.py covers the formats that can run code against a real
server; these cover the rest of each loader's surface, one crafted file per way in:
every entry of a `.pt2` archive that torch would unpickle or load as a library, Keras
architecture files, TensorFlow graphs with custom ops or Python callbacks, and ONNX
custom ops and external data outside the model folder.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from support.security import marker_file

from ferry.consent import CodeNotAllowed, ModelConsent, PickleNotAllowed
from ferry.runtimes.base import RuntimeOptions
from ferry.runtimes.onnx import OnnxRuntime

NOTHING_ALLOWED = ModelConsent("m")


class _Eval:
    """Pickles as `eval(source)`."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self) -> tuple:
        return (eval, (self.source,))


def writes_marker(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('ran')"


# -- PyTorch: every way a .pt2 archive gets unpickled or compiled code loaded -------------


@pytest.fixture(scope="module")
def clean_pt2(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    import torch

    batch = {"input": {0: torch.export.Dim("batch")}}  # a symbolic size: shape expressions
    program = torch.export.export(torch.nn.Linear(4, 2), (torch.zeros(2, 4),), dynamic_shapes=batch)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def tampered(clean: bytes, path: Path, entries: dict[str, bytes], root: bool = True) -> Path:
    """The clean archive with `entries` added or replaced (under its root folder)."""
    with zipfile.ZipFile(io.BytesIO(clean)) as source:
        prefix = source.namelist()[0].split("/")[0] + "/" if root else ""
        names = {prefix + name: data for name, data in entries.items()}
        with zipfile.ZipFile(path, "w") as out:
            for info in source.infolist():
                if info.filename not in names:
                    out.writestr(info, source.read(info.filename))
            for name, data in names.items():
                out.writestr(name, data)
    return path


def torch_pickle(marker: Path) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(_Eval(writes_marker(marker)), buffer)
    return buffer.getvalue()


@pytest.mark.torch
def test_a_clean_pt2_needs_no_consent(clean_pt2: bytes, tmp_path: Path) -> None:
    import torch

    from ferry.runtimes.torch import load_exported_program

    path = tmp_path / "model.pt2"
    path.write_bytes(clean_pt2)
    program = load_exported_program(torch, path, NOTHING_ALLOWED)
    assert program.module()(torch.zeros(3, 4)).shape == (3, 2)


@pytest.mark.torch
def test_pickled_sample_inputs_would_run_and_are_refused(clean_pt2: bytes, tmp_path: Path) -> None:
    """torch retries sample inputs with weights_only=False: the payload runs in plain
    torch.export.load, and ferry refuses the archive before torch opens it."""
    import torch

    from ferry.runtimes.torch import load_exported_program

    marker = marker_file(tmp_path)
    entries = {"data/sample_inputs/model.pt": torch_pickle(marker)}
    path = tampered(clean_pt2, tmp_path / "model.pt2", entries)
    with pytest.raises(PickleNotAllowed, match=r"data/sample_inputs/model\.pt"):
        load_exported_program(torch, path, NOTHING_ALLOWED)
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017 - torch fails after the payload ran
        torch.export.load(str(path))
    assert marker.exists(), "the payload is not a real attack on plain torch"


@pytest.mark.torch
@pytest.mark.parametrize(
    ("entry", "root", "refusal", "named"),
    [
        ("data/constants/model.pt", True, PickleNotAllowed, "data/constants/model.pt"),
        ("data/constants/opaque_obj_0", True, PickleNotAllowed, "opaque_obj_0"),
        ("data/constants/custom_obj_0", True, PickleNotAllowed, "custom_obj_0"),
        ("version", False, PickleNotAllowed, "torch 2.7 format"),
        ("data/aotinductor/model/model.so", True, CodeNotAllowed, "compiled code"),
    ],
)
def test_every_unpickled_or_compiled_entry_is_refused(
    clean_pt2: bytes, tmp_path: Path, entry: str, root: bool, refusal: type, named: str
) -> None:
    import torch

    from ferry.runtimes.torch import load_exported_program

    marker = marker_file(tmp_path)
    path = tampered(clean_pt2, tmp_path / "model.pt2", {entry: torch_pickle(marker)}, root)
    with pytest.raises(refusal, match=named) as raised:
        load_exported_program(torch, path, NOTHING_ALLOWED)
    flag = "--allow_code m" if refusal is CodeNotAllowed else "--allow_pickle m"
    assert f"ferry serve {flag}" in str(raised.value)
    assert not marker.exists()


@pytest.mark.torch
def test_a_shape_expression_that_is_python_would_run_and_is_refused(
    clean_pt2: bytes, tmp_path: Path
) -> None:
    """torch parses symbolic shapes with sympy.sympify, which evals: no pickle needed."""
    import torch

    from ferry.runtimes.torch import load_exported_program

    marker = marker_file(tmp_path)
    with zipfile.ZipFile(io.BytesIO(clean_pt2)) as source:
        name = next(n for n in source.namelist() if "/models/" in n and n.endswith(".json"))
        program = source.read(name).decode()
    symbol = re.search(r"Symbol\('s\d+'[^\"]*\)", program).group(0)
    payload = f"({writes_marker(marker)}, {symbol})[1]"
    tampered_program = program.replace(json.dumps(symbol), json.dumps(payload), 1)
    entry = name.split("/", 1)[1]
    path = tampered(clean_pt2, tmp_path / "model.pt2", {entry: tampered_program.encode()})
    with pytest.raises(CodeNotAllowed, match="shape expression") as raised:
        load_exported_program(torch, path, NOTHING_ALLOWED)
    assert "ferry serve --allow_code m" in str(raised.value)
    assert not marker.exists()
    torch.export.load(str(path))
    assert marker.exists(), "the payload is not a real attack on plain torch"


@pytest.mark.torch
def test_a_guard_that_is_python_would_run_and_is_refused(clean_pt2: bytes, tmp_path: Path) -> None:
    """ExportedProgram.module() execs the archive's input guards into a function that
    every call runs (ferry's warm-up is the first): no pickle needed."""
    import torch

    from ferry.runtimes.torch import load_exported_program

    marker = marker_file(tmp_path)
    with zipfile.ZipFile(io.BytesIO(clean_pt2)) as source:
        name = next(n for n in source.namelist() if "/models/" in n and n.endswith(".json"))
        program = json.loads(source.read(name))
    program["guards_code"] = [f"{writes_marker(marker)} > 0"]
    entry = name.split("/", 1)[1]
    path = tampered(clean_pt2, tmp_path / "model.pt2", {entry: json.dumps(program).encode()})
    with pytest.raises(CodeNotAllowed, match="guard") as raised:
        load_exported_program(torch, path, NOTHING_ALLOWED)
    assert "ferry serve --allow_code m" in str(raised.value)
    assert not marker.exists()
    torch.export.load(str(path)).module()(torch.zeros(2, 4))
    assert marker.exists(), "the payload is not a real attack on plain torch"


@pytest.mark.torch
def test_a_payload_config_asking_for_pickle_is_refused(clean_pt2: bytes, tmp_path: Path) -> None:
    import torch

    from ferry.runtimes.torch import load_exported_program

    with zipfile.ZipFile(io.BytesIO(clean_pt2)) as source:
        name = next(n for n in source.namelist() if n.endswith("_weights_config.json"))
        config = json.loads(source.read(name))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    entry = name.split("/", 1)[1]
    path = tampered(clean_pt2, tmp_path / "model.pt2", {entry: json.dumps(config).encode()})
    with pytest.raises(PickleNotAllowed, match=first["path_name"]):
        load_exported_program(torch, path, NOTHING_ALLOWED)


# -- Keras: the architecture + weights pair ------------------------------------------------


@pytest.mark.tensorflow
def test_a_lambda_in_model_json_is_refused(tmp_path: Path) -> None:
    import keras

    from ferry.runtimes.keras import load_keras_model

    marker = marker_file(tmp_path)
    function = eval(f"lambda t: ({writes_marker(marker)}, t * 2)[1]")
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Lambda(function, name="payload")(inputs))
    (tmp_path / "model.json").write_text(model.to_json())
    model.save_weights(tmp_path / "model.weights.h5")
    marker.unlink()  # building the model called it here
    with pytest.raises(CodeNotAllowed, match=r"Lambda layers \(payload\)"):
        load_keras_model(
            keras, tmp_path / "model.json", tmp_path / "model.weights.h5", NOTHING_ALLOWED
        )
    assert not marker.exists()
    allowed = ModelConsent("m", code=True)
    loaded = load_keras_model(
        keras, tmp_path / "model.json", tmp_path / "model.weights.h5", allowed
    )
    assert np.asarray(loaded(np.ones((1, 4), np.float32))).tolist() == [[2.0] * 4]


# -- TensorFlow: custom ops and Python callbacks -------------------------------------------


@pytest.mark.tensorflow
def test_savedmodels_with_custom_ops_or_python_callbacks_fail_clearly(tmp_path: Path) -> None:
    import tensorflow as tf

    from ferry.runtimes.tensorflow import TensorFlowRuntime, read_saved_model

    class Double(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x: tf.Tensor) -> dict:
            return {"y": x * 2.0}

    class Callback(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x: tf.Tensor) -> dict:
            return {"y": tf.py_function(lambda t: t * 2, [x], tf.float32)}

    for name, module in (("custom", Double()), ("callback", Callback())):
        tf.saved_model.save(module, tmp_path / name, signatures={"serving_default": module.serve})
    # A custom op: the graph names an op type no library in this process registers.
    saved_model = read_saved_model(tmp_path / "custom")
    for function in saved_model.meta_graphs[0].graph_def.library.function:
        for node in function.node_def:
            if node.op == "Mul":
                node.op = "FerryPayloadOp"
    (tmp_path / "custom" / "saved_model.pb").write_bytes(saved_model.SerializeToString())

    with pytest.raises(ValueError, match="ops this TensorFlow does not have: FerryPayloadOp"):
        TensorFlowRuntime(tmp_path / "custom", RuntimeOptions()).load()
    with pytest.raises(ValueError, match="calls Python functions"):
        TensorFlowRuntime(tmp_path / "callback", RuntimeOptions()).load()


# -- ONNX: custom ops and external data ----------------------------------------------------


def _io(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [4])


def test_onnx_custom_ops_are_never_registered(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Payload", ["x"], ["y"], domain="com.example")],
        "g",
        [_io("x")],
        [_io("y")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    model.ir_version = 8
    (tmp_path / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(Exception, match=r"com\.example:Payload.*not a registered"):
        OnnxRuntime(tmp_path, RuntimeOptions()).load()


def test_onnx_external_data_outside_the_version_folder_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    np.arange(4, dtype=np.float32).tofile(secret)
    weight = TensorProto(name="k", data_type=TensorProto.FLOAT, dims=[4])
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../secret.bin")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "k"], ["y"])], "g", [_io("x")], [_io("y")], [weight]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    version = tmp_path / "1"
    version.mkdir()
    (version / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(Exception, match="escapes model directory"):
        OnnxRuntime(version, RuntimeOptions()).load()
