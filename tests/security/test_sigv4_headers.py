"""SigV4 details (issue 11, Build 7), against a real `ferry serve --auth`.

A signature must cover `host`, and a header that steers the request (`x-amz-*`,
`x-amzn-sagemaker-*`) must be signed when sent: an attacker who adds
`X-Amzn-SageMaker-Target-Model` or `-Custom-Attributes` to a captured signed request
must not reroute it. Requests are signed by botocore itself; boto3's own clients, which
sign every header they send, keep working.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
import requests
from support.models import scale_model, write_model
from support.server import FerryProcess

from ferry.auth.keys import SIGV4, TOKEN, add_key

boto3 = pytest.importorskip("boto3")
from botocore.auth import SigV4Auth  # noqa: E402 - after the importorskip
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

from ferry.auth.sigv4 import sign_headers  # noqa: E402 - needs botocore

REGION = "us-west-2"
BODY = json.dumps([[1, 2, 3, 4]]).encode()
DOUBLED = {"predictions": [[2.0, 4.0, 6.0, 8.0]]}
TRIPLED = {"predictions": [[3.0, 6.0, 9.0, 12.0]]}
HOST_NOT_SIGNED = "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
UNSIGNED = "There were headers present in the request which were not signed: "


class Server:
    def __init__(self, process: FerryProcess, key_id: str, secret: str, token: str) -> None:
        self.process = process
        self.key_id = key_id
        self.secret = secret
        self.token = token
        self.url = f"{process.url}/endpoints/scale/invocations"

    def served(self) -> float:
        """ferry's request counter, summed: it moves only when a protocol ran a request."""
        text = self.process.get(
            "/monitoring/prometheus/metrics", headers={"Authorization": f"Bearer {self.token}"}
        ).text
        return sum(float(m) for m in re.findall(r"^ferry_requests_total\{.*\} (\S+)$", text, re.M))

    def client(self, session_token: str | None = None):
        return boto3.client(
            "sagemaker-runtime",
            endpoint_url=self.process.url,
            region_name=REGION,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            aws_session_token=session_token,
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("models")
    write_model(scale_model(2.0), root / "scale", 1)
    write_model(scale_model(3.0), root / "triple", 1)
    keys = tmp_path_factory.mktemp("auth") / "keys.json"
    sigv4 = add_key(keys, SIGV4, "boto3")
    token = add_key(keys, TOKEN, "metrics")
    process = FerryProcess(
        [str(root), "--auth", str(keys), "--file_system_poll_wait_seconds", "0"],
        tmp_path_factory.mktemp("logs") / "ferry.log",
    )
    try:
        process.wait_ready()
        yield Server(process, sigv4.entry.id, sigv4.secret, token.secret)
    finally:
        process.stop()


def captured(server: Server, **headers: str) -> dict[str, str]:
    """The headers of a request to endpoint `scale` as botocore signs it."""
    return sign_headers(
        "POST",
        server.url,
        BODY,
        server.key_id,
        server.secret,
        REGION,
        {"Content-Type": "application/json", **headers},
    )


class _WithoutHost(SigV4Auth):
    """botocore's signer, except that it leaves `host` out of SignedHeaders."""

    def headers_to_sign(self, request: AWSRequest):
        signed = super().headers_to_sign(request)
        del signed["host"]
        return signed


def assert_refused(server: Server, response: requests.Response, error_type: str, message: str):
    assert response.status_code == 403, response.text
    assert response.headers["x-amzn-ErrorType"] == error_type
    assert response.json() == {"message": message}


def test_a_signature_that_leaves_out_host_is_refused(server: Server) -> None:
    request = AWSRequest(
        method="POST", url=server.url, data=BODY, headers={"Content-Type": "application/json"}
    )
    _WithoutHost(Credentials(server.key_id, server.secret), "sagemaker", REGION).add_auth(request)
    assert "host" not in request.headers["Authorization"].split("SignedHeaders=")[1].split(",")[0]
    before = server.served()

    response = requests.post(server.url, data=BODY, headers=dict(request.headers), timeout=10)

    assert_refused(server, response, "InvalidSignatureException", HOST_NOT_SIGNED)
    assert server.served() == before


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Amzn-SageMaker-Target-Model", "triple"),
        ("X-Amzn-SageMaker-Custom-Attributes", "tfs-model-name=triple"),
        ("X-Amzn-SageMaker-Target-Variant", "canary"),
        ("X-Amz-Security-Token", "stolen"),
    ],
)
def test_an_unsigned_steering_header_added_to_a_signed_request_is_refused(
    server: Server, header: str, value: str
) -> None:
    headers = captured(server)
    assert requests.post(server.url, data=BODY, headers=headers, timeout=10).json() == DOUBLED
    before = server.served()

    response = requests.post(server.url, data=BODY, headers={**headers, header: value}, timeout=10)

    assert_refused(server, response, "AccessDeniedException", UNSIGNED + header.lower())
    assert server.served() == before


def test_every_unsigned_header_is_named(server: Server) -> None:
    extra = {"X-Amz-Meta-A": "1", "X-Amzn-SageMaker-Target-Model": "triple"}

    response = requests.post(
        server.url, data=BODY, headers={**captured(server), **extra}, timeout=10
    )

    assert_refused(
        server,
        response,
        "AccessDeniedException",
        UNSIGNED + "x-amz-meta-a, x-amzn-sagemaker-target-model",
    )


def test_the_same_headers_signed_are_honoured(server: Server) -> None:
    headers = captured(server, **{"X-Amzn-SageMaker-Target-Model": "triple"})

    response = requests.post(server.url, data=BODY, headers=headers, timeout=10)

    assert response.status_code == 200, response.text
    assert response.json() == TRIPLED


def test_boto3_invoke_endpoint_still_works_with_every_option(server: Server) -> None:
    client = server.client()
    plain = client.invoke_endpoint(EndpointName="scale", Body=BODY, ContentType="application/json")
    routed = client.invoke_endpoint(
        EndpointName="scale",
        Body=BODY,
        ContentType="application/json",
        Accept="application/json",
        TargetModel="triple.tar.gz",
        CustomAttributes="tfs-model-name=triple",
    )
    # Temporary credentials add X-Amz-Security-Token, which botocore signs as well.
    session = server.client(session_token="a-session-token").invoke_endpoint(
        EndpointName="scale", Body=BODY, ContentType="application/json"
    )

    assert json.loads(plain["Body"].read()) == DOUBLED
    assert json.loads(routed["Body"].read()) == TRIPLED
    assert json.loads(session["Body"].read()) == DOUBLED


def test_a_trace_header_from_a_load_balancer_is_not_a_steering_header(server: Server) -> None:
    # botocore never signs X-Amzn-Trace-Id, and load balancers add it on the way.
    headers = {**captured(server), "X-Amzn-Trace-Id": "Root=1-5759e988-bd862e3fe1be46a994272793"}

    response = requests.post(server.url, data=BODY, headers=headers, timeout=10)

    assert response.status_code == 200, response.text
