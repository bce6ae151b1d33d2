"""The SageMaker container contract (`ferry serve --sagemaker`), checked against real
ferry processes called as SageMaker's front end calls a container: plain HTTP with
Content-Type, Accept and X-Amzn-SageMaker-Custom-Attributes.

(boto3's `sagemaker-runtime` client calls /endpoints/{name}/invocations, SageMaker's
runtime API, which ferry serves too: tests/protocols/test_sagemaker_runtime.py.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.models import lookup_model, scale_model, string_model, two_input_model, write_model
from support.server import FerryProcess, wait_until

FAST_POLL = ["--file_system_poll_wait_seconds", "0.2", "--version_settle_seconds", "0.1"]
ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


def invoke(
    server: FerryProcess,
    body: bytes | str,
    content_type: str | None = "application/json",
    accept: str | None = None,
    attributes: str | None = None,
) -> requests.Response:
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if accept is not None:
        headers["Accept"] = accept
    if attributes is not None:
        headers[ATTRIBUTES] = attributes
    data = body.encode() if isinstance(body, str) else body
    return server.post("/invocations", data=data, headers=headers)


def wait_ping(server: FerryProcess, status: int = 200, timeout: float = 30.0) -> None:
    wait_until(
        lambda: server.get("/ping").status_code == status,
        timeout,
        message=f"/ping {status}",
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    """Four models in the `<dir>/<name>/<version>/` layout; the port comes from
    SAGEMAKER_BIND_TO_PORT, as in SageMaker's multi-container endpoints."""
    model_dir = tmp_path_factory.mktemp("opt-ml-model")
    write_model(scale_model(1.0), model_dir / "scale", 1)
    write_model(scale_model(2.0), model_dir / "scale", 2)
    write_model(lookup_model(), model_dir / "lookup", 1)
    write_model(string_model(), model_dir / "echo", 1)
    write_model(two_input_model(), model_dir / "pair", 1)
    log_path = tmp_path_factory.mktemp("logs") / "ferry.log"
    process = FerryProcess(
        ["--sagemaker", "--sagemaker_model_dir", str(model_dir)],
        log_path,
        env={"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": "scale"},
        port_env="SAGEMAKER_BIND_TO_PORT",
    )
    try:
        process.wait_ready()
        wait_ping(process)
        yield process
    finally:
        process.stop()


# -- /ping ---------------------------------------------------------------------------------


def test_ping_answers_200_with_an_empty_body_once_every_model_serves(
    server: FerryProcess,
) -> None:
    response = server.get("/ping")
    assert response.status_code == 200
    assert response.content == b""


def test_ping_is_503_until_a_model_serves_then_200(tmp_path: Path, start_server) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    server = start_server("--sagemaker", "--sagemaker_model_dir", str(model_dir), *FAST_POLL)
    assert server.get("/ping").status_code == 503
    write_model(scale_model(3.0), model_dir, 1)
    wait_ping(server, 200)
    response = invoke(server, '{"instances": [[1, 1, 1, 1]]}')
    assert response.json() == {"predictions": [[3.0, 3.0, 3.0, 3.0]]}


def test_a_model_that_cannot_load_keeps_ping_at_503(tmp_path: Path, start_server) -> None:
    model_dir = tmp_path / "model"
    write_model(scale_model(1.0), model_dir / "good", 1)
    broken = model_dir / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    server = start_server("--sagemaker", "--sagemaker_model_dir", str(model_dir))
    server.wait_version("good", 1)
    assert server.get("/ping").status_code == 503
    # The good model still answers requests that name it.
    response = invoke(server, "[[1, 2, 3, 4]]", attributes="tfs-model-name=good")
    assert response.status_code == 200


# -- application/json -----------------------------------------------------------------------


def test_tf_serving_row_body_passes_through(server: FerryProcess) -> None:
    response = invoke(server, '{"instances": [[1, 2, 3, 4], [0, 0, 0, 1]]}')
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"predictions": [[2.0, 4.0, 6.0, 8.0], [0.0, 0.0, 0.0, 2.0]]}


def test_tf_serving_columnar_body_passes_through(server: FerryProcess) -> None:
    response = invoke(server, '{"inputs": {"x": [[1, 1, 1, 1]]}}')
    assert response.json() == {"outputs": [[2.0, 2.0, 2.0, 2.0]]}


