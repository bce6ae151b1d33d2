"""SageMaker's runtime API (`POST /endpoints/{name}/invocations`) served by ferry, called
with the real boto3 `sagemaker-runtime` client, unchanged but for `endpoint_url`: the
answers, headers and errors are those botocore expects from AWS, so its modeled
exceptions (`client.exceptions.ModelError`, ...) are raised with their fields."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from support.models import scale_model, write_model
from support.server import FerryProcess

boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerryProcess]:
    root = tmp_path_factory.mktemp("models")
    write_model(scale_model(2.0), root / "scale_two", 1)
    write_model(scale_model(3.0), root / "scale_two", 2)
    write_model(scale_model(10.0), root / "ten", 1)
    (root / "empty").mkdir()  # a model with no version yet: not ready
    process = FerryProcess(
        [str(root), "--file_system_poll_wait_seconds", "0"],
        tmp_path_factory.mktemp("logs") / "ferry.log",
    )
    try:
        process.wait_ready()
        process.wait_version("scale_two", 2)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(server: FerryProcess):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.url,
        region_name="us-west-2",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-checked-without-auth",
    )


def invoke(client, endpoint: str = "scale_two", body: object = ([1, 2, 3, 4],), **kwargs):
    payload = body if isinstance(body, bytes) else json.dumps(list(body)).encode()
    kwargs.setdefault("ContentType", "application/json")
    return client.invoke_endpoint(EndpointName=endpoint, Body=payload, **kwargs)


def test_invoke_endpoint_answers_with_the_newest_version_and_the_variant(client) -> None:
    response = invoke(client)
    assert json.loads(response["Body"].read()) == {"predictions": [[3.0, 6.0, 9.0, 12.0]]}
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["ResponseMetadata"]["RequestId"]
    assert "CustomAttributes" not in response  # ferry's container returns none


def test_a_hyphenated_endpoint_name_reaches_the_model_with_underscores(client) -> None:
    # SageMaker endpoint names cannot hold "_".
    response = invoke(client, "scale-two")
    assert json.loads(response["Body"].read())["predictions"] == [[3.0, 6.0, 9.0, 12.0]]


def test_payloads_are_read_as_the_container_reads_them(client) -> None:
    csv = invoke(client, body=b"1,1,1,1\n2,2,2,2\n", ContentType="text/csv")
    assert json.loads(csv["Body"].read())["predictions"] == [[3.0] * 4, [6.0] * 4]
    lines = invoke(
        client,
        body=b"[1,1,1,1]\n[0,0,0,1]\n",
        ContentType="application/jsonlines",
        Accept="application/jsonlines",
    )
    assert lines["ContentType"] == "application/jsonlines"
    assert json.loads(lines["Body"].read())["predictions"] == [[3.0] * 4, [0, 0, 0, 3.0]]


def test_custom_attributes_pick_the_version_and_target_model_picks_the_model(client) -> None:
    pinned = invoke(client, CustomAttributes="tfs-model-version=2,other=x")
    assert json.loads(pinned["Body"].read())["predictions"] == [[3.0, 6.0, 9.0, 12.0]]
    # Version 1 is not served (latest-1 policy): the container's 404, wrapped.
    with pytest.raises(client.exceptions.ModelError) as caught:
        invoke(client, CustomAttributes="tfs-model-version=1")
    assert caught.value.response["OriginalStatusCode"] == 404
    other = invoke(client, "scale_two", TargetModel="models/ten.tar.gz")
    assert json.loads(other["Body"].read())["predictions"] == [[10.0, 20.0, 30.0, 40.0]]


def test_an_unknown_endpoint_is_a_validation_error(client) -> None:
    with pytest.raises(client.exceptions.ValidationError) as caught:
        invoke(client, "no-such-endpoint")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "Endpoint no-such-endpoint not found" in caught.value.response["Error"]["Message"]


def test_an_unknown_variant_or_target_model_is_a_validation_error(client) -> None:
    with pytest.raises(client.exceptions.ValidationError):
        invoke(client, TargetVariant="blue")
    with pytest.raises(client.exceptions.ValidationError):
        invoke(client, TargetModel="absent.tar.gz")


def test_a_payload_the_model_rejects_is_a_model_error_with_the_original_answer(client) -> None:
    with pytest.raises(client.exceptions.ModelError) as caught:
        invoke(client, body=([1, 2],))
    response = caught.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 400
    assert "expects [-1, 4]" in json.loads(response["OriginalMessage"])["error"]
    assert response["Error"]["Message"].startswith("Received client error (400) from primary")


def test_an_unsupported_content_type_is_a_model_error_415(client) -> None:
    with pytest.raises(client.exceptions.ModelError) as caught:
        invoke(client, body=b"\x89PNG", ContentType="image/png")
    assert caught.value.response["OriginalStatusCode"] == 415


def test_a_model_without_a_loaded_version_is_not_ready(client) -> None:
    with pytest.raises(client.exceptions.ModelNotReadyException) as caught:
        invoke(client, "empty")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


def test_too_long_custom_attributes_are_a_validation_error(client) -> None:
    with pytest.raises(client.exceptions.ValidationError):
        invoke(client, CustomAttributes="x" * 1025)


def test_runtime_requests_are_counted_under_their_own_api(server: FerryProcess, client) -> None:
    invoke(client)
    metrics = server.get("/monitoring/prometheus/metrics").text
    assert 'api="sagemaker_runtime",model="scale_two",outcome="OK"' in metrics


def test_other_paths_under_endpoints_are_unknown_operations(server: FerryProcess) -> None:
    response = server.post("/endpoints/scale_two/async-invocations", data=b"{}")
    assert response.status_code == 404
    assert response.headers["x-amzn-ErrorType"] == "UnknownOperationException"


def test_the_runtime_api_needs_no_sagemaker_container_mode(server: FerryProcess, client) -> None:
    # This server runs without --sagemaker: /invocations is absent, the runtime API is not.
    assert server.post("/invocations", data=b"[1,2,3,4]").status_code == 404
    assert invoke(client)["ResponseMetadata"]["HTTPStatusCode"] == 200
