"""The wire protocols the benchmark drives ferry with: request files, load commands, and a
correctness check of one real-client request per protocol.

Why each protocol gets a check: wrk and h2load only count responses, they never look
inside them, and h2load even counts a failed gRPC call as HTTP 200. A setup that
answers every request with an error (a wrong tensor name, a broken frame) would look
fast. So before each measured run the harness sends the same bytes with an ordinary
client of that protocol (http.client for TF JSON, grpcio for TF gRPC, requests for V2
binary), decodes the answer, and compares it with onnxruntime run in-process on the
same input row.

Protocols:
  rest   TF Serving REST, JSON body `{"instances": [[...]]}`        wrk
  grpc   TF Serving gRPC Predict, TensorProto with tensor_content    h2load (h2c)
  v2bin  KServe V2 REST infer, binary input and binary output        wrk
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import requests
from ceiling import make_session
from loadgen import GRPC_HEADERS, grpc_frame, instance_values, predict_body
from servers import HOST, PROBE_TIMEOUT_S, post

from ferry.codecs.tensor_proto import encode_tensor
from ferry.protos import message_class
from ferry.runtimes.base import RuntimeOptions

GRPC_PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"
V2_HEADER_LENGTH = "Inference-Header-Content-Length"
# Same model, same input, batch of one: only float summation order can differ.
RTOL, ATOL = 1e-4, 1e-6


@dataclass(frozen=True)
class Protocol:
    """One way of sending a predict request, and how its rows are labelled.

    `api` is the `api` label ferry's `ferry_requests_total` uses for this protocol
    (see ferry.protocols.*: inference.predict("rest" | "grpc" | "v2_rest", ...))."""

    name: str
    label: str
    api: str
    tool: str


PROTOCOLS: dict[str, Protocol] = {
    "rest": Protocol("rest", "TF REST JSON", "rest", "wrk"),
    "grpc": Protocol("grpc", "TF gRPC tensor_content", "grpc", "h2load"),
    "v2bin": Protocol("v2bin", "V2 REST binary", "v2_rest", "wrk"),
    # tritonclient's JSON body: the input as a flat list of numbers.
    "v2json": Protocol("v2json", "V2 REST JSON", "v2_rest", "wrk"),
    # boto3's invoke_endpoint: SageMaker's runtime API with the TF Serving JSON body.
    "sagemaker": Protocol("sagemaker", "SageMaker runtime JSON", "sagemaker_runtime", "wrk"),
}


@dataclass(frozen=True)
class ModelCase:
    """One example model's input row, tensor names and expected output."""

    model: str
    input_name: str
    output_name: str
    row: np.ndarray  # float32 [width]
    expected: np.ndarray  # float32 [1, out_width], onnxruntime in-process on `row`


def model_case(model: str, model_file: Path, width: int, options: RuntimeOptions) -> ModelCase:
    """The input row (numpy seed 0, as in every request body) and its expected output."""
    session = make_session(model_file, options)
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name
    row = instance_values(width)
    (expected,) = session.run([output_name], {input_name: row.reshape(1, -1)})
    return ModelCase(model, input_name, output_name, row, np.asarray(expected))


# -- request bodies -------------------------------------------------------------------------


def grpc_predict_request(case: ModelCase) -> bytes:
    """A serialized tensorflow.serving.PredictRequest: model `case.model`, default
    signature, one float32 [1, width] input written as tensor_content, as
    `tf.make_tensor_proto` writes it (ferry's encoder writes the typed float_val field by
    default, as TF Serving's answers do, so tensor_content is asked for explicitly)."""
    request = message_class("tensorflow.serving.PredictRequest")()
    request.model_spec.name = case.model
    encode_tensor(
        case.row.reshape(1, -1),
        case.input_name,
        into=request.inputs[case.input_name],
        tensor_content=True,
    )
    return request.SerializeToString()


