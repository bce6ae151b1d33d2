"""TF Serving's gRPC API, checked against a real ferry process serving real ONNX models.

Requests are built with ferry's own message classes and sent over a plain grpc channel,
so these tests pin the wire behaviour; tests/compat/ repeats the essentials with the
official `tensorflow-serving-api` stubs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from support.models import (
    sleepy_model,
    write_model,
    write_protocol_models,
)
from support.server import FerryProcess

from ferry.codecs.tensor_proto import decode_tensor, encode_tensor
from ferry.protos import message_class


def msg(name: str):
    return message_class(f"tensorflow.serving.{name}")()


class Stub:
    """Calls one method by path with ferry's message classes (what generated stubs do)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel

    def call(self, method: str, request, response_type: str, timeout: float = 10.0):
        service = (
            "ModelService"
            if method in ("GetModelStatus", "HandleReloadConfigRequest")
            else ("PredictionService")
        )
        rpc = self.channel.unary_unary(
            f"/tensorflow.serving.{service}/{method}",
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=message_class(f"tensorflow.serving.{response_type}").FromString,
        )
        return rpc(request, timeout=timeout)

    def predict(self, request, timeout: float = 10.0):
        return self.call("Predict", request, "PredictResponse", timeout)


def predict_request(model: str, inputs: dict[str, np.ndarray], **spec) -> object:
    request = msg("PredictRequest")
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    for name, array in inputs.items():
        encode_tensor(array, name, into=request.inputs[name])
    return request


def outputs_of(response) -> dict[str, np.ndarray]:
    return {name: decode_tensor(proto, name) for name, proto in response.outputs.items()}


@pytest.fixture
def server(model_root: Path, start_server) -> FerryProcess:
    write_protocol_models(model_root)
    config = model_root / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{name}" base_path: "{name}"{extra} }}\n'
            for name, extra in [
                ("mlp", ""),
                (
                    "scale",
                    ' model_version_policy { all {} } version_labels { key: "stable" value: 1 }',
                ),
                ("pair", ""),
                ("echo", ""),
                ("ints", ""),
            ]
        )
        + "}\n"
    )
    # Model control on, with the whole folder as a root: the reload tests use its models.
    server = start_server(
        "--model_config_file",
        str(config),
        "--enable_model_control",
        "--model_roots",
        str(model_root),
    )
    for model, version in [("mlp", 1), ("scale", 1), ("scale", 2), ("pair", 1), ("echo", 1)]:
        server.wait_version(model, version)
    server.wait_version("ints", 1)
    return server


