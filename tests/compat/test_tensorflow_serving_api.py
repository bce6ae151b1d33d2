"""The official `tensorflow-serving-api` package (and TensorFlow) against ferry's gRPC API.

These are the clients TF Serving users already run: generated stubs, messages from
TensorFlow's own protos, `tf.make_tensor_proto` / `tf.make_ndarray`, and warm-up files
written with `tf.io.TFRecordWriter`. A last test compares ferry's .proto files with the
official descriptors field by field, so a wrong number cannot hide behind a lucky test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from support.models import scale_model, string_model, two_input_model, write_model
from support.server import FerryProcess

tf = pytest.importorskip("tensorflow")
from google.protobuf import descriptor_pb2, descriptor_pool  # noqa: E402
from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)

from ferry.protos import DESCRIPTOR_SET, pool  # noqa: E402

pytestmark = pytest.mark.compat

X = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.fixture
def server(model_root: Path, start_server) -> FerryProcess:
    write_model(scale_model(1.0), model_root / "scale", 1)
    write_model(scale_model(2.0), model_root / "scale", 2)
    write_model(two_input_model(), model_root / "pair", 1)
    write_model(string_model(), model_root / "echo", 1)
    server = start_server(str(model_root), "--enable_model_control")  # the reload test
    for model, version in [("scale", 2), ("pair", 1), ("echo", 1)]:
        server.wait_version(model, version)
    return server


@pytest.fixture
def channel(server: FerryProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield channel


def predict(channel: grpc.Channel, model: str, **inputs) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(
            value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value)
        )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(request, timeout=10)


def test_predict_with_make_tensor_proto_and_make_ndarray(channel: grpc.Channel) -> None:
    response = predict(channel, "scale", x=X)

    assert response.model_spec.name == "scale"
    assert response.model_spec.version.value == 2
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), X * 2)


def test_outputs_are_read_from_float_val_as_tf_servings_own_clients_read_them(
    channel: grpc.Channel,
) -> None:
    """mnist_client.py and resnet_client_grpc.py read `outputs[...].float_val`."""
    response = predict(channel, "scale", x=X)

    assert list(response.outputs["y"].float_val) == (X * 2).reshape(-1).tolist()
    assert not response.outputs["y"].tensor_content


def test_predict_with_typed_value_fields(channel: grpc.Channel) -> None:
    a = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0])
    a.tensor_shape.dim.add(size=1)
    a.tensor_shape.dim.add(size=2)
    b = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[10.0])  # fills [1, 2]
    b.tensor_shape.CopyFrom(a.tensor_shape)

    response = predict(channel, "pair", a=a, b=b)

    assert tf.make_ndarray(response.outputs["sum"]).tolist() == [[11.0, 12.0]]
    assert tf.make_ndarray(response.outputs["prod"]).tolist() == [[10.0, 20.0]]


def test_string_tensors(channel: grpc.Channel) -> None:
    response = predict(channel, "echo", text=[b"one", b"two"])

    assert tf.make_ndarray(response.outputs["text_bytes"]).tolist() == [b"one", b"two"]


def test_errors_reach_the_official_stub_as_grpc_codes(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as wrong_dtype:
        predict(channel, "scale", x=X.astype(np.float64))
    with pytest.raises(grpc.RpcError) as unknown:
        predict(channel, "nope", x=X)

    assert wrong_dtype.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DT_DOUBLE" in wrong_dtype.value.details()
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_metadata_unpacks_into_the_official_signature_def_map(channel: grpc.Channel) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "pair"
    request.metadata_field.append("signature_def")

    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(
        request, timeout=10
    )

    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert sorted(signature.inputs) == ["a", "b"]
    assert signature.outputs["sum"].dtype == types_pb2.DT_FLOAT
    assert [d.size for d in signature.outputs["sum"].tensor_shape.dim] == [-1, 2]


def test_model_status_and_reload_config(channel: grpc.Channel, model_root: Path) -> None:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "scale"
    reload = model_management_pb2.ReloadConfigRequest()
    config = reload.config.model_config_list.config.add()
    config.name = "only_pair"
    config.base_path = str(model_root / "pair")

    status = stub.GetModelStatus(status_request, timeout=10)
    reloaded = stub.HandleReloadConfigRequest(reload, timeout=60)

    assert [
        (s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state))
        for s in status.model_version_status
    ] == [(2, "AVAILABLE")]
    assert reloaded.status.error_code == 0, reloaded.status.error_message
    assert tf.make_ndarray(
        predict(
            channel, "only_pair", a=np.ones((1, 2), np.float32), b=np.ones((1, 2), np.float32)
        ).outputs["sum"]
    ).tolist() == [[2.0, 2.0]]
    with pytest.raises(grpc.RpcError) as gone:
        stub.GetModelStatus(status_request, timeout=10)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_warmup_file_written_by_tensorflow_is_replayed(
    model_root: Path, start_server, tmp_path: Path
) -> None:
    version = write_model(scale_model(3.0), tmp_path / "staging", 1)
    (version / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(str(version / "assets.extra" / "tf_serving_warmup_requests")) as out:
        for rows in (1, 3):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "warm"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((rows, 4), np.float32)))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            out.write(log.SerializeToString())
    (model_root / "warm").mkdir()
    version.rename(model_root / "warm" / "1")
    server = start_server(str(model_root))
    server.wait_version("warm", 1)

    with grpc.insecure_channel(server.grpc_target) as channel:
        response = predict(channel, "warm", x=np.ones((1, 4), np.float32))

    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[3.0] * 4]


# Fields ferry leaves out on purpose (TF-graph-only or streaming features; see the .protos).
_OMITTED = {
    "tensorflow.TensorProto": {"resource_handle_val", "variant_val"},
    "tensorflow.TensorInfo": {"composite_tensor"},
    "tensorflow.serving.LogMetadata": {"sampling_config"},
    "tensorflow.serving.PredictRequest": {"predict_streamed_options", "request_options"},
    "tensorflow.serving.PredictionLog": {"session_run_log"},
}
_API_FILES = ("tensorflow/", "tensorflow_serving/apis/", "tensorflow_serving/util/")


def _messages(prefix: str, messages) -> Iterator[str]:
    for message in messages:
        full_name = f"{prefix}.{message.name}"
        yield full_name
        yield from _messages(full_name, message.nested_type)


def test_ferry_protos_match_the_official_ones_field_by_field() -> None:
    official = descriptor_pool.Default()
    # The service descriptors live in modules that the stubs themselves do not import.
    assert prediction_service_pb2.DESCRIPTOR.services_by_name
    assert model_service_pb2.DESCRIPTOR.services_by_name
    file_set = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    checked = 0
    for file in file_set.file:
        if not file.name.startswith(_API_FILES):
            continue
        for full_name in _messages(file.package, file.message_type):
            ours = pool().FindMessageTypeByName(full_name)
            theirs = official.FindMessageTypeByName(full_name)
            for field in ours.fields:
                twin = theirs.fields_by_name[field.name]
                assert (field.number, field.type, field.is_repeated) == (
                    twin.number,
                    twin.type,
                    twin.is_repeated,
                ), f"{full_name}.{field.name}"
                if field.message_type is not None:
                    assert field.message_type.full_name == twin.message_type.full_name
                checked += 1
            left_out = set(theirs.fields_by_name) - set(ours.fields_by_name)
            assert left_out == _OMITTED.get(full_name, set()), full_name
        for enum in file.enum_type:
            ours = pool().FindEnumTypeByName(f"{file.package}.{enum.name}")
            theirs = official.FindEnumTypeByName(f"{file.package}.{enum.name}")
            assert {v.name: v.number for v in ours.values} == {
                v.name: v.number for v in theirs.values
            }
        for service in file.service:
            ours = pool().FindServiceByName(f"{file.package}.{service.name}")
            theirs = official.FindServiceByName(f"{file.package}.{service.name}")
            assert [
                (m.name, m.input_type.full_name, m.output_type.full_name) for m in ours.methods
            ] == [(m.name, m.input_type.full_name, m.output_type.full_name) for m in theirs.methods]
    assert checked > 100
