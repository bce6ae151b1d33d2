"""TF Serving's own checks of Classify, Regress, MultiInference, warm-up and TFLite
SignatureDefs (tensorflow_model_server_test.py: testClassifyTf2, testRegressTf2,
testMultiInferenceTf2, testClassifyREST, testRegressREST,
testPredictWithSignatureDefOnTfLite), against models rebuilt as TF Serving's test data
generator builds them, through the official tensorflow-serving-api stubs and plain HTTP,
with TF Serving's exact answers and error messages.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.framework_models import settled_status, start_repository_server
from support.server import FerryProcess

pytestmark = pytest.mark.tensorflow
tfs = pytest.importorskip("support.tfs_half_plus_two")
tf_models = pytest.importorskip("support.tf_models")
tf1_models = pytest.importorskip("support.tf1_models")
tf = tfs.tf

from tensorflow_serving.apis import (  # noqa: E402 - after the TensorFlow skip
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

VERSION = 123
MODELS = ("default", "tf1", "warmed", "bad_classify", "bad_regress", "bad_multi", "lite")
WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def add_example(request, x: float | None = 2.0) -> None:
    example = request.input.example_list.examples.add()
    if x is not None:
        example.features.feature["x"].float_list.value.extend([x])


def multi_request(model: str, *tasks: tuple[str, str]) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest()
    for signature_name, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature_name
        task.method_name = method
    return request


def warmup_logs(x: float | None = 2.0) -> list[prediction_log_pb2.PredictionLog]:
    """One record of each kind TF Serving replays; `x=None` leaves out the required
    feature, which the graph refuses."""
    classify = prediction_log_pb2.PredictionLog()
    classify.classify_log.request.model_spec.signature_name = "classify_x_to_y"
    add_example(classify.classify_log.request, x)
    regress = prediction_log_pb2.PredictionLog()
    regress.regress_log.request.model_spec.signature_name = "regress_x_to_y"
    add_example(regress.regress_log.request, x)
    multi = prediction_log_pb2.PredictionLog()
    multi.multi_inference_log.request.CopyFrom(
        multi_request("m", ("regress_x_to_y2", REGRESS), ("classify_x_to_y", CLASSIFY))
    )
    add_example(multi.multi_inference_log.request, x)
    predict = prediction_log_pb2.PredictionLog()
    predict.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0], tf.float32))
    return [classify, regress, multi, predict]


def write_warmup(version_dir: Path, logs: list[prediction_log_pb2.PredictionLog]) -> None:
    (version_dir / WARMUP).parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(version_dir / WARMUP)) as writer:
        for entry in logs:
            writer.write(entry.SerializeToString())


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tfs") / "models"
    tfs.save_half_plus_two_tf2(root / "default" / str(VERSION))
    shutil.copytree(root / "default", root / "warmed")
    write_warmup(root / "warmed" / str(VERSION), warmup_logs())
    # Each bad recording fails at a different kind of record (the earlier ones pass).
    good = warmup_logs()
    for name, failing in (("classify", 0), ("regress", 1), ("multi", 2)):
        shutil.copytree(root / "default", root / f"bad_{name}")
        logs = [*good[:failing], warmup_logs(x=None)[failing]]
        write_warmup(root / f"bad_{name}" / str(VERSION), logs)
    tfs.save_half_plus_two_tflite_with_sigdef(root / "lite" / str(VERSION))
    tfs.save_half_plus_two_tflite_with_sigdef(root / "lite_unknown" / "1", x_tensor="nope:0")
    tf_models.save_classifier(root / "classifier" / "1")
    tf1_models.save_half_plus_two(root / "tf1" / str(VERSION))
    return root


@pytest.fixture(scope="module")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    log_path = tmp_path_factory.mktemp("log") / "ferry.log"
    process = start_repository_server(root, log_path, timeout=240)
    for model in MODELS:
        settled_status(process, model, timeout=120)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def stub(server: FerryProcess) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def verify_model_spec(spec, name: str, signature_name: str, version: int = VERSION) -> None:
    assert (spec.name, spec.signature_name, spec.version.value) == (name, signature_name, version)


def refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value


# -- testClassify, testRegress, testMultiInference (TF1 and TF2 exports) -------------------

BOTH_EXPORTS = pytest.mark.parametrize("model", ["default", "tf1"], ids=["tf2", "tf1"])


@BOTH_EXPORTS
def test_classify(stub, model: str) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "classify_x_to_y"
    add_example(request)

    result = stub.Classify(request, 5)

    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    verify_model_spec(result.model_spec, model, "classify_x_to_y")


@BOTH_EXPORTS
def test_regress(stub, model: str) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "regress_x_to_y"
    add_example(request)

    result = stub.Regress(request, 5)

    assert [r.value for r in result.result.regressions] == [3.0]
    verify_model_spec(result.model_spec, model, "regress_x_to_y")


@BOTH_EXPORTS
def test_multi_inference(stub, model: str) -> None:
    request = multi_request(model, ("regress_x_to_y", REGRESS), ("classify_x_to_y", CLASSIFY))
    add_example(request)

    result = stub.MultiInference(request, 5)

    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for i in range(2):
        verify_model_spec(
            result.results[i].model_spec, model, request.tasks[i].model_spec.signature_name
        )


def test_multi_inference_on_tf1_method_named_signatures(stub) -> None:
    """The TF1 classifier: `serving_default` classifies (labels cat/dog), `regress` sums."""
    request = multi_request("classifier", ("", CLASSIFY), ("regress", REGRESS))
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([1.0, 2.0])

    result = stub.MultiInference(request, 5)

    classes = result.results[0].classification_result.classifications[0].classes
    assert [c.label for c in classes] == ["cat", "dog"]
    assert result.results[1].regression_result.regressions[0].value == 3.0
    verify_model_spec(result.results[0].model_spec, "classifier", "serving_default", 1)
    verify_model_spec(result.results[1].model_spec, "classifier", "regress", 1)


# -- testClassifyREST, testRegressREST -------------------------------------------------------


@BOTH_EXPORTS
def test_classify_and_regress_over_rest(server: FerryProcess, model: str) -> None:
    classify = server.post(
        f"/v1/models/{model}:classify",
        json={"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]},
    )
    regress = server.post(
        f"/v1/models/{model}:regress",
        json={"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]},
    )

    assert classify.status_code == 200, classify.text
    assert classify.json() == {"results": [[["", 3.0]]]}
    assert regress.status_code == 200, regress.text
    assert regress.json() == {"results": [3.0]}


# -- TF Serving's refusals ------------------------------------------------------------------


def test_multi_inference_refusals(stub) -> None:
    cases = [
        (
            multi_request("default", ("regress_x_to_y", REGRESS), ("classify_x_to_y", CLASSIFY)),
            {1: "warmed"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
        ),
        (
            multi_request("default", ("regress_x_to_y", REGRESS), ("regress_x_to_y", REGRESS)),
            {},
            grpc.StatusCode.INVALID_ARGUMENT,
            "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            multi_request("default", ("nope", REGRESS)),
            {},
            grpc.StatusCode.INVALID_ARGUMENT,
            "Requested signature not found in model graph: nope",
        ),
        (
            multi_request("default", ("serving_default", "tensorflow/serving/predict")),
            {},
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
        (
            multi_request("unknown", ("regress_x_to_y", REGRESS)),
            {},
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(unknown)",
        ),
    ]
    for request, renamed, code, message in cases:
        for index, name in renamed.items():
            request.tasks[index].model_spec.name = name
        add_example(request)
        error = refusal(lambda request=request: stub.MultiInference(request, 5))
        assert (error.code(), error.details()) == (code, message)

    empty = multi_request("default", ("regress_x_to_y", REGRESS))
    error = refusal(lambda: stub.MultiInference(empty, 5))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")


def test_classify_and_regress_refusals(stub, server: FerryProcess) -> None:
    def classify(signature_name: str) -> grpc.RpcError:
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "default"
        request.model_spec.signature_name = signature_name
        add_example(request)
        return refusal(lambda: stub.Classify(request, 5))

    def regress(signature_name: str) -> grpc.RpcError:
        request = regression_pb2.RegressionRequest()
        request.model_spec.name = "default"
        request.model_spec.signature_name = signature_name
        add_example(request)
        return refusal(lambda: stub.Regress(request, 5))

    missing = classify("nope")
    assert missing.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert missing.details() == "No signature was found with the name: nope"
    predict_signature = classify("")
    assert predict_signature.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert predict_signature.details().startswith(
        'No classification inputs found in SignatureDef: inputs {\n  key: "x"\n'
    )
    no_outputs = regress("classify_x_to_y")
    assert no_outputs.details().startswith("No regression outputs found in SignatureDef: ")
    float_input = classify("classify_x2_to_y3")
    assert float_input.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert float_input.details() == "Expects arg[0] to be float but string is provided"

    rest = server.post("/v1/models/default:regress", json={"examples": [{"x": 2.0}]})
    assert rest.status_code == 400
    assert rest.json()["error"].startswith("No regression inputs found in SignatureDef: ")


# -- warm-up --------------------------------------------------------------------------------


def test_a_generated_warmup_that_fails_leaves_the_version_serving(server: FerryProcess) -> None:
    """Generated `b""` examples fail the TF2 export's parse_example: one warning, and
    `default` serves (every test above used it)."""
    assert settled_status(server, "default")["state"] == "AVAILABLE"
    warnings = [
        line
        for line in server.log().splitlines()
        if f"default/{VERSION}: generated warm-up input did not fit" in line
    ]
    assert len(warnings) == 1, warnings
    assert "'regress_x_to_y' (InvalidArgument: Name: <unknown>, Feature: x" in warnings[0]


def test_recorded_classify_regress_and_multi_inference_warmup(server: FerryProcess) -> None:
    assert settled_status(server, "warmed")["state"] == "AVAILABLE"
    for model, record in (("bad_classify", 0), ("bad_regress", 1), ("bad_multi", 2)):
        status = settled_status(server, model)
        assert status["state"] == "END", (model, status)
        message = status["status"]["error_message"]
        assert f"{WARMUP} record {record}: " in message, message
        assert "Feature: x (data type: float) is required" in message, message


# -- testPredictWithSignatureDefOnTfLite -------------------------------------------------


def test_tflite_serves_its_embedded_signature_def(stub, server: FerryProcess) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "lite"
    request.model_spec.signature_name = "serving_default"
    request.inputs["x"].dtype = tf.float32.as_datatype_enum
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1

    result = stub.Predict(request, 5)

    assert "y" in result.outputs
    assert result.outputs["y"].dtype == tf.float32.as_datatype_enum
    assert list(result.outputs["y"].float_val) == [3.0]
    verify_model_spec(result.model_spec, "lite", "serving_default")

    metadata = server.get("/v1/models/lite/metadata").json()
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert list(signature["inputs"]) == ["x"] and list(signature["outputs"]) == ["y"]
    assert signature["inputs"]["x"]["name"] == "tflite_input"
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in signature["inputs"]["x"]["tensor_shape"]["dim"]] == ["1", "1"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    rest = server.predict("lite", {"instances": [[2.0]]})
    assert rest.status_code == 200, rest.text
    assert rest.json() == {"predictions": [[3.0]]}


def test_a_tflite_signature_def_naming_no_tensor_fails_the_load(server: FerryProcess) -> None:
    status = settled_status(server, "lite_unknown")
    assert status["state"] == "END"
    message = status["status"]["error_message"]
    assert "Unknown tensor 'nope:0'. Signature input x references an unknown tensor" in message
