"""TF Serving's own gRPC checks (tensorflow_model_server_test.py: VerifyPredictRequest,
testGetModelMetadata) against TF1-era SavedModels rebuilt as its testdata, through the
official `tensorflow-serving-api` stubs; values are read with `tf.make_ndarray`, which
takes the typed `*_val` fields and `tensor_content` alike."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from support.framework_models import start_repository_server
from support.server import FerryProcess

pytestmark = [pytest.mark.compat, pytest.mark.tensorflow]
tf1_models = pytest.importorskip("support.tf1_models")
tf = tf1_models.tf

from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    root = tmp_path_factory.mktemp("tf1grpc") / "models"
    tf1_models.save_half_plus_two(root / "default" / "123")
    tf1_models.save_half_plus_three(root / "half_plus_three" / "123")
    process = start_repository_server(root, root.parent / "ferry.log", timeout=240)
    yield process
    process.stop()


@pytest.fixture
def stub(server: FerryProcess) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _request(model: str, shape: list[int], output_filter: bool) -> predict_pb2.PredictRequest:
    """VerifyPredictRequest's request: x = float_val [2.0] with the given shape."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_default"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    for size in shape:
        request.inputs["x"].tensor_shape.dim.add().size = size
    if output_filter:
        request.output_filter.append("y")
    return request


@pytest.mark.parametrize(("model", "expected"), [("default", 3.0), ("half_plus_three", 4.0)])
def test_verify_predict_request(stub, model: str, expected: float) -> None:
    for shape in ([1], [1, 1]):  # batch_input=False and True
        for output_filter in (True, False):
            result = stub.Predict(_request(model, shape, output_filter), timeout=30)
            assert list(result.outputs) == ["y"]
            assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
            value = tf.make_ndarray(result.outputs["y"])
            assert value.shape == tuple(shape)
            assert value.reshape(-1).tolist() == [expected]
            assert result.model_spec.name == model
            assert result.model_spec.version.value == 123
            assert result.model_spec.signature_name == "serving_default"


def test_graph_errors_come_back_as_invalid_argument(stub) -> None:
    """A serialized tf.Example without the feature the graph parses: TensorFlow's own
    message from the Session run, with INVALID_ARGUMENT, as TF Serving passes it on."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    request.inputs["inputs"].CopyFrom(
        tf.make_tensor_proto([tf.train.Example().SerializeToString()], dtype=tf.string)
    )
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Feature: x (data type: float) is required but could not be found" in (
        error.value.details()
    )
    assert "[[" not in error.value.details()


def test_get_model_metadata_reports_graph_tensor_names(stub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = stub.GetModelMetadata(request, timeout=30)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == 123
    assert list(result.metadata) == ["signature_def"]
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    result.metadata["signature_def"].Unpack(signature_defs)
    defs = signature_defs.signature_def
    assert set(defs) == {
        "serving_default",
        "classify_x_to_y",
        "regress_x_to_y",
        "regress_x_to_y2",
        "regress_x2_to_y3",
    }
    x = defs["serving_default"].inputs["x"]
    assert (x.name, x.dtype, [d.size for d in x.tensor_shape.dim]) == ("x:0", 1, [-1, 1])
    assert defs["serving_default"].outputs["y"].name == "y:0"
    assert defs["regress_x2_to_y3"].outputs["outputs"].name == "y3:0"
    example = defs["classify_x_to_y"].inputs["inputs"]
    assert isinstance(example, meta_graph_pb2.TensorInfo)
    assert (example.name, example.dtype) == ("tf_example:0", types_pb2.DT_STRING)
    assert example.tensor_shape.unknown_rank
    assert defs["classify_x_to_y"].method_name == "tensorflow/serving/classify"


def test_a_rank_the_signature_does_not_declare_is_the_graphs_to_take(stub) -> None:
    """[[1, 2], [3, 4]] for x: [-1, 1]: TF Serving hands it to the graph, which takes it."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1, 2], [3, 4]], np.float32)))
    result = stub.Predict(request, timeout=30)
    assert tf.make_ndarray(result.outputs["y"]).tolist() == [[2.5, 3.0], [3.5, 4.0]]