@pytest.fixture
def stub(server: FerryProcess) -> Iterator[Stub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield Stub(channel)


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


X = np.arange(8, dtype=np.float32).reshape(2, 4)


def test_predict_answers_in_the_typed_field_with_the_served_spec(stub) -> None:
    response = stub.predict(predict_request("scale", {"x": X}))

    assert response.model_spec.name == "scale"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    output = response.outputs["y"]
    # TF Serving's default (AsProtoField); test_tfserving_grpc_outputs.py has every dtype.
    assert list(output.float_val) == (X * 2).reshape(-1).tolist() and not output.tensor_content
    np.testing.assert_array_equal(outputs_of(response)["y"], X * 2)


def test_predict_accepts_typed_value_fields_and_the_single_value_fill(stub) -> None:
    request = predict_request("scale", {}, version=1)
    x = request.inputs["x"]
    x.dtype = 1  # DT_FLOAT
    x.tensor_shape.dim.add(size=2)
    x.tensor_shape.dim.add(size=4)
    x.float_val.extend(X.reshape(-1).tolist())
    filled = predict_request("ints", {})
    ids = filled.inputs["ids"]
    ids.dtype = 9  # DT_INT64
    ids.tensor_shape.dim.add(size=2)
    ids.tensor_shape.dim.add(size=3)
    ids.int64_val.append(21)

    assert np.array_equal(outputs_of(stub.predict(request))["y"], X)
    assert outputs_of(stub.predict(filled))["twice"].tolist() == [[42] * 3] * 2


def test_predict_strings_travel_in_string_val(stub) -> None:
    text = np.array([b"hello", "h\u00e9llo w\u00f6rld".encode()], dtype=object)

    response = stub.predict(predict_request("echo", {"text": text}))

    assert list(response.outputs["text_bytes"].string_val) == list(text)


def test_output_filter_returns_only_the_named_outputs(stub) -> None:
    a = np.ones((1, 2), np.float32)
    request = predict_request("pair", {"a": a, "b": a * 3})
    request.output_filter.append("prod")

    response = stub.predict(request)

    assert list(response.outputs) == ["prod"]
    assert outputs_of(response)["prod"].tolist() == [[3.0, 3.0]]


def test_output_filter_naming_an_unknown_output_is_invalid_argument(stub) -> None:
    request = predict_request(
        "pair", {"a": np.ones((1, 2), np.float32)} | {"b": np.ones((1, 2), np.float32)}
    )
    request.output_filter.append("nope")

    error = rpc_error(lambda: stub.predict(request))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output tensor alias not found in signature: nope" in error.details()


def test_version_and_label_choose_the_version(stub) -> None:
    by_version = stub.predict(predict_request("scale", {"x": X}, version=1))
    by_label = stub.predict(predict_request("scale", {"x": X}, version_label="stable"))

    assert by_version.model_spec.version.value == 1
    assert np.array_equal(outputs_of(by_version)["y"], X)
    assert by_label.model_spec.version.value == 1


def test_metadata_packs_a_signature_def_map(stub) -> None:
    request = msg("GetModelMetadataRequest")
    request.model_spec.name = "mlp"
    request.metadata_field.append("signature_def")

    response = stub.call("GetModelMetadata", request, "GetModelMetadataResponse")

    assert response.model_spec.name == "mlp" and response.model_spec.version.value == 1
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signatures = msg("SignatureDefMap")
    packed.Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert signature.inputs["x"].dtype == 1
    assert [d.size for d in signature.inputs["x"].tensor_shape.dim] == [-1, 8]
    assert [d.size for d in signature.outputs["probs"].tensor_shape.dim] == [-1, 3]


def test_metadata_without_fields_is_invalid_argument(stub) -> None:
    request = msg("GetModelMetadataRequest")
    request.model_spec.name = "mlp"

    error = rpc_error(lambda: stub.call("GetModelMetadata", request, "GetModelMetadataResponse"))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata_field" in error.details()


def test_model_status_lists_versions_newest_first(stub) -> None:
    request = msg("GetModelStatusRequest")
    request.model_spec.name = "scale"

    response = stub.call("GetModelStatus", request, "GetModelStatusResponse")

    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (2, 30, 0),  # AVAILABLE, OK
        (1, 30, 0),
    ]


