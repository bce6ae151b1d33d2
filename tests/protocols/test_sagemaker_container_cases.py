"""The SageMaker TensorFlow Serving container's own local tests
(`test/integration/local/test_container.py` in aws/sagemaker-tensorflow-serving-container)
against `ferry serve --sagemaker`, with the container's answers.

As there, the module runs twice: once with `SAGEMAKER_TFS_ENABLE_BATCHING=true` and
`SAGEMAKER_SAFE_PORT_RANGE`, once without. The model is the container's `half_plus_three`
(y = 0.5x + 3, versions 123 and 124, a TF1 export whose regress signature declares its
string input DT_FLOAT) built by `support.tf1_models`, beside a TF2 export with regress and
classify signatures for the SageMaker SDK's `TensorFlowPredictor.regress()/.classify()`
(which send `tfs-method=regress|classify` with the model's attributes and a JSON body).

Where the container's answer comes from TF Serving's pretty-printed JSON, the JSON is
compared parsed (ferry writes it compact); everything the container itself decides
(status, Content-Type, one line for JSON Accept types) is compared exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.server import FerryProcess, free_port, wait_until

pytestmark = pytest.mark.tensorflow

tf = pytest.importorskip("tensorflow")
from support.tf1_models import save_half_plus_three  # noqa: E402

ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


class Regressor(tf.Module):
    """TF2 regress and classify signatures over tf.Examples with a float feature `x`:
    regress y = 2x + 1; classify scores (sigmoid(x), 1 - sigmoid(x)) for classes pos, neg."""

    def _x(self, serialized: tf.Tensor) -> tf.Tensor:
        spec = {"x": tf.io.FixedLenFeature([1], tf.float32)}
        return tf.io.parse_example(serialized, spec)["x"]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": 2.0 * self._x(inputs) + 1.0}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        p = tf.sigmoid(self._x(inputs))
        scores = tf.concat([p, 1.0 - p], axis=1)
        classes = tf.tile(tf.constant([["pos", "neg"]]), [tf.shape(scores)[0], 1])
        return {"scores": scores, "classes": classes}


def save_regressor(path: Path) -> None:
    module = Regressor()
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "serving_default": module.regress,
            "regress_x": module.regress,
            "classify_x": module.classify,
        },
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("opt-ml-model")
    for version in ("00000123", "00000124"):
        save_half_plus_three(root / "half_plus_three" / version, regress_input_declared_float=True)
    (root / "half_plus_three" / ".00000111").mkdir()  # the container's hidden folder
    save_regressor(root / "regressor" / "1")
    return root


@pytest.fixture(scope="module", params=[True, False], ids=["batching-and-port-range", "plain"])
def container(
    request: pytest.FixtureRequest, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FerryProcess, int | None]]:
    """`docker run ... serve` of the container's test, as a ferry process."""
    env = {"SAGEMAKER_TFS_NGINX_LOGLEVEL": "info"}
    grpc_port = None
    if request.param:
        grpc_port = free_port()
        env["SAGEMAKER_TFS_ENABLE_BATCHING"] = "true"
        env["SAGEMAKER_SAFE_PORT_RANGE"] = f"{grpc_port}-{grpc_port + 2}"
    process = FerryProcess(
        ["--sagemaker", "--sagemaker_model_dir", str(model_dir)],
        tmp_path_factory.mktemp("logs") / "ferry.log",
        env=env,
        port_env="SAGEMAKER_BIND_TO_PORT",
    )
    try:
        process.wait_ready(timeout=120)
        wait_until(lambda: process.get("/ping").status_code == 200, 60, message="/ping 200")
        yield process, grpc_port
    finally:
        process.stop()


@pytest.fixture
def server(container: tuple[FerryProcess, int | None]) -> FerryProcess:
    return container[0]


def post(
    server: FerryProcess,
    data: str,
    content_type: str = "application/json",
    method: str = "predict",
    version: int | None = None,
    model: str = "half_plus_three",
) -> requests.Response:
    attributes = f"tfs-model-name={model},tfs-method={method}"
    if version:
        attributes += f",tfs-model-version={version}"
    headers = {"Content-Type": content_type, ATTRIBUTES: attributes}
    return server.post("/invocations", data=data.encode(), headers=headers)


def make_request(server: FerryProcess, data: str, *args, **kwargs) -> dict:
    """The container test's helper: the answer's JSON, whatever the status."""
    return json.loads(post(server, data, *args, **kwargs).content.decode("utf-8"))


def test_ping_and_the_grpc_port_from_the_safe_port_range(
    container: tuple[FerryProcess, int | None],
) -> None:
    server, grpc_port = container
    assert server.get("/ping").status_code == 200
    if grpc_port is not None:
        import grpc

        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)


def test_predict(server: FerryProcess) -> None:
    y = make_request(server, json.dumps({"instances": [1.0, 2.0, 5.0]}))
    assert y == {"predictions": [3.5, 4.0, 5.5]}


