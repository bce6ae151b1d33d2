"""TF Serving's REST API, checked against a real ferry process serving real ONNX models."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from support.models import (
    write_protocol_models,
)
from support.server import FerryProcess


@pytest.fixture
def server(model_root: Path, start_server) -> FerryProcess:
    write_protocol_models(model_root)
    server = start_server(str(model_root))
    for model in ("mlp", "scale", "pair", "echo", "ints"):
        server.wait_version(model, 2 if model == "scale" else 1)
    return server


def reference(model_path: Path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def test_model_status_reports_latest_version_as_string(server: FerryProcess) -> None:
    response = server.get("/v1/models/scale")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "model_version_status": [
            {
                "version": "2",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            },
        ]
    }


def test_status_of_unknown_model_and_version_is_404(server: FerryProcess) -> None:
    missing = server.get("/v1/models/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Could not find any versions of model nope"}
    version = server.get("/v1/models/scale/versions/7")
    assert version.status_code == 404
    assert version.json()["error"] == "Could not find version 7 of model scale"


def test_metadata_has_tf_serving_signature_def_shape(server: FerryProcess) -> None:
    response = server.get("/v1/models/mlp/metadata")
    assert response.status_code == 200
    body = response.json()
    assert body["model_spec"] == {"name": "mlp", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["x"] == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "8", "name": ""}],
            "unknown_rank": False,
        },
        "name": "x",
    }
    assert signature["outputs"]["probs"]["tensor_shape"]["dim"][1]["size"] == "3"


def test_row_predict_equals_onnxruntime(server: FerryProcess, model_root: Path) -> None:
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    response = server.predict("mlp", {"instances": x.tolist()})
    assert response.status_code == 200, response.text
    (expected,) = reference(model_root / "mlp/1/model.onnx", {"x": x})
    got = np.array(response.json()["predictions"], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_columnar_predict_answers_outputs(server: FerryProcess) -> None:
    response = server.predict("scale", {"inputs": [[1.0, 2.0, 3.0, 4.0]]})
    assert response.json() == {"outputs": [[2.0, 4.0, 6.0, 8.0]]}


def test_whole_floats_keep_trailing_zero(server: FerryProcess) -> None:
    response = server.predict("scale", {"instances": [[1, 2, 3, 4]]})
    assert b"[2.0,4.0,6.0,8.0]" in response.content.replace(b" ", b"")


def test_version_and_label_paths_choose_the_version(server: FerryProcess) -> None:
    body = {"instances": [[1.0, 1.0, 1.0, 1.0]]}
    assert server.predict("scale", body, "/versions/2").json()["predictions"] == [[2.0] * 4]
    # Latest policy serves only version 2: version 1 is not routable.
    response = server.predict("scale", body, "/versions/1")
    assert response.status_code == 404
    assert response.json()["error"] == "Servable not found for request: Specific(scale, 1)"
    response = server.predict("scale", body, "/labels/stable")
    assert response.status_code == 400
    assert response.json()["error"] == "Unrecognized servable version label: stable"


def test_named_inputs_row_and_columnar(server: FerryProcess) -> None:
    rows = server.predict(
        "pair",
        {"instances": [{"a": [1.0, 2.0], "b": [3.0, 4.0]}, {"a": [0.5, 0.5], "b": [2.0, 2.0]}]},
    )
    assert rows.status_code == 200, rows.text
    assert rows.json() == {
        "predictions": [
            {"sum": [4.0, 6.0], "prod": [3.0, 8.0]},
            {"sum": [2.5, 2.5], "prod": [1.0, 1.0]},
        ]
    }
    columns = server.predict("pair", {"inputs": {"a": [[1.0, 2.0]], "b": [[3.0, 4.0]]}})
    assert columns.json() == {"outputs": {"sum": [[4.0, 6.0]], "prod": [[3.0, 8.0]]}}


def test_b64_bytes_in_and_out(server: FerryProcess) -> None:
    payload = "héllo ✓ wörld".encode()
    encoded = base64.b64encode(payload).decode()
    response = server.predict("echo", {"instances": [{"b64": encoded}, "plain"]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert base64.b64decode(predictions[0]["b64"]) == payload
    assert base64.b64decode(predictions[1]["b64"]) == b"plain"


def test_non_utf8_bytes_for_an_onnx_string_input_are_refused(server: FerryProcess) -> None:
    encoded = base64.b64encode(b"\xff\xfe").decode()
    response = server.predict("echo", {"instances": [{"b64": encoded}]})
    assert response.status_code == 400
    assert "UTF-8" in response.json()["error"]


def test_integer_inputs_keep_integer_outputs(server: FerryProcess) -> None:
    response = server.predict("ints", {"instances": [[1, 2, 3]]})
    assert response.json() == {"predictions": [[2, 4, 6]]}


def test_signature_name_is_honoured(server: FerryProcess) -> None:
    ok = server.predict("scale", {"signature_name": "serving_default", "instances": [[1.0] * 4]})
    assert ok.status_code == 200
    bad = server.predict("scale", {"signature_name": "other", "instances": [[1.0] * 4]})
    assert bad.status_code == 400
    assert bad.json()["error"] == 'Serving signature name: "other" not found in signature def'


def test_nan_and_infinity_tokens_round_trip(server: FerryProcess) -> None:
    response = server.post(
        "/v1/models/scale:predict", data=b'{"instances": [[NaN, Infinity, -Infinity, 1.5]]}'
    )
    assert response.status_code == 200, response.text
    assert b"NaN" in response.content
    values = json.loads(response.content)["predictions"][0]
    assert np.isnan(values[0]) and values[1] == float("inf") and values[2] == float("-inf")
    assert values[3] == 3.0


def test_list_models_shows_every_model_and_state(server: FerryProcess) -> None:
    response = server.get("/v1/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    assert set(models) == {"mlp", "scale", "pair", "echo", "ints"}
    assert [s["version"] for s in models["scale"]["model_version_status"]] == ["2"]
    assert models["scale"]["model_version_status"][0]["state"] == "AVAILABLE"


def test_health_endpoints(server: FerryProcess) -> None:
    assert server.get("/v2/health/live").status_code == 200
    assert server.get("/v2/health/ready").status_code == 200


def test_malformed_v1_path_is_400(server: FerryProcess) -> None:
    response = server.get("/v1/models/scale/versions/x")
    assert response.status_code == 400
    assert response.json()["error"].startswith("Malformed request: GET /v1/models/scale")


def test_classify_refuses_a_signature_not_shaped_for_it(server: FerryProcess) -> None:
    response = server.post("/v1/models/scale:classify", json={"examples": [{"x": 1.0}]})
    assert response.status_code == 400
    assert response.json()["error"].startswith("No classification inputs found in SignatureDef: ")


def test_prometheus_metrics_count_requests(server: FerryProcess) -> None:
    for _ in range(3):
        server.predict("scale", {"instances": [[1.0] * 4]})
    server.predict("scale", {"instances": [[1.0] * 3]})
    text = server.get("/monitoring/prometheus/metrics").text
    ok = 'ferry_requests_total{api="rest",model="scale",outcome="OK",version="2"}'
    bad = 'ferry_requests_total{api="rest",model="scale",outcome="INVALID_ARGUMENT",version="2"}'
    assert f"{ok} 3.0" in text
    assert f"{bad} 1.0" in text
    assert 'ferry_loaded_versions{model="scale"} 1.0' in text
    for family in (
        "ferry_request_latency_seconds",
        "ferry_queue_latency_seconds",
        "ferry_compute_latency_seconds",
        "ferry_batch_size_rows",
        "ferry_load_latency_seconds",
    ):
        assert f"# TYPE {family} histogram" in text