def test_status_of_an_unknown_model_is_not_found(stub) -> None:
    request = msg("GetModelStatusRequest")
    request.model_spec.name = "nope"

    error = rpc_error(lambda: stub.call("GetModelStatus", request, "GetModelStatusResponse"))

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find any versions of model nope"


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (
            {"model": "nope"},
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
        ({"version": 9}, grpc.StatusCode.NOT_FOUND, "Specific(scale, 9)"),
        (
            {"input": "z"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "Signature input alias: x(feed name: x) not found in request",
        ),
        (
            {"array": X.astype(np.float64)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "Input 'x' has dtype DT_DOUBLE but the model expects DT_FLOAT",
        ),
        (
            {"array": np.ones((2, 5), np.float32)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "Input 'x' has shape [2, 5]",
        ),
        (
            {"signature_name": "other"},
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "other" not found.',
        ),
        (
            {"content": b"\x00" * 5},
            grpc.StatusCode.INVALID_ARGUMENT,
            "Input 'x': tensor_content has 5 bytes but shape [2, 4] of DT_FLOAT needs 32",
        ),
        (
            {"dtype": 8},
            grpc.StatusCode.INVALID_ARGUMENT,
            "Input 'x' has unsupported data type DT_COMPLEX64",
        ),
    ],
)
def test_bad_requests_get_exact_codes_and_the_server_keeps_serving(
    stub, change: dict, code: grpc.StatusCode, message: str
) -> None:
    spec = {"version": change["version"]} if "version" in change else {}
    if "signature_name" in change:
        spec["signature_name"] = change["signature_name"]
    request = predict_request(
        change.get("model", "scale"), {change.get("input", "x"): change.get("array", X)}, **spec
    )
    if "content" in change:
        request.inputs["x"].tensor_content = change["content"]
    if "dtype" in change:
        request.inputs["x"].dtype = change["dtype"]

    error = rpc_error(lambda: stub.predict(request))

    assert error.code() == code
    assert message in error.details()
    assert np.array_equal(outputs_of(stub.predict(predict_request("scale", {"x": X})))["y"], X * 2)


def test_corrupt_protobuf_bytes_are_invalid_argument(stub) -> None:
    error = rpc_error(lambda: stub.predict(b"\x0a\xff\xff\xff\xff\x0f garbage"))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Could not parse PredictRequest" in error.details()
    assert stub.predict(predict_request("scale", {"x": X})).model_spec.version.value == 2


def test_missing_model_spec_is_invalid_argument(stub) -> None:
    error = rpc_error(lambda: stub.predict(msg("PredictRequest")))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Missing ModelSpec"


@pytest.mark.parametrize(
    ("method", "request_type", "response_type", "kind"),
    [
        ("Classify", "ClassificationRequest", "ClassificationResponse", "classification"),
        ("Regress", "RegressionRequest", "RegressionResponse", "regression"),
    ],
)
def test_classify_and_regress_refuse_a_signature_not_shaped_for_them(
    stub, method: str, request_type: str, response_type: str, kind: str
) -> None:
    """TF Serving's answer for a signature without an `inputs` tensor of tf.Examples."""
    request = msg(request_type)
    request.model_spec.name = "mlp"

    error = rpc_error(lambda: stub.call(method, request, response_type))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(
        f'No {kind} inputs found in SignatureDef: inputs {{\n  key: "x"'
    )


def test_multi_inference_refuses_a_task_without_a_classify_or_regress_method(stub) -> None:
    request = msg("MultiInferenceRequest")
    request.tasks.add().model_spec.name = "mlp"

    error = rpc_error(lambda: stub.call("MultiInference", request, "MultiInferenceResponse"))

    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error.details() == "Unsupported signature method_name: "


def test_reload_config_swaps_the_served_models(stub, model_root: Path) -> None:
    request = msg("ReloadConfigRequest")
    config = request.config.model_config_list.config.add()
    config.name = "renamed"
    config.base_path = str(model_root / "scale")
    config.model_version_policy.specific.versions.append(1)

    response = stub.call("HandleReloadConfigRequest", request, "ReloadConfigResponse", timeout=60)

    assert response.status.error_code == 0, response.status.error_message
    served = stub.predict(predict_request("renamed", {"x": X}))
    assert served.model_spec.version.value == 1
    error = rpc_error(lambda: stub.predict(predict_request("scale", {"x": X})))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_reload_config_reports_a_model_that_cannot_load(stub, model_root: Path) -> None:
    request = msg("ReloadConfigRequest")
    config = request.config.model_config_list.config.add()
    config.name = "empty"
    config.base_path = str(model_root / "missing")

    response = stub.call("HandleReloadConfigRequest", request, "ReloadConfigResponse", timeout=60)

    assert response.status.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "empty" in response.status.error_message


def test_reload_config_without_a_model_config_list_is_invalid_argument(stub) -> None:
    request = msg("ReloadConfigRequest")

    error = rpc_error(
        lambda: stub.call("HandleReloadConfigRequest", request, "ReloadConfigResponse")
    )

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "only model_config_list is supported" in error.details()


def test_client_deadline_is_the_request_timeout(model_root: Path, start_server) -> None:
    write_model(sleepy_model(), model_root / "sleepy", 1)
    server = start_server(str(model_root), "--enable_model_warmup=false")
    server.wait_version("sleepy", 1)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = Stub(channel)
        request = predict_request("sleepy", {"x": np.ones((1, 4), np.float32)})

        error = rpc_error(lambda: stub.predict(request, timeout=0.2))

        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The server is still answering (after the slow run it was busy with).
        assert stub.predict(request, timeout=60).model_spec.name == "sleepy"