def test_array_of_arrays_is_the_list_of_instances(server: FerryProcess) -> None:
    response = invoke(server, "[[1, 2, 3, 4], [5, 6, 7, 8]]")
    assert response.json() == {"predictions": [[2.0, 4.0, 6.0, 8.0], [10.0, 12.0, 14.0, 16.0]]}


def test_flat_array_is_one_instance(server: FerryProcess) -> None:
    response = invoke(server, "[1, 2, 3, 4]")
    assert response.json() == {"predictions": [[2.0, 4.0, 6.0, 8.0]]}


def test_object_without_tf_serving_keys_is_one_named_instance(server: FerryProcess) -> None:
    response = invoke(server, '{"a": [1, 2], "b": [3, 4]}', attributes="tfs-model-name=pair")
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [{"sum": [4.0, 6.0], "prod": [3.0, 8.0]}]}


def test_json_content_type_parameters_are_ignored(server: FerryProcess) -> None:
    response = invoke(server, "[1, 2, 3, 4]", content_type="application/json; charset=utf-8")
    assert response.status_code == 200, response.text


# -- JSON lines ------------------------------------------------------------------------------


def test_json_lines_give_one_instance_per_line(server: FerryProcess) -> None:
    body = "[1, 2, 3, 4]\n\n[0, 0, 0, 1]\n"
    response = invoke(server, body, content_type="application/jsonlines")
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [[2.0, 4.0, 6.0, 8.0], [0.0, 0.0, 0.0, 2.0]]}


def test_json_lines_of_objects_sent_as_application_json(server: FerryProcess) -> None:
    body = '{"a": [1, 1], "b": [2, 2]}\r\n{"a": [0, 1], "b": [5, 5]}'
    response = invoke(server, body, attributes="tfs-model-name=pair")
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][1] == {"sum": [5.0, 6.0], "prod": [0.0, 5.0]}


def test_single_line_tf_serving_body_as_json_lines_passes_through(server: FerryProcess) -> None:
    response = invoke(
        server, '{"instances": [[1, 1, 1, 1]]}\n', content_type="application/jsonlines"
    )
    assert response.json() == {"predictions": [[2.0, 2.0, 2.0, 2.0]]}


def test_accept_jsonlines_answers_the_json_on_one_line(server: FerryProcess) -> None:
    response = invoke(
        server,
        "[[1, 2, 3, 4], [0, 0, 0, 1]]",
        accept="application/jsonlines, application/json;q=0.5",
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jsonlines"
    assert b"\n" not in response.content
    assert response.json() == {"predictions": [[2.0, 4.0, 6.0, 8.0], [0.0, 0.0, 0.0, 2.0]]}


def test_bad_json_line_is_named(server: FerryProcess) -> None:
    response = invoke(server, "[1, 2, 3, 4]\n[1, 2,\n", content_type="application/jsonlines")
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


# -- text/csv --------------------------------------------------------------------------------


def test_csv_rows_are_instances_with_numbers_parsed(server: FerryProcess) -> None:
    response = invoke(server, "1,2,3,4\n0.5,0,0,-1e1\n", content_type="text/csv")
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [[2.0, 4.0, 6.0, 8.0], [1.0, 0.0, 0.0, -20.0]]}


def test_single_column_csv_gives_a_scalar_per_instance(server: FerryProcess) -> None:
    response = invoke(
        server, "3\r\n0\r\n", content_type="text/csv", attributes="tfs-model-name=lookup"
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [[6.0, 7.0], [0.0, 1.0]]}


def test_single_column_csv_of_strings(server: FerryProcess) -> None:
    response = invoke(
        server,
        'hello\n"a, quoted one"\n',
        content_type="text/csv",
        attributes="tfs-model-name=echo",
    )
    assert response.status_code == 200, response.text
    expected = [{"b64": "aGVsbG8="}, {"b64": "YSwgcXVvdGVkIG9uZQ=="}]
    assert response.json() == {"predictions": expected}


