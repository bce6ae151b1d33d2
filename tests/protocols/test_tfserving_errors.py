"""TF Serving's error codes and messages, from a real ferry process, over REST and gRPC.

Each case is one of TF Serving's own checks (http_rest_api_handler_test.cc,
json_tensor_test.cc, tensorflow_model_server_test.py, predict_util.cc) with the text
TF Serving answers; ferry's own detail may follow TF Serving's text, never precede it.
The texts live in ferry.tfserving_messages; these tests spell them out, so a change to
the table that drifts from TF Serving fails here.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from support.models import scale_model, two_input_model, write_model
from support.server import FerryProcess, free_port

from ferry.codecs.tensor_proto import encode_tensor
from ferry.protos import message_class

X = np.ones((1, 4), np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    root = tmp_path_factory.mktemp("models")
    write_model(scale_model(2.0), root / "scale", 1)
    write_model(two_input_model(), root / "pair", 1)
    process = FerryProcess([str(root)], tmp_path_factory.mktemp("logs") / "ferry.log")
    try:
        process.wait_ready()
        process.wait_version("scale", 1)
        process.wait_version("pair", 1)
        yield process
    finally:
        process.stop()


def grpc_predict_error(server: FerryProcess, model: str, inputs: dict, **spec) -> grpc.RpcError:
    request = message_class("tensorflow.serving.PredictRequest")()
    request.model_spec.name = model
    for key, value in spec.items():
        setattr(request.model_spec, key, value)
    for name, array in inputs.items():
        encode_tensor(array, name, into=request.inputs[name])
    with grpc.insecure_channel(server.grpc_target) as channel:
        rpc = channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=message_class("tensorflow.serving.PredictResponse").FromString,
        )
        with pytest.raises(grpc.RpcError) as caught:
            rpc(request, timeout=10)
    return caught.value


def rest_error(server: FerryProcess, path: str, body: bytes) -> tuple[int, str]:
    response = server.post(path, data=body, headers={"Content-Type": "application/json"})
    return response.status_code, response.json()["error"]


# -- gRPC ----------------------------------------------------------------------------------


def test_grpc_unknown_signature_is_failed_precondition(server: FerryProcess) -> None:
    """tensorflow_model_server_test.py's bad-signature case: FAILED_PRECONDITION."""
    error = grpc_predict_error(server, "scale", {"x": X}, signature_name="nope")

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == 'Serving signature key "nope" not found.'


def test_grpc_input_names_are_checked_as_tf_serving_checks_them(server: FerryProcess) -> None:
    pair = np.ones((1, 2), np.float32)
    too_few = grpc_predict_error(server, "pair", {"a": pair})
    too_many = grpc_predict_error(server, "scale", {"x": X, "extra": X})
    renamed = grpc_predict_error(server, "pair", {"a": pair, "c": pair})

    for error in (too_few, too_many, renamed):
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert too_few.details() == (
        "input size does not match signature: 1!=2 len({a}) != len({a,b}). Sent extra: {}. "
        "Missing but required: {b}."
    )
    assert too_many.details() == (
        "input size does not match signature: 2!=1 len({extra,x}) != len({x}). Sent extra: "
        "{extra}. Missing but required: {}."
    )
    # Same count, another name: TensorFlow's GetInputValues words it.
    assert renamed.details() == (
        "Signature input alias: b(feed name: b) not found in request and no default value "
        "provided. Inputs expected to be in the request {a,c}, or default input alias set: "
    )


# -- REST ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"instances = [1, 2]", "JSON Parse error: Invalid value. at offset: 0"),
        (
            b'{"instances": 1.0}',
            "JSON Value: {\n    \"instances\": 1.0\n} Expecting 'instances' to be an list/array",
        ),
        (
            b'{"instances": []}',
            "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
        ),
        (
            b'{"instances": [[1,2,3,4]], "inputs": [[1,2,3,4]]}',
            'JSON Value: {\n    "instances": [[1, 2, 3, 4]],\n    "inputs": [[1, 2, 3, 4]]\n} Not '
            "formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ",
        ),
        (b'{"signature_name": "serving_default"}', "Missing 'inputs' or 'instances' key"),
        (
            b'{"signature_name": 100}',
            "JSON Value: {\n    \"signature_name\": 100\n} not formatted correctly. "
            "'signature_name' key must be a string value.",
        ),
    ],
    ids=["empty", "not-json", "instances-not-a-list", "instances-empty", "both-keys",
         "neither-key", "signature-name-not-a-string"],
)  # fmt: skip
def test_rest_body_errors_are_tf_servings(server: FerryProcess, body: bytes, message: str) -> None:
    status, error = rest_error(server, "/v1/models/scale:predict", body)

    assert (status, error) == (400, message)


