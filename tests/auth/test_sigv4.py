"""`ferry serve --auth FILE`: the real boto3 `sagemaker-runtime` client signs requests
with SigV4 and ferry checks them; every bad case is refused with 403 before anything is
served (ferry's request counter does not move); bearer tokens work over REST and gRPC;
health paths stay open."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import grpc
import numpy as np
import pytest
import requests
from support.models import scale_model, write_model
from support.server import FerryProcess, wait_until

from ferry.auth.keys import SIGV4, TOKEN, NewKey, add_key, revoke_key
from ferry.protos import message_class

boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402 - after the importorskip

from ferry.auth.sigv4 import sign_headers  # noqa: E402 - needs botocore

REGION = "eu-central-1"
BODY = json.dumps([[1, 2, 3, 4]]).encode()
V2 = "/inference.GRPCInferenceService/"


class Keys:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sigv4: NewKey = add_key(path, SIGV4, "boto3")
        self.other: NewKey = add_key(path, SIGV4, "to revoke")
        self.token: NewKey = add_key(path, TOKEN, "curl")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("auth") / "keys.json")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[FerryProcess]:
    root = tmp_path_factory.mktemp("models")
    write_model(scale_model(2.0), root / "scale", 1)
    process = FerryProcess(
        [str(root), "--auth", str(keys.path), "--file_system_poll_wait_seconds", "0"],
        tmp_path_factory.mktemp("logs") / "ferry.log",
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def runtime_client(server: FerryProcess, key_id: str, secret: str):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )


@pytest.fixture(scope="module")
def client(server: FerryProcess, keys: Keys):
    return runtime_client(server, keys.sigv4.entry.id, keys.sigv4.secret)


def bearer(keys: Keys) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys.token.secret}"}


def served_requests(server: FerryProcess, keys: Keys) -> float:
    """The sum of ferry's request counter: every request that reached a protocol."""
    text = server.get("/monitoring/prometheus/metrics", headers=bearer(keys)).text
    return sum(float(m) for m in re.findall(r"^ferry_requests_total\{.*\} (\S+)$", text, re.M))


def invoke(client) -> dict:
    response = client.invoke_endpoint(
        EndpointName="scale", Body=BODY, ContentType="application/json"
    )
    return json.loads(response["Body"].read())


def signed(server: FerryProcess, keys: Keys, body: bytes = BODY, **extra: str) -> dict:
    url = f"{server.url}/endpoints/scale/invocations"
    headers = {"Content-Type": "application/json", **extra}
    return sign_headers("POST", url, body, keys.sigv4.entry.id, keys.sigv4.secret, REGION, headers)


def post_runtime(server: FerryProcess, headers: dict, body: bytes = BODY) -> requests.Response:
    return server.post("/endpoints/scale/invocations", data=body, headers=headers)


def test_boto3_with_a_key_from_the_file_is_served(client) -> None:
    assert invoke(client) == {"predictions": [[2.0, 4.0, 6.0, 8.0]]}