def test_ragged_csv_is_400_naming_the_row(server: FerryProcess) -> None:
    response = invoke(server, "1,2,3,4\n1,2,3\n", content_type="text/csv")
    assert response.status_code == 400
    assert response.json() == {
        "error": "CSV: row 2 has 3 columns but row 1 has 4; every row must have the same "
        "number of columns"
    }


def test_csv_text_for_a_float_model_is_400(server: FerryProcess) -> None:
    response = invoke(server, "a,b,c,d\n", content_type="text/csv")
    assert response.status_code == 400
    # The rows reach TF Serving's JSON decoding, which words the error (ferry's detail after).
    assert response.json() == {
        "error": "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "a" Type: String is not of expected type: float '
        "(Input 'x' holds strings but the model expects DT_FLOAT)"
    }


def test_csv_with_an_empty_field_is_400(server: FerryProcess) -> None:
    response = invoke(server, "1,,3,4\n", content_type="text/csv")
    assert response.status_code == 400
    assert response.json() == {"error": "CSV: row 1, column 2 is empty"}


# -- custom attributes -----------------------------------------------------------------------


def test_without_attributes_the_default_model_answers_with_its_newest_version(
    server: FerryProcess,
) -> None:
    # SAGEMAKER_TFS_DEFAULT_MODEL_NAME=scale; version 2 doubles.
    assert invoke(server, "[1, 1, 1, 1]").json() == {"predictions": [[2.0, 2.0, 2.0, 2.0]]}


def test_model_version_attribute_selects_the_version(server: FerryProcess) -> None:
    response = invoke(server, "[1, 1, 1, 1]", attributes="tfs-model-version=1")
    assert response.json() == {"predictions": [[1.0, 1.0, 1.0, 1.0]]}


def test_attributes_among_other_keys_and_spaces(server: FerryProcess) -> None:
    attributes = "trace=abc, tfs-model-name=scale ,tfs-model-version=1, tfs-method=predict"
    response = invoke(server, "[1, 1, 1, 1]", attributes=attributes)
    assert response.json() == {"predictions": [[1.0, 1.0, 1.0, 1.0]]}


@pytest.mark.parametrize("method", ["classify", "regress"])
def test_classify_and_regress_answer_as_tf_serving_rest_does(
    server: FerryProcess, method: str
) -> None:
    """The container forwards the JSON to TF Serving's `:classify`/`:regress`; this ONNX
    model has no signature shaped for them, so TF Serving's 400 comes back (TF models
    with such signatures: tests/protocols/test_sagemaker_container_cases.py)."""
    body = '{"examples": [{"x": [1.0, 1.0, 1.0, 1.0]}]}'
    response = invoke(server, body, attributes=f"tfs-method={method}")
    rest = server.post(f"/v1/models/scale:{method}", data=body)
    assert response.status_code == rest.status_code == 400
    assert response.json() == rest.json()


def test_unknown_method_is_400(server: FerryProcess) -> None:
    response = invoke(server, "[1, 1, 1, 1]", attributes="tfs-method=explain")
    assert response.status_code == 400
    assert response.json()["error"].startswith("Malformed request: tfs-method=explain")


def test_unknown_model_is_404(server: FerryProcess) -> None:
    response = invoke(server, "[1, 1, 1, 1]", attributes="tfs-model-name=nope")
    assert response.status_code == 404
    assert response.json() == {"error": "Servable not found for request: Latest(nope)"}


def test_unknown_and_malformed_versions(server: FerryProcess) -> None:
    missing = invoke(server, "[1, 1, 1, 1]", attributes="tfs-model-version=7")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Servable not found for request: Specific(scale, 7)"}
    malformed = invoke(server, "[1, 1, 1, 1]", attributes="tfs-model-version=v1")
    assert malformed.status_code == 400
    assert malformed.json() == {"error": "tfs-model-version must be a version number, not 'v1'"}


# -- bad requests, and the server keeps serving ----------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [("application/x-npy", "application/x-npy"), (None, "Unknown")],
)
def test_unsupported_content_type_is_415(
    server: FerryProcess, content_type: str | None, shown: str
) -> None:
    response = invoke(server, b"\x93NUMPY", content_type=content_type)
    assert response.status_code == 415
    assert response.json() == {"error": f"Unsupported Media Type: {shown}"}


