"""TensorFlow SavedModels served by a real `ferry serve` process, checked against
TensorFlow's own in-process results: every signature def, `signature_name` routing,
string tensors, fixed batch sizes, `:classify`/`:regress` (REST and gRPC), ONNX
acceleration, and load failures that leave the other models serving."""

from __future__ import annotations

import concurrent.futures
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from support.framework_models import start_repository_server, version_status
from support.server import FerryProcess, wait_until

pytestmark = pytest.mark.tensorflow
tf_models = pytest.importorskip("support.tf_models")
tf = tf_models.tf

import ferry  # noqa: E402 - after the TensorFlow skip

X = np.random.default_rng(0).random((5, 4), dtype=np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A model root with every TensorFlow case, and the in-process models to compare with."""
    root = tmp_path_factory.mktemp("tf") / "models"
    scratch = tmp_path_factory.mktemp("scratch")
    keras_model = tf_models.mlp_keras()
    # Seed recipe: Keras 3's model.export() (signatures `serve` and `serving_default`).
    keras_model.export(str(root / "exported" / "1"), verbose=False)
    # ferry save of a tf.Module with two signatures, one over strings.
    tf_models.save_text_and_scale(scratch / "text")
    ferry.save(scratch / "text", root / "text")
    tf_models.save_classifier(root / "classifier" / "1")
    tf_models.save_fixed_batch(root / "fixed" / "1")
    tf_models.save_fixed_batch(root / "fixed_dynamic" / "1")
    (root / "fixed_dynamic" / "ferry.toml").write_text('batch_dimension = "dynamic"\n')
    # Acceleration: ferry save (one serving_default) accelerates; model.export() (two
    # signatures) falls back and says why.
    ferry.save(keras_model, root / "accelerated")
    (root / "accelerated" / "ferry.toml").write_text('accelerate = "onnx"\n')
    keras_model.export(str(root / "not_accelerated" / "1"), verbose=False)
    (root / "not_accelerated" / "ferry.toml").write_text('accelerate = "onnx"\n')
    # A corrupt saved_model.pb, and a folder whose SavedModel has no serving signature.
    (root / "corrupt" / "1").mkdir(parents=True)
    (root / "corrupt" / "1" / "saved_model.pb").write_bytes(b"\x00not a protobuf\xff" * 10)
    tf.saved_model.save(tf.Module(), str(root / "no_signature" / "1"))
    return {"root": root, "keras": keras_model}


@pytest.fixture(scope="module")
def server(repo: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    log_path = tmp_path_factory.mktemp("log") / "ferry.log"
    process = start_repository_server(repo["root"], log_path, timeout=240)
    yield process
    process.stop()


def test_keras_export_serves_both_signatures_like_tensorflow(
    server: FerryProcess, repo: dict
) -> None:
    expected = repo["keras"](X, training=False).numpy()
    for body in ({"instances": X.tolist()}, {"signature_name": "serve", "instances": X.tolist()}):
        response = server.predict("exported", body)
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-6, atol=1e-7)
    metadata = server.get("/v1/models/exported/metadata").json()
    signature_defs = metadata["metadata"]["signature_def"]["signature_def"]
    assert set(signature_defs) == {"serve", "serving_default"}
    x = signature_defs["serving_default"]["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in x["tensor_shape"]["dim"]] == ["-1", "4"]
    assert signature_defs["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_named_signature_and_string_tensors(server: FerryProcess) -> None:
    module_text = ["abc", "", "ferry"]
    response = server.predict("text", {"signature_name": "text", "instances": module_text})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["length"] for p in predictions] == [3, 0, 5]
    assert [p["upper"] for p in predictions] == ["ABC", "", "FERRY"]
    response = server.predict("text", {"instances": X.tolist()})
    np.testing.assert_allclose(response.json()["predictions"], X * 2, rtol=1e-6)
    unknown = server.predict("text", {"signature_name": "nope", "instances": [[1, 2, 3, 4]]})
    assert unknown.status_code == 400
    assert 'signature name: "nope" not found' in unknown.json()["error"]


def test_ferry_save_records_the_signatures(repo: dict) -> None:
    import json

    recorded = json.loads((repo["root"] / "text" / "1" / "signature.json").read_text())
    assert recorded["format"] == "tensorflow"
    assert recorded["signatures"]["text"]["inputs"]["text"] == {"dtype": "DT_STRING", "shape": [-1]}
    assert recorded["signatures"]["serving_default"]["outputs"]["y"]["shape"] == [-1, 4]


def test_fixed_batch_of_one_runs_requests_one_by_one(server: FerryProcess) -> None:
    rows = [X[i : i + 1].tolist() for i in range(len(X))]
    for model in ("fixed", "fixed_dynamic"):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(
                pool.map(lambda row, m=model: server.predict(m, {"instances": row}), rows * 4)
            )
        for row, response in zip(rows * 4, responses, strict=True):
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(response.json()["predictions"], np.array(row) * 3, rtol=1e-6)
    # A request of two rows does not fit batch size 1, whatever the batching.
    too_big = server.predict("fixed", {"instances": X[:2].tolist()})
    assert too_big.status_code == 400
    assert "dimension 0 must be 1" in too_big.json()["error"]


def test_classify_and_regress_over_rest(server: FerryProcess) -> None:
    examples = [{"x": [1.0, 2.0]}, {"x": [0.5, -1.0]}, {"x": [3.0, 1.0]}]
    x = np.array([e["x"] for e in examples], dtype=np.float32)
    response = server.post("/v1/models/classifier:classify", json={"examples": examples})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    scores = tf_models.classifier_scores(x)
    assert [[label for label, _ in row] for row in results] == [["cat", "dog"]] * 3
    np.testing.assert_allclose([[s for _, s in row] for row in results], scores, rtol=1e-5)

    response = server.post(
        "/v1/models/classifier:regress",
        json={"signature_name": "regress", "context": {"x": [1.0, 1.0]}, "examples": [{}, {}]},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"results": [2.0, 2.0]}


def test_classify_errors_name_the_problem(server: FerryProcess) -> None:
    wrong_method = server.post(
        "/v1/models/classifier:classify", json={"signature_name": "regress", "examples": [{}]}
    )
    assert wrong_method.status_code == 400
    assert wrong_method.json()["error"].startswith(
        'Expected classification signature outputs to contain at least one of "classes" or '
        '"scores". Signature was: '
    )
    no_classifier = server.post("/v1/models/text:classify", json={"examples": [{"x": 1}]})
    assert no_classifier.status_code == 400
    assert no_classifier.json()["error"].startswith("No classification inputs found")
    missing_feature = server.post("/v1/models/classifier:classify", json={"examples": [{}]})
    assert missing_feature.status_code == 400
    assert "Feature: x" in missing_feature.json()["error"]
    # JSON integers become int64 features, as in TF Serving; the model wants floats.
    ints = server.post("/v1/models/classifier:classify", json={"examples": [{"x": [3, 1]}]})
    assert ints.status_code == 400
    assert "Data types don't match" in ints.json()["error"]


def test_classify_and_regress_over_grpc(server: FerryProcess) -> None:
    from tensorflow_serving.apis import (
        classification_pb2,
        prediction_service_pb2_grpc,
        regression_pb2,
    )

    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "classifier"
        example = request.input.example_list.examples.add()
        example.features.feature["x"].float_list.value.extend([1.0, 2.0])
        response = stub.Classify(request, timeout=30)
        classes = response.result.classifications[0].classes
        assert [c.label for c in classes] == ["cat", "dog"]
        expected = tf_models.classifier_scores(np.array([[1.0, 2.0]]))[0]
        np.testing.assert_allclose([c.score for c in classes], expected, rtol=1e-5)
        assert response.model_spec.version.value == 1

        request = regression_pb2.RegressionRequest()
        request.model_spec.name = "classifier"
        request.model_spec.signature_name = "regress"
        with_context = request.input.example_list_with_context
        with_context.context.features.feature["x"].float_list.value.extend([2.0, 0.5])
        with_context.examples.add()
        response = stub.Regress(request, timeout=30)
        assert [r.value for r in response.result.regressions] == [2.5]

        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "text"
        request.input.example_list.examples.add()
        with pytest.raises(grpc.RpcError) as error:
            stub.Classify(request, timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith("No classification inputs found")


def test_accelerate_onnx_serves_the_converted_model(server: FerryProcess, repo: dict) -> None:
    expected = repo["keras"](X, training=False).numpy()
    response = server.predict("accelerated", {"instances": X.tolist()})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-4, atol=1e-5)
    assert (repo["root"] / "accelerated" / "1" / ".ferry" / "accelerated.onnx").is_file()
    log = server.log()
    assert "accelerated/1 (tensorflow) serves through onnxruntime" in log
    # V2 metadata names the runtime that answers.
    assert server.get("/v2/models/accelerated").json()["platform"] == "onnxruntime_onnx"


def test_accelerate_falls_back_for_two_signatures(server: FerryProcess) -> None:
    assert version_status(server, "not_accelerated")["state"] == "AVAILABLE"
    assert "only a single serving_default signature is converted" in server.log()
    assert server.predict("not_accelerated", {"instances": X.tolist()}).status_code == 200


def test_broken_models_fail_alone(server: FerryProcess) -> None:
    corrupt = version_status(server, "corrupt")
    assert corrupt["state"] == "END"
    assert corrupt["status"]["error_message"]
    no_signature = version_status(server, "no_signature")
    assert no_signature["state"] == "END"
    assert "no serving signatures" in no_signature["status"]["error_message"]
    assert version_status(server, "exported")["state"] == "AVAILABLE"
    bad_input = server.predict("exported", {"instances": [[1.0, 2.0]]})
    assert bad_input.status_code == 400
    assert "shape" in bad_input.json()["error"]


def test_missing_tensorflow_fails_only_tensorflow_models(
    repo: dict, tmp_path: Path, start_server
) -> None:
    """TensorFlow made unimportable for the server process only (a stub package that
    raises ImportError first on its path): the TF model's status names the extra to
    install, and an ONNX model beside it serves."""
    from support.models import scale_model, write_model

    root = tmp_path / "models"
    shutil.copytree(repo["root"] / "text", root / "text")
    write_model(scale_model(2.0), root / "scale", 1)
    stub = tmp_path / "no_tensorflow" / "tensorflow"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('simulated: tensorflow is missing')\n")
    import os

    pythonpath = os.pathsep.join([str(stub.parent), os.environ.get("PYTHONPATH", "")])
    server = start_server(str(root), env={"PYTHONPATH": pythonpath})
    wait_until(
        lambda: version_status(server, "text")["state"] == "END", 60, message="text load failure"
    )
    message = version_status(server, "text")["status"]["error_message"]
    assert "pip install 'ferry-serve[tensorflow]'" in message
    assert "simulated: tensorflow is missing" in message
    response = server.predict("scale", {"instances": [[1.0, 2.0, 3.0, 4.0]]})
    assert response.json()["predictions"] == [[2.0, 4.0, 6.0, 8.0]]


def test_model_platform_tensorflow_selects_the_savedmodel_runtime(repo: dict) -> None:
    from ferry.runtimes import RuntimeOptions, runtime_for
    from ferry.runtimes.tensorflow import TensorFlowRuntime

    runtime = runtime_for(repo["root"] / "exported" / "1", RuntimeOptions(), "tensorflow")
    assert isinstance(runtime, TensorFlowRuntime)
    with pytest.raises(FileNotFoundError, match="formats: tensorflow, keras, tflite"):
        runtime_for(repo["root"] / "corrupt", RuntimeOptions(), "tensorflow")
