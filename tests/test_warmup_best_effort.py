"""A model whose generated warm-up input cannot run still serves: Triton's `simple_string`
(strings that the graph casts to INT32, added and subtracted, cast back) fails on the
generated `b""`, logs one warning, and answers real requests; a recorded warm-up that
fails still fails the load, as in TF Serving."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper
from support.framework_models import settled_status, start_repository_server
from support.models import write_model
from test_warmup import tfrecord

from ferry.protos import message_class
from ferry.warmup import TF_WARMUP_FILE

WARNING = "generated warm-up input did not fit"


def simple_string_model() -> onnx.ModelProto:
    """Triton's simple_string in ONNX: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1
    over STRING[-1, 16] holding decimal integers."""
    nodes = [
        helper.make_node("Cast", ["INPUT0"], ["a"], to=TensorProto.INT32),
        helper.make_node("Cast", ["INPUT1"], ["b"], to=TensorProto.INT32),
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Sub", ["a", "b"], ["difference"]),
        helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=TensorProto.STRING),
        helper.make_node("Cast", ["difference"], ["OUTPUT1"], to=TensorProto.STRING),
    ]
    strings = [
        helper.make_tensor_value_info(name, TensorProto.STRING, ["batch", 16])
        for name in ("INPUT0", "INPUT1", "OUTPUT0", "OUTPUT1")
    ]
    graph = helper.make_graph(nodes, "simple_string", strings[:2], strings[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def string_warmup_record(value: str) -> bytes:
    entry = message_class("tensorflow.serving.PredictionLog")()
    for name in ("INPUT0", "INPUT1"):
        tensor = entry.predict_log.request.inputs[name]
        tensor.dtype = 7  # DT_STRING
        tensor.tensor_shape.dim.add(size=1)
        tensor.tensor_shape.dim.add(size=16)
        tensor.string_val.extend([value.encode()] * 16)
    return entry.SerializeToString()


def test_simple_string_serves_although_its_generated_warmup_fails(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_model(simple_string_model(), root / "simple_string", 1)
    recorded = write_model(simple_string_model(), root / "recorded_bad", 1)
    (recorded / TF_WARMUP_FILE).parent.mkdir()
    (recorded / TF_WARMUP_FILE).write_bytes(tfrecord(string_warmup_record("not a number")))
    server = start_repository_server(root, tmp_path / "ferry.log")
    try:
        assert settled_status(server, "simple_string")["state"] == "AVAILABLE"
        body = {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "BYTES",
                    "shape": [1, 16],
                    "data": [str(i) for i in range(16)],
                },
                {"name": "INPUT1", "datatype": "BYTES", "shape": [1, 16], "data": ["1"] * 16},
            ]
        }
        response = server.post("/v2/models/simple_string/infer", json=body)
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        assert outputs["OUTPUT0"] == [str(i + 1) for i in range(16)]
        assert outputs["OUTPUT1"] == [str(i - 1) for i in range(16)]

        warnings = [line for line in server.log().splitlines() if WARNING in line]
        assert len(warnings) == 1, warnings
        assert "simple_string/1" in warnings[0] and "'serving_default'" in warnings[0]

        failed = settled_status(server, "recorded_bad")
        assert failed["state"] == "END"
        assert f"{TF_WARMUP_FILE} record 0: " in failed["status"]["error_message"]
    finally:
        server.stop()