def v2_binary_body(case: ModelCase) -> tuple[bytes, int]:
    """A V2 infer body with the input as raw bytes and all outputs asked for as binary:
    compact JSON header, then the row's float32 bytes (little-endian, as Triton sends).
    Returns (body, JSON header length)."""
    raw = case.row.astype("<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": case.input_name,
                "shape": [1, int(case.row.size)],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + raw, len(head)


def v2_json_body(case: ModelCase) -> bytes:
    """The V2 infer body tritonclient sends for a numpy input with binary_data=False: the
    row as a flat list of numbers, outputs as JSON too."""
    body = {
        "inputs": [
            {
                "name": case.input_name,
                "shape": [1, int(case.row.size)],
                "datatype": "FP32",
                "data": case.row.astype(np.float32).reshape(-1).tolist(),
            }
        ],
    }
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Payload:
    """What the load generator sends for one (protocol, model): the body file (wrk
    scripts inline JSON instead) and the HTTP headers that go with it."""

    body_file: Path
    headers: dict[str, str]


def write_payload(protocol: Protocol, case: ModelCase, folder: Path) -> Payload:
    """Write the request body of `protocol` for `case` under `folder`."""
    path = folder / f"{case.model}.{protocol.name}.body"
    if protocol.name in ("rest", "sagemaker"):
        path.write_bytes(predict_body(int(case.row.size)))
        return Payload(path, {"Content-Type": "application/json"})
    if protocol.name == "grpc":
        path.write_bytes(grpc_frame(grpc_predict_request(case)))
        return Payload(path, dict(GRPC_HEADERS))
    if protocol.name == "v2json":
        path.write_bytes(v2_json_body(case))
        return Payload(path, {"Content-Type": "application/json"})
    if protocol.name == "v2bin":
        body, header_length = v2_binary_body(case)
        path.write_bytes(body)
        return Payload(
            path,
            {"Content-Type": "application/octet-stream", V2_HEADER_LENGTH: str(header_length)},
        )
    raise ValueError(f"unknown protocol {protocol.name!r}")


def target_url(protocol: Protocol, case: ModelCase, rest_port: int, grpc_port: int | None) -> str:
    """The URL the load generator hits for `protocol`; gRPC is h2c on ferry's gRPC port."""
    if protocol.name == "grpc":
        if grpc_port is None:
            raise ValueError("the gRPC protocol needs the server's gRPC port")
        return f"http://{HOST}:{grpc_port}{GRPC_PREDICT_PATH}"
    if protocol.name in ("v2bin", "v2json"):
        return f"http://{HOST}:{rest_port}/v2/models/{case.model}/infer"
    if protocol.name == "sagemaker":
        return f"http://{HOST}:{rest_port}{sagemaker_path(case)}"
    return f"http://{HOST}:{rest_port}/v1/models/{case.model}:predict"


# -- one real-client request per protocol ---------------------------------------------------


class WrongAnswer(RuntimeError):
    """The server answered the probe request with an error or a wrong prediction."""


def _compare(case: ModelCase, got: np.ndarray, where: str) -> None:
    expected = case.expected
    if got.shape != expected.shape:
        raise WrongAnswer(f"{where}: output shape {got.shape}, expected {expected.shape}")
    if not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
        worst = float(np.max(np.abs(got - expected)))
        raise WrongAnswer(f"{where}: prediction differs from onnxruntime (max abs diff {worst:g})")


def check_rest(case: ModelCase, rest_port: int, grpc_port: int | None) -> None:
    """TF Serving REST: POST the JSON body, expect ``{"predictions": [[...]]}``."""
    status, body = post(
        rest_port, f"/v1/models/{case.model}:predict", predict_body(int(case.row.size))
    )
    if status != 200:
        raise WrongAnswer(f"TF REST: HTTP {status} {body[:200]!r}")
    predictions = json.loads(body)["predictions"]
    _compare(case, np.asarray(predictions, dtype=np.float32), "TF REST")


def sagemaker_path(case: ModelCase) -> str:
    """InvokeEndpoint's path: the endpoint named after the model."""
    return f"/endpoints/{case.model}/invocations"


def check_sagemaker(case: ModelCase, rest_port: int, grpc_port: int | None) -> None:
    """SageMaker's runtime API: the TF REST body, the same predictions back."""
    status, body = post(rest_port, sagemaker_path(case), predict_body(int(case.row.size)))
    if status != 200:
        raise WrongAnswer(f"SageMaker runtime: HTTP {status} {body[:200]!r}")
    predictions = json.loads(body)["predictions"]
    _compare(case, np.asarray(predictions, dtype=np.float32), "SageMaker runtime")


def check_grpc(case: ModelCase, rest_port: int, grpc_port: int | None) -> None:
    """TF Serving gRPC: the same serialized PredictRequest the frame file holds, over a
    grpcio channel; the output must come back as a float32 TensorProto."""
    if grpc_port is None:
        raise WrongAnswer("TF gRPC: the server has no gRPC port")
    response_class = message_class("tensorflow.serving.PredictResponse")
    with grpc.insecure_channel(f"{HOST}:{grpc_port}") as channel:
        predict = channel.unary_unary(
            GRPC_PREDICT_PATH,
            request_serializer=None,  # the request is already serialized
            response_deserializer=response_class.FromString,
        )
        try:
            response = predict(grpc_predict_request(case), timeout=PROBE_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise WrongAnswer(f"TF gRPC: {exc.code()} {exc.details()}") from None
    tensor = response.outputs[case.output_name]
    shape = tuple(d.size for d in tensor.tensor_shape.dim)
    if tensor.tensor_content:
        got = np.frombuffer(tensor.tensor_content, dtype="<f4")
    else:
        got = np.asarray(tensor.float_val, dtype=np.float32)
    if got.size != int(np.prod(shape)):
        raise WrongAnswer(f"TF gRPC: {got.size} values for shape {list(shape)}")
    _compare(case, got.reshape(shape), "TF gRPC")


def check_v2bin(case: ModelCase, rest_port: int, grpc_port: int | None) -> None:
    """V2 REST binary: the same body, and a binary output after the JSON header."""
    body, header_length = v2_binary_body(case)
    response = requests.post(
        f"http://{HOST}:{rest_port}/v2/models/{case.model}/infer",
        data=body,
        headers={
            "Content-Type": "application/octet-stream",
            V2_HEADER_LENGTH: str(header_length),
        },
        timeout=PROBE_TIMEOUT_S,
    )
    if response.status_code != 200:
        raise WrongAnswer(f"V2 binary: HTTP {response.status_code} {response.content[:200]!r}")
    length = response.headers.get(V2_HEADER_LENGTH)
    if length is None:
        raise WrongAnswer("V2 binary: the response has no binary part (no header length)")
    head = json.loads(response.content[: int(length)])
    (output,) = (o for o in head["outputs"] if o["name"] == case.output_name)
    size = output.get("parameters", {}).get("binary_data_size")
    if output["datatype"] != "FP32" or size is None:
        raise WrongAnswer(f"V2 binary: output is not binary FP32: {output}")
    raw = response.content[int(length) :]
    if len(raw) != size:  # one output, so it is the whole binary part
        raise WrongAnswer(f"V2 binary: {len(raw)} bytes of output, header says {size}")
    got = np.frombuffer(raw, dtype="<f4").reshape(output["shape"])
    _compare(case, got, "V2 binary")


def check_v2json(case: ModelCase, rest_port: int, grpc_port: int | None) -> None:
    """V2 REST JSON: the same body, the output as JSON data."""
    response = requests.post(
        f"http://{HOST}:{rest_port}/v2/models/{case.model}/infer",
        data=v2_json_body(case),
        headers={"Content-Type": "application/json"},
        timeout=PROBE_TIMEOUT_S,
    )
    if response.status_code != 200:
        raise WrongAnswer(f"V2 JSON: HTTP {response.status_code} {response.content[:200]!r}")
    (output,) = (o for o in response.json()["outputs"] if o["name"] == case.output_name)
    got = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    _compare(case, got, "V2 JSON")


CHECKS: dict[str, Callable[[ModelCase, int, int | None], None]] = {
    "rest": check_rest,
    "grpc": check_grpc,
    "v2bin": check_v2bin,
    "v2json": check_v2json,
    "sagemaker": check_sagemaker,
}
