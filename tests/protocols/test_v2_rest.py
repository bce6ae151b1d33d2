"""The V2 (Open Inference Protocol) REST API, checked against a real ferry process."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import orjson
import pytest
from support.models import scale_model, string_model, two_input_model, write_model
from support.server import FerryProcess, wait_until

HEADER = "Inference-Header-Content-Length"


@pytest.fixture
def server(model_root: Path, start_server) -> FerryProcess:
    write_model(scale_model(1.0), model_root / "scale", 1)
    write_model(scale_model(2.0), model_root / "scale", 2)
    write_model(two_input_model(), model_root / "pair", 1)
    write_model(string_model(), model_root / "echo", 1)
    server = start_server(str(model_root), "--enable_model_control")  # repository load/unload
    for model, version in (("scale", 2), ("pair", 1), ("echo", 1)):
        server.wait_version(model, version)
    return server


def infer(server: FerryProcess, path: str, body: dict):
    return server.post(f"/v2/models/{path}/infer", json=body)


def x_input(rows: list[list[float]], name: str = "x", datatype: str = "FP32") -> dict:
    return {"name": name, "datatype": datatype, "shape": [len(rows), len(rows[0])], "data": rows}


def binary_post(server: FerryProcess, path: str, header: dict, *chunks: bytes):
    json_part = orjson.dumps(header)
    return server.post(
        f"/v2/models/{path}/infer",
        data=json_part + b"".join(chunks),
        headers={HEADER: str(len(json_part)), "Content-Type": "application/octet-stream"},
    )


def assert_still_serving(server: FerryProcess) -> None:
    response = infer(server, "scale", {"inputs": [x_input([[1, 2, 3, 4]])]})
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [2, 4, 6, 8]


# -- server and model metadata ---------------------------------------------------------------


def test_server_metadata_lists_the_extensions(server: FerryProcess) -> None:
    body = server.get("/v2").json()

    assert body["name"] == "ferry"
    assert body["version"]
    assert set(body["extensions"]) >= {
        "binary_tensor_data",
        "model_repository",
        "statistics",
        "model_configuration",
    }


def test_health_live_and_ready(server: FerryProcess) -> None:
    assert server.get("/v2/health/live").status_code == 200
    assert server.get("/v2/health/ready").status_code == 200


def test_model_metadata_has_v2_datatypes_and_dynamic_dims(server: FerryProcess) -> None:
    body = server.get("/v2/models/scale").json()

    assert body == {
        "name": "scale",
        "versions": ["2"],  # the default policy serves the latest only
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
    }
    assert server.get("/v2/models/scale/versions/2").json()["name"] == "scale"
    assert server.get("/v2/models/scale/versions/1").status_code == 404
    echo = server.get("/v2/models/echo").json()
    assert echo["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]


def test_unknown_model_or_version_is_404_with_an_error(server: FerryProcess) -> None:
    for path in ("/v2/models/nope", "/v2/models/scale/versions/9", "/v2/models/nope/config"):
        response = server.get(path)
        assert response.status_code == 404, path
        assert "not found" in response.json()["error"]


def test_model_ready(server: FerryProcess) -> None:
    assert server.get("/v2/models/scale/ready").status_code == 200
    assert server.get("/v2/models/scale/versions/2/ready").status_code == 200
    assert server.get("/v2/models/scale/versions/1/ready").status_code == 400
    assert server.get("/v2/models/scale/versions/5/ready").status_code == 400
    assert server.get("/v2/models/nope/ready").status_code == 400


def test_model_config_is_tritons_shape(server: FerryProcess) -> None:
    config = server.get("/v2/models/scale/config").json()

    assert config["name"] == "scale"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == 64
    assert config["input"] == [
        {"name": "x", "data_type": "TYPE_FP32", "format": "FORMAT_NONE", "dims": [4]}
    ]
    assert config["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}]
    assert "dynamic_batching" in config
    echo = server.get("/v2/models/echo/versions/1/config").json()
    assert echo["input"][0]["data_type"] == "TYPE_STRING"
    assert echo["input"][0]["dims"] == []


# -- inference --------------------------------------------------------------------------------


def test_infer_json_nested_and_flat_with_id_echoed(server: FerryProcess) -> None:
    nested = infer(server, "scale", {"id": "abc", "inputs": [x_input([[1, 2, 3, 4]])]})
    flat = infer(
        server,
        "scale/versions/2",
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
    )

    assert nested.status_code == 200
    assert nested.headers["content-type"] == "application/json"
    assert nested.json() == {
        "model_name": "scale",
        "model_version": "2",
        "id": "abc",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [2, 4, 6, 8]}],
    }
    assert flat.json()["model_version"] == "2"
    assert "id" not in flat.json()
    assert flat.json()["outputs"][0]["data"] == [2, 4, 6, 8]


def test_requested_outputs_filter_the_answer(server: FerryProcess) -> None:
    body = {
        "inputs": [x_input([[1, 2]], "a"), x_input([[3, 4]], "b")],
        "outputs": [{"name": "prod"}],
    }

    response = infer(server, "pair", body)

    assert response.status_code == 200
    assert response.json()["outputs"] == [
        {"name": "prod", "datatype": "FP32", "shape": [1, 2], "data": [3, 8]}
    ]
    unknown = infer(server, "pair", {**body, "outputs": [{"name": "nope"}]})
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "unexpected inference output 'nope' for model 'pair'"


def test_binary_inputs_and_outputs(server: FerryProcess) -> None:
    a = np.array([[1, 2], [3, 4]], dtype=np.float32)
    b = np.array([[10, 20], [30, 40]], dtype=np.float32)
    header = {
        "inputs": [
            {
                "name": "a",
                "datatype": "FP32",
                "shape": [2, 2],
                "parameters": {"binary_data_size": 16},
            },
            {
                "name": "b",
                "datatype": "FP32",
                "shape": [2, 2],
                "parameters": {"binary_data_size": 16},
            },
        ],
        "outputs": [{"name": "sum", "parameters": {"binary_data": True}}, {"name": "prod"}],
    }

    response = binary_post(server, "pair", header, a.tobytes(), b.tobytes())

    assert response.status_code == 200
    length = int(response.headers[HEADER])
    head = orjson.loads(response.content[:length])
    assert head["outputs"][0] == {
        "name": "sum",
        "datatype": "FP32",
        "shape": [2, 2],
        "parameters": {"binary_data_size": 16},
    }
    assert head["outputs"][1]["data"] == (a * b).reshape(-1).tolist()
    summed = np.frombuffer(response.content[length:], dtype="<f4").reshape(2, 2)
    np.testing.assert_array_equal(summed, a + b)


def test_binary_data_output_parameter_makes_every_output_binary(server: FerryProcess) -> None:
    body = {"parameters": {"binary_data_output": True}, "inputs": [x_input([[1, 2, 3, 4]])]}

    response = infer(server, "scale", body)

    length = int(response.headers[HEADER])
    assert response.headers["content-type"] == "application/octet-stream"
    assert orjson.loads(response.content[:length])["outputs"][0]["parameters"] == {
        "binary_data_size": 16
    }
    assert np.frombuffer(response.content[length:], dtype="<f4").tolist() == [2, 4, 6, 8]


def test_bytes_tensors_in_json_and_binary(server: FerryProcess) -> None:
    as_json = infer(
        server,
        "echo",
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["hi", "é"]}]},
    )
    assert as_json.json()["outputs"][0] == {
        "name": "text_bytes",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["hi", "é"],
    }

    payload = struct.pack("<I", 3) + "é!".encode() + struct.pack("<I", 0)
    header = {
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": len(payload)},
            }
        ],
        "outputs": [{"name": "text_bytes", "parameters": {"binary_data": True}}],
    }
    response = binary_post(server, "echo", header, payload)

    assert response.status_code == 200
    length = int(response.headers[HEADER])
    assert response.content[length:] == payload


# -- bad input: a clear error, and the server keeps serving ---------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"inputs": [x_input([[1, 2, 3, 4]], datatype="FP64")]},
            "inference input 'x' data-type is 'FP64', but model 'scale' expects 'FP32'",
        ),
        ({"inputs": [x_input([[1, 2, 3]])]}, "Expected [-1,4], got [1,3]."),
        ({"inputs": [x_input([[1, 2, 3, 4]], name="z")]}, "unexpected inference input 'z'"),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2]}]},
            "has 2 elements in 'data' but shape [1, 4] needs 4",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": ["a"] * 4}]},
            "numbers",
        ),
        ({"inputs": []}, "non-empty 'inputs'"),
    ],
    ids=["dtype", "shape", "missing", "count", "strings", "empty"],
)
def test_bad_inputs_get_400_with_the_reason(server: FerryProcess, body: dict, message: str) -> None:
    response = infer(server, "scale", body)

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert_still_serving(server)


def test_binary_sizes_that_do_not_add_up_get_400(server: FerryProcess) -> None:
    header = {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [1, 4],
                "parameters": {"binary_data_size": 16},
            }
        ]
    }
    short = binary_post(server, "scale", header, b"\x00" * 8)
    long = binary_post(server, "scale", header, b"\x00" * 20)
    wrong_size = binary_post(
        server,
        "scale",
        {"inputs": [{**header["inputs"][0], "parameters": {"binary_data_size": 12}}]},
        b"\x00" * 12,
    )

    assert short.status_code == 400
    assert short.json()["error"] == (
        "unexpected size for input 'x', expecting 8 additional bytes for model 'scale'"
    )
    assert long.status_code == 400
    assert long.json()["error"] == "unexpected additional input data for model 'scale'"
    assert wrong_size.status_code == 400
    assert (
        "input byte size mismatch for input 'x' for model 'scale'. Expected 16, got 12"
        in (wrong_size.json()["error"])
    )
    assert_still_serving(server)


def test_malformed_json_and_unknown_model(server: FerryProcess) -> None:
    bad = server.post("/v2/models/scale/infer", data=b"{not json")
    missing = infer(server, "nope", {"inputs": [x_input([[1, 2, 3, 4]])]})

    assert bad.status_code == 400
    assert "not valid JSON" in bad.json()["error"]
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]
    assert_still_serving(server)


# -- statistics ------------------------------------------------------------------------------


def test_statistics_count_successes_failures_and_batches(server: FerryProcess) -> None:
    for _ in range(3):
        assert infer(server, "scale", {"inputs": [x_input([[1, 2, 3, 4], [5, 6, 7, 8]])]}).ok
    assert infer(server, "scale", {"inputs": [x_input([[1, 2, 3]])]}).status_code == 400

    stats = server.get("/v2/models/scale/versions/2/stats").json()["model_stats"]

    assert len(stats) == 1
    entry = stats[0]
    assert entry["name"] == "scale"
    assert entry["version"] == "2"
    inference = entry["inference_stats"]
    assert inference["success"]["count"] == 3
    assert inference["success"]["ns"] > 0
    assert inference["fail"]["count"] == 1
    assert inference["queue"]["count"] == 3
    assert inference["compute_infer"]["count"] == 3
    assert inference["compute_infer"]["ns"] > 0
    assert inference["compute_input"]["count"] == 3
    assert inference["compute_output"]["count"] == 3
    assert entry["inference_count"] == 6  # rows
    assert entry["execution_count"] == 3
    assert entry["last_inference"] > 1_600_000_000_000  # milliseconds since the epoch
    assert [b["batch_size"] for b in entry["batch_stats"]] == [2]
    everything = server.get("/v2/models/stats").json()["model_stats"]
    assert {(e["name"], e["version"]) for e in everything} == {
        ("scale", "2"),
        ("pair", "1"),
        ("echo", "1"),
    }
    per_model = server.get("/v2/models/scale/stats").json()["model_stats"]
    assert [e["version"] for e in per_model] == ["2"]


def test_v2_and_tf_serving_requests_share_one_version_and_its_batches(
    server: FerryProcess,
) -> None:
    def batches() -> float:
        text = server.get("/monitoring/prometheus/metrics").text
        match = re.search(r'ferry_batch_size_rows_count\{model="scale",version="2"\} (\S+)', text)
        return float(match.group(1)) if match else 0.0

    before = batches()
    assert infer(server, "scale", {"inputs": [x_input([[1, 2, 3, 4]])]}).ok
    assert server.predict("scale", {"instances": [[1, 2, 3, 4]]}).ok

    assert batches() == before + 2
    metrics = server.get("/monitoring/prometheus/metrics").text
    for api in ("rest", "v2_rest"):
        assert (
            f'ferry_requests_total{{api="{api}",model="scale",outcome="OK",version="2"}}' in metrics
        )
    stats = server.get("/v2/models/scale/versions/2/stats").json()["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == 2


# -- model repository extension ---------------------------------------------------------------


def test_repository_index_unload_and_load(server: FerryProcess) -> None:
    index = server.post("/v2/repository/index").json()
    assert {"name": "scale", "version": "2", "state": "READY", "reason": ""} in index
    assert {"name": "pair", "version": "1", "state": "READY", "reason": ""} in index

    unloaded = server.post("/v2/repository/models/pair/unload", timeout=30)
    assert unloaded.status_code == 200
    wait_until(
        lambda: server.get("/v2/models/pair/ready").status_code == 400,
        10,
        message="pair unloaded",
    )
    assert (
        infer(
            server, "pair", {"inputs": [x_input([[1, 2]], "a"), x_input([[1, 2]], "b")]}
        ).status_code
        == 404
    )
    index = server.post("/v2/repository/index").json()
    assert {"name": "pair", "state": "UNAVAILABLE", "reason": "unloaded"} in index
    ready_only = server.post("/v2/repository/index", json={"ready": True}).json()
    assert all(entry["state"] == "READY" for entry in ready_only)
    assert "pair" not in {entry["name"] for entry in ready_only}

    loaded = server.post("/v2/repository/models/pair/load", timeout=60)
    assert loaded.status_code == 200
    assert server.get("/v2/models/pair/ready").status_code == 200
    again = infer(server, "pair", {"inputs": [x_input([[1, 2]], "a"), x_input([[1, 2]], "b")]})
    assert again.status_code == 200


def test_repository_errors(server: FerryProcess) -> None:
    missing = server.post("/v2/repository/models/nope/load")
    assert missing.status_code == 500  # Triton's INTERNAL, as for every failed load
    assert missing.json()["error"] == (
        "failed to load 'nope', failed to poll from model repository"
    )
    assert server.post("/v2/repository/models/nope/unload").status_code == 200  # as Triton
    assert server.post("/v2/repository/index", data=b"[1").status_code == 400
    assert server.post("/v2/nothing/here").status_code == 404
    assert_still_serving(server)