def test_predict_twice(server: FerryProcess) -> None:
    x = json.dumps({"instances": [1.0, 2.0, 5.0]})
    assert make_request(server, x) == {"predictions": [3.5, 4.0, 5.5]}
    assert make_request(server, x) == {"predictions": [3.5, 4.0, 5.5]}


def test_predict_specific_versions(server: FerryProcess) -> None:
    x = json.dumps({"instances": [1.0, 2.0, 5.0]})
    assert make_request(server, x, version=123) == {"predictions": [3.5, 4.0, 5.5]}
    assert make_request(server, x, version=124) == {"predictions": [3.5, 4.0, 5.5]}


def test_predict_two_instances(server: FerryProcess) -> None:
    y = make_request(server, json.dumps({"instances": [[1.0, 2.0, 5.0], [1.0, 2.0, 5.0]]}))
    assert y == {"predictions": [[3.5, 4.0, 5.5], [3.5, 4.0, 5.5]]}


def test_predict_instance_jsonlines_input_error(server: FerryProcess) -> None:
    response = post(server, json.dumps({"instances": ["]["]}))
    assert response.status_code == 400
    error = response.json()["error"]
    # The container's TF Serving 1.x said "Invalid argument:", today's "INVALID_ARGUMENT:".
    assert error.startswith("Failed to process element: 0 of 'instances' list. Error: ")
    assert 'JSON Value: "][" Type: String is not of expected type: float' in error


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("[1.0, 2.0, 5.0]\n[1.0, 2.0, 5.0]", "application/json"),
        ("[1.0, 2.0, 5.0]\n[1.0, 2.0, 5.0]", "application/jsonlines"),
        ("[1.0, 2.0, 5.0]\n[1.0, 2.0, 5.0]", "application/jsons"),
        ('{"x": [1.0, 2.0, 5.0]}\n{"x": [1.0, 2.0, 5.0]}', "application/json"),
        ("[[1.0, 2.0, 5.0], [1.0, 2.0, 5.0]]", "application/json"),
        ("1.0,2.0,5.0\n1.0,2.0,5.0", "text/csv"),
    ],
    ids=["jsons-as-json", "jsonlines", "jsons", "jsons-objects", "generic-two", "csv-two"],
)
def test_two_instances_in_every_payload_form(
    server: FerryProcess, data: str, content_type: str
) -> None:
    y = make_request(server, data, content_type)
    assert y == {"predictions": [[3.5, 4.0, 5.5], [3.5, 4.0, 5.5]]}


@pytest.mark.parametrize(
    ("data", "content_type", "expected"),
    [
        ("[1.0, 2.0, 5.0]", "application/json", [[3.5, 4.0, 5.5]]),
        ("1.0", "text/csv", [3.5]),
        ("0.0", "text/csv", [3.0]),
        ("0.0,2.0,5.0", "text/csv", [[3.0, 4.0, 5.5]]),
        ("1.0,2.0,5.0", "text/csv", [[3.5, 4.0, 5.5]]),
        ("1.0\n2.0\n5.0", "text/csv", [3.5, 4.0, 5.5]),
    ],
    ids=["generic", "csv", "csv-zero", "csv-three-zero", "csv-three", "csv-three-rows"],
)
def test_predict_generic_json_and_csv(
    server: FerryProcess, data: str, content_type: str, expected: list
) -> None:
    assert make_request(server, data, content_type) == {"predictions": expected}


def test_predict_csv_wide_categorical_input(server: FerryProcess) -> None:
    data = (
        "0.0,1.0,0.0,1.0,0.0,1.0,0.0,1.0,0.0,1.0,1.0,0.0,1.0,0.0,1.0,"
        "0.0,1.0,0.0,1.0,0.0,0.0,1.0,0.0,1.0,0.0,1.0,0.0,1.0,0.0,0.0\n"
        "0.0,1.0,0.0,1.0,0.0,1.0,0.0,1.0,0.0,1.0,1.0,0.0,1.0,0.0,1.0,"
        "0.0,1.0,0.0,1.0,0.0,1.0,0.0,1.0,0.0,1.0,0.0,1.0,0.0,6.0,0.0\n"
    )
    predictions = make_request(server, data, "text/csv")["predictions"]
    assert len(predictions) == 2
    assert len(predictions[0]) == 30
    assert sum(predictions[0]) == 97  # half_plus_three with row sum 14 and n = 30
    assert sum(predictions[1]) == 100  # row sum 20


def test_regress(server: FerryProcess) -> None:
    x = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}
    response = post(server, json.dumps(x), method="regress")
    assert response.status_code == 200
    assert response.json() == {"results": [3.5, 4.0]}


def test_regress_one_instance(server: FerryProcess) -> None:
    x = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}]}
    assert make_request(server, json.dumps(x), method="regress") == {"results": [3.5]}


def test_regress_of_a_specific_version(server: FerryProcess) -> None:
    x = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 3.0}]}
    assert make_request(server, json.dumps(x), method="regress", version=123) == {"results": [4.5]}