def test_rest_wrong_value_type_is_tf_servings_type_error(server: FerryProcess) -> None:
    """http_rest_api_handler_test.cc: `{"instances": ["x", "y"]}` for a float input."""
    status, error = rest_error(server, "/v1/models/scale:predict", b'{"instances": ["x", "y"]}')

    assert status == 400
    assert error.startswith(
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "x" Type: String is not of expected type: float'
    )


def test_rest_several_inputs_need_named_instances_or_inputs(server: FerryProcess) -> None:
    plain_rows = rest_error(server, "/v1/models/pair:predict", b'{"instances": [[1, 2]]}')
    plain_columns = rest_error(server, "/v1/models/pair:predict", b'{"inputs": [[1, 2]]}')
    unknown_key = rest_error(
        server, "/v1/models/pair:predict", b'{"instances": [{"a": [1, 2], "z": [1, 2]}]}'
    )

    assert plain_rows[0] == plain_columns[0] == unknown_key[0] == 400
    assert plain_rows[1].startswith(
        "instances is a plain list, but expecting list of objects as multiple input tensors "
        "required as per tensorinfo_map"
    )
    assert plain_columns[1].startswith(
        "inputs is a plain value/list, but expecting an object as multiple input tensors "
        "required as per tensorinfo_map"
    )
    assert unknown_key[1] == (
        "Failed to process element: 0 key: z of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: z"
    )


def test_rest_bad_b64_is_tf_servings_error(server: FerryProcess) -> None:
    # A b64 object where a float is expected is a type error, as in TF Serving.
    status, error = rest_error(server, "/v1/models/scale:predict", b'{"inputs": {"b64": "AAAA"}}')

    assert status == 400
    assert error.startswith(
        'JSON Value: {\n    "b64": "AAAA"\n} Type: Object is not of expected type: float'
    )


def test_rest_classify_without_examples_is_tf_servings_error(server: FerryProcess) -> None:
    missing = rest_error(server, "/v1/models/scale:classify", b'{"context": {}}')
    empty = rest_error(server, "/v1/models/scale:regress", b'{"examples": []}')

    assert missing == (
        400,
        "JSON Value: {\n    \"context\": {}\n} When method is classify, key 'examples' is "
        "expected and was not found",
    )
    assert empty == (
        400,
        "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array",
    )


def test_rest_version_beyond_int64_fails_to_convert(server: FerryProcess) -> None:
    version = str(2**64 - 1)  # TF Serving's test uses uint64 max

    status, error = rest_error(server, f"/v1/models/scale/versions/{version}:regress", b"{}")
    get = server.get(f"/v1/models/scale/versions/{version}")

    assert (status, error) == (400, f"Failed to convert version: {version} to numeric.")
    assert get.status_code == 400
    assert get.json()["error"] == f"Failed to convert version: {version} to numeric."


# -- start-up ------------------------------------------------------------------------------


def test_a_bad_config_file_stops_start_up_with_tf_servings_words(tmp_path: Path) -> None:
    """testBadModelConfig: TF Serving's harness looks for this text on stderr."""
    config = tmp_path / "bad_model_config.txt"
    config.write_text("improperly formatted file")

    ended = subprocess.run(
        [sys.executable, "-m", "ferry.cli", "serve", "--model_config_file", str(config),
         "--host", "127.0.0.1", "--rest_api_port", str(free_port()), "--port", str(free_port())],
        capture_output=True,
        timeout=60,
    )  # fmt: skip

    assert ended.returncode != 0
    assert b"Error parsing text-format tensorflow.serving.ModelServerConfig" in ended.stderr