def test_broken_json_is_400(server: FerryProcess) -> None:
    response = invoke(server, '{"instances": [[1, 2')
    assert response.status_code == 400
    assert response.json()["error"].startswith("JSON Parse error")


def test_wrong_shape_is_400(server: FerryProcess) -> None:
    response = invoke(server, "[[1, 2, 3]]")
    assert response.status_code == 400
    assert "x" in response.json()["error"]


def test_other_paths_are_404(server: FerryProcess) -> None:
    response = server.post("/invocations/extra", data=b"[1]", headers={"Content-Type": "text/csv"})
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found"}


def test_server_keeps_serving_after_bad_requests(server: FerryProcess) -> None:
    invoke(server, "1,2\n3\n", content_type="text/csv")
    invoke(server, b"\xff\xfe", content_type="text/csv")
    invoke(server, "{", content_type="application/jsonlines")
    invoke(server, "x", content_type="image/png")
    assert server.process.poll() is None
    assert server.get("/ping").status_code == 200
    assert invoke(server, "[1, 1, 1, 1]").status_code == 200


def test_tf_serving_rest_api_is_served_on_the_same_port(server: FerryProcess) -> None:
    assert server.get("/v1/models/scale").status_code == 200
    response = server.predict("lookup", {"instances": [4]})
    assert response.json() == {"predictions": [[8.0, 9.0]]}


# -- model folder layouts --------------------------------------------------------------------


def test_version_folders_directly_in_the_model_dir_serve_a_model_named_model(
    tmp_path: Path, start_server
) -> None:
    model_dir = tmp_path / "model"
    write_model(scale_model(5.0), model_dir, 1)
    (model_dir / "code").mkdir()  # the container's inference-code folder is not a model
    server = start_server("--sagemaker", "--sagemaker_model_dir", str(model_dir))
    wait_ping(server)
    named = invoke(server, "[1, 1, 1, 1]", attributes="tfs-model-name=model")
    assert named.json() == {"predictions": [[5.0, 5.0, 5.0, 5.0]]}
    assert invoke(server, "[1, 1, 1, 1]").json() == named.json()
    models = server.get("/v1/models").json()["models"]
    assert [m["name"] for m in models] == ["model"]


def test_estimator_export_layout_serves_servo(tmp_path: Path, start_server) -> None:
    model_dir = tmp_path / "model"
    write_model(scale_model(1.0), model_dir / "export" / "Servo", 1)
    write_model(scale_model(4.0), model_dir / "export" / "Servo", 2)
    server = start_server("--sagemaker", "--sagemaker_model_dir", str(model_dir))
    wait_ping(server)
    assert invoke(server, "[1, 1, 1, 1]").json() == {"predictions": [[4.0, 4.0, 4.0, 4.0]]}
    # Every version folder is served, as in the container's `specific` version policy.
    old = invoke(server, "[1, 1, 1, 1]", attributes="tfs-model-name=Servo,tfs-model-version=1")
    assert old.json() == {"predictions": [[1.0, 1.0, 1.0, 1.0]]}


def test_named_model_folders_and_the_first_by_name_as_default(tmp_path: Path, start_server) -> None:
    model_dir = tmp_path / "model"
    write_model(scale_model(7.0), model_dir / "zeta", 1)
    write_model(scale_model(3.0), model_dir / "alpha", 1)
    server = start_server("--sagemaker", "--sagemaker_model_dir", str(model_dir))
    wait_ping(server)
    assert invoke(server, "[1, 1, 1, 1]").json() == {"predictions": [[3.0, 3.0, 3.0, 3.0]]}
    zeta = invoke(server, "[1, 1, 1, 1]", attributes="tfs-model-name=zeta")
    assert zeta.json() == {"predictions": [[7.0, 7.0, 7.0, 7.0]]}


def test_two_folders_with_one_model_name_fail_at_start_up(tmp_path: Path, start_server) -> None:
    model_dir = tmp_path / "model"
    write_model(scale_model(1.0), model_dir / "a" / "m", 1)
    write_model(scale_model(1.0), model_dir / "b" / "m", 1)
    server = start_server("--sagemaker", "--sagemaker_model_dir", str(model_dir), ready=False)
    assert server.process.wait(30) != 0
    assert "two models are named 'm'" in server.log()