def test_a_signed_request_reaches_every_rest_api(server: FerryProcess, keys: Keys) -> None:
    url = f"{server.url}/v1/models/scale:predict"
    body = json.dumps({"instances": [[1, 1, 1, 1]]}).encode()
    headers = sign_headers("POST", url, body, keys.sigv4.entry.id, keys.sigv4.secret, "us-east-1")
    response = requests.post(url, data=body, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    get_url = f"{server.url}/v2/models/scale?unused=1&a=b"
    get_headers = sign_headers("GET", get_url, b"", keys.sigv4.entry.id, keys.sigv4.secret)
    assert requests.get(get_url, headers=get_headers, timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("case", "error_type"),
    [
        ("unsigned", "MissingAuthenticationToken"),
        ("wrong secret", "InvalidSignatureException"),
        ("unknown key", "UnrecognizedClientException"),
        ("tampered body", "InvalidSignatureException"),
        ("tampered content hash", "InvalidSignatureException"),
        ("tampered header", "InvalidSignatureException"),
        ("other service", "InvalidSignatureException"),
        ("garbage", "IncompleteSignature"),
    ],
)
def test_bad_requests_are_refused_with_403_and_nothing_is_served(
    server: FerryProcess, keys: Keys, case: str, error_type: str
) -> None:
    before = served_requests(server, keys)
    headers = signed(server, keys)
    body = BODY
    if case == "unsigned":
        headers = {"Content-Type": "application/json"}
    elif case == "wrong secret":
        url = f"{server.url}/endpoints/scale/invocations"
        headers = sign_headers("POST", url, BODY, keys.sigv4.entry.id, "x" * 40, REGION)
    elif case == "unknown key":
        url = f"{server.url}/endpoints/scale/invocations"
        headers = sign_headers("POST", url, BODY, "FKIAUNKNOWNUNKNOWN00", "x" * 40, REGION)
    elif case == "tampered body":
        body = json.dumps([[9, 9, 9, 9]]).encode()
    elif case == "tampered content hash":
        # S3-style signing of the body hash header; the body then changes.
        headers = signed(server, keys, **{"X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()})
        body = json.dumps([[9, 9, 9, 9]]).encode()
    elif case == "tampered header":
        headers["Content-Type"] = "text/csv"
    elif case == "other service":
        headers["Authorization"] = headers["Authorization"].replace("/sagemaker/", "/s3/")
    elif case == "garbage":
        headers["Authorization"] = "AWS4-HMAC-SHA256 nonsense"
    response = post_runtime(server, headers, body)
    assert response.status_code == 403, response.text
    assert response.headers["x-amzn-ErrorType"] == error_type
    assert "message" in response.json()
    assert served_requests(server, keys) == before


def test_boto3_errors_for_refused_requests(server: FerryProcess, keys: Keys) -> None:
    wrong = runtime_client(server, keys.sigv4.entry.id, "wrong-secret")
    with pytest.raises(ClientError) as caught:
        invoke(wrong)
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    unknown = runtime_client(server, "FKIANOSUCHKEY0000000", keys.sigv4.secret)
    with pytest.raises(ClientError) as caught:
        invoke(unknown)
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_a_signature_more_than_five_minutes_off_is_refused(
    server: FerryProcess, keys: Keys, client, skew: timedelta
) -> None:
    before = served_requests(server, keys)
    clock = datetime.now(UTC).replace(tzinfo=None) + skew
    with (
        mock.patch("botocore.auth.get_current_datetime", return_value=clock),
        pytest.raises(ClientError) as caught,
    ):
        invoke(client)
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert "Signature expired" in caught.value.response["Error"]["Message"]
    assert served_requests(server, keys) == before


def test_a_signature_within_the_skew_is_accepted(client) -> None:
    clock = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=4)
    with mock.patch("botocore.auth.get_current_datetime", return_value=clock):
        assert invoke(client)["predictions"] == [[2.0, 4.0, 6.0, 8.0]]


def test_rest_refusals_take_tf_servings_error_form(server: FerryProcess, keys: Keys) -> None:
    before = served_requests(server, keys)
    response = server.predict("scale", {"instances": [[1, 2, 3, 4]]})
    assert response.status_code == 403
    assert set(response.json()) == {"error"}
    response = server.post(
        "/v1/models/scale:predict",
        json={"instances": [[1, 2, 3, 4]]},
        headers={"Authorization": "Bearer ferry_not-a-token"},
    )
    assert response.status_code == 403
    assert response.json() == {"error": "The bearer token is not valid."}
    assert server.get("/v1/models/scale").status_code == 403
    assert server.get("/monitoring/prometheus/metrics").status_code == 403
    assert served_requests(server, keys) == before


def test_bearer_tokens_work_over_rest(server: FerryProcess, keys: Keys) -> None:
    response = server.post(
        "/v1/models/scale:predict", json={"instances": [[1, 1, 1, 1]]}, headers=bearer(keys)
    )
    assert response.status_code == 200
    assert response.json() == {"predictions": [[2.0, 2.0, 2.0, 2.0]]}
    assert server.get("/v1/models/scale", headers=bearer(keys)).status_code == 200


def test_health_paths_stay_open(server: FerryProcess) -> None:
    assert server.get("/v2/health/live").status_code == 200
    assert server.get("/v2/health/ready").status_code == 200


def grpc_call(server: FerryProcess, method: str, request, metadata=()) -> bytes:
    with grpc.insecure_channel(server.grpc_target) as channel:
        rpc = channel.unary_unary(V2 + method)
        return rpc(request.SerializeToString(), timeout=10, metadata=metadata)


def infer_request():
    request = message_class("inference.ModelInferRequest")(model_name="scale")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.ones((1, 4), "<f4").tobytes())
    return request


def test_grpc_takes_bearer_tokens_in_metadata(server: FerryProcess, keys: Keys) -> None:
    token = (("authorization", f"Bearer {keys.token.secret}"),)
    answer = message_class("inference.ModelInferResponse").FromString(
        grpc_call(server, "ModelInfer", infer_request(), token)
    )
    assert np.frombuffer(answer.raw_output_contents[0], "<f4").tolist() == [2, 2, 2, 2]


@pytest.mark.parametrize(
    "metadata",
    [(), (("authorization", "Bearer ferry_wrong"),), (("authorization", "AWS4-HMAC-SHA256 x"),)],
)
def test_grpc_refusals_are_unauthenticated_and_serve_nothing(
    server: FerryProcess, keys: Keys, metadata
) -> None:
    before = served_requests(server, keys)
    with pytest.raises(grpc.RpcError) as caught:
        grpc_call(server, "ModelInfer", infer_request(), metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert served_requests(server, keys) == before


def test_grpc_health_stays_open(server: FerryProcess) -> None:
    live = message_class("inference.ServerLiveResponse").FromString(
        grpc_call(server, "ServerLive", message_class("inference.ServerLiveRequest")())
    )
    assert live.live


def test_a_revoked_key_is_refused_within_seconds(server: FerryProcess, keys: Keys) -> None:
    other = runtime_client(server, keys.other.entry.id, keys.other.secret)
    assert invoke(other)["predictions"]
    revoke_key(keys.path, keys.other.entry.id)

    def refused() -> bool:
        try:
            invoke(other)
        except ClientError as exc:
            return exc.response["Error"]["Code"] == "UnrecognizedClientException"
        return False

    wait_until(refused, 10, interval=0.25, message="the revoked key to be refused")


def test_secrets_never_reach_the_log(server: FerryProcess, keys: Keys) -> None:
    log = server.log()
    for secret in (keys.sigv4.secret, keys.other.secret, keys.token.secret):
        assert secret not in log


def test_the_cost_of_checking_is_measured(server: FerryProcess, keys: Keys) -> None:
    text = server.get("/monitoring/prometheus/metrics", headers=bearer(keys)).text
    checks = float(re.search(r'^ferry_auth_checks_total\{api="http"\} (\S+)$', text, re.M)[1])
    seconds = re.search(r'^ferry_auth_check_seconds_total\{api="http"\} (\S+)$', text, re.M)
    assert checks > 0 and float(seconds[1]) > 0