def test_predict_bad_input(server: FerryProcess) -> None:
    response = post(server, "whatever")
    assert response.status_code == 400
    assert "error" in response.json()


def test_predict_bad_input_instances(server: FerryProcess) -> None:
    y = make_request(server, json.dumps({"junk": "data"}))
    assert y["error"].startswith("Failed to process element: 0 key: junk of 'instances' list.")


def test_predict_no_custom_attributes_header(server: FerryProcess) -> None:
    # The default model is the first found (here the first by name): half_plus_three.
    response = server.post(
        "/invocations",
        data=json.dumps({"instances": [1.0, 2.0, 5.0]}),
        headers={"Content-Type": "application/json"},
    )
    assert response.json() == {"predictions": [3.5, 4.0, 5.5]}


def test_predict_with_jsonlines(server: FerryProcess) -> None:
    response = server.post(
        "/invocations",
        data=json.dumps({"instances": [1.0, 2.0, 5.0]}),
        headers={"Content-Type": "application/json", "Accept": "application/jsonlines"},
    )
    assert response.headers["Content-Type"] == "application/jsonlines"
    assert "\n" not in response.text
    assert json.loads(response.text) == {"predictions": [3.5, 4.0, 5.5]}


def test_predict_with_multiple_accept_types(server: FerryProcess) -> None:
    response = server.post(
        "/invocations",
        data=json.dumps({"instances": [1.0, 2.0, 5.0]}),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, application/jsonlines",
        },
    )
    assert response.headers["Content-Type"] == "application/json"
    assert "\n" not in response.text
    assert json.loads(response.text) == {"predictions": [3.5, 4.0, 5.5]}


# -- the SageMaker SDK's TensorFlowPredictor.regress() / .classify() on a TF2 export -------


def test_regress_on_a_tf2_regress_signature(server: FerryProcess) -> None:
    x = {"signature_name": "regress_x", "examples": [{"x": 1.0}, {"x": -2.5}]}
    response = post(server, json.dumps(x), method="regress", model="regressor")
    assert response.status_code == 200, response.text
    assert response.json() == {"results": [3.0, -4.0]}


def test_classify_on_a_tf2_classify_signature(server: FerryProcess) -> None:
    x = {"signature_name": "classify_x", "examples": [{"x": 0.0}]}
    response = post(server, json.dumps(x), method="classify", model="regressor")
    assert response.status_code == 200, response.text
    assert response.json() == {"results": [[["pos", 0.5], ["neg", 0.5]]]}


def test_classify_and_regress_answer_as_tf_serving_rest_does(server: FerryProcess) -> None:
    """The container forwards the JSON to TF Serving's `:regress`: same status, same body."""
    for body in (
        {"examples": [{"x": 1.0}]},  # serving_default is the regress signature
        {"signature_name": "nope", "examples": [{"x": 1.0}]},
        {"instances": [1.0]},
    ):
        data = json.dumps(body)
        via_sagemaker = post(server, data, method="regress", model="regressor")
        via_rest = server.post("/v1/models/regressor:regress", data=data)
        assert via_sagemaker.status_code == via_rest.status_code
        assert via_sagemaker.json() == via_rest.json()
    assert post(server, data, method="regress", model="regressor").status_code == 400


def test_classify_of_a_regress_only_signature_is_tf_servings_400(server: FerryProcess) -> None:
    x = {"signature_name": "regress_x", "examples": [{"x": 1.0}]}
    response = post(server, json.dumps(x), method="classify", model="regressor")
    assert response.status_code == 400
    assert (
        response.json()["error"]
        == (server.post("/v1/models/regressor:classify", data=json.dumps(x)).json()["error"])
    )


# -- the container's /tfs/ path (nginx forwards it to TF Serving's REST API) ---------------


def test_tfs_proxy_path_reaches_tf_servings_rest_api(server: FerryProcess) -> None:
    x = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}]}
    regressed = server.post("/tfs/v1/models/half_plus_three:regress", data=json.dumps(x))
    assert regressed.status_code == 200
    assert regressed.json() == {"results": [3.5]}
    status = server.get("/tfs/v1/models/half_plus_three/versions/123")
    assert status.status_code == 200
    assert status.json()["model_version_status"][0]["state"] == "AVAILABLE"


# -- the runtime API (boto3's sagemaker-runtime) passes the same attributes through -----------


def test_the_runtime_api_regresses_as_invocations_does(server: FerryProcess) -> None:
    boto3 = pytest.importorskip("boto3")
    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-checked-without-auth",
    )
    x = {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}
    response = client.invoke_endpoint(
        EndpointName="half-plus-three",  # SageMaker's names have no `_`
        Body=json.dumps(x),
        ContentType="application/json",
        Accept="application/json",
        CustomAttributes="tfs-method=regress",
    )
    assert response["ContentType"] == "application/json"
    assert json.loads(response["Body"].read()) == {"results": [3.5, 4.0]}
