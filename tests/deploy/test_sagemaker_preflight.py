"""`ferry deploy sagemaker` checks before it creates anything: the endpoint name and role
as SageMaker's API requires them, the model archive in S3, the image in ECR. A failed
check creates no Model and no EndpointConfig. The CLI as a process against moto's server
(SageMaker, S3, ECR and STS on one loopback port)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.sagemaker_moto import ferry_image, put_image, put_model_archive
from support.server import free_port

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
GOOD_URL = "s3://preflight/mlp/model.tar.gz"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        put_model_archive(url, GOOD_URL)
        yield url
    finally:
        server.stop()


def deploy(tmp_path: Path, moto_url: str, name: str, *extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
    }
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_ENDPOINT_URL", None)
    args = [
        "deploy", "sagemaker", name, "--instance-type", "ml.m5.xlarge", "--region", REGION,
        "--endpoint-url", moto_url, "--poll-seconds", "0.05", "--no-wait", *extra,
    ]  # fmt: skip
    if "--model" not in extra:
        args += ["--model", GOOD_URL]
    if "--role" not in extra:
        args += ["--role", ROLE]
    return subprocess.run(
        [sys.executable, "-m", "ferry.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def created_models(moto_url: str) -> list[str]:
    client = boto3.client(
        "sagemaker",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    configs = client.list_endpoint_configs()["EndpointConfigs"]
    models = client.list_models()["Models"]
    return [m["ModelName"] for m in models] + [c["EndpointConfigName"] for c in configs]


def test_a_missing_image_is_refused_before_anything_is_created(
    tmp_path: Path, moto_url: str
) -> None:
    before = created_models(moto_url)
    # A GPU instance type picks the -gpu tag, which no test pushes.
    refused = deploy(tmp_path, moto_url, "no-image", "--instance-type", "ml.g5.xlarge")
    assert refused.returncode == 1
    assert f"image {ferry_image('ml.g5.xlarge')}: no such " in refused.stderr
    assert "in ECR; build and push ferry's image first" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert created_models(moto_url) == before


def test_a_missing_archive_names_the_push_to_make(tmp_path: Path, moto_url: str) -> None:
    put_image(moto_url, "ferry", ferry_image().rpartition(":")[2])
    missing = "s3://preflight/mlp/typo.tar.gz"
    before = created_models(moto_url)
    refused = deploy(tmp_path, moto_url, "no-archive", "--model", missing)
    assert refused.returncode == 1
    assert f"--model {missing} does not exist: package and push it first" in refused.stderr
    no_bucket = deploy(tmp_path, moto_url, "no-bucket", "--model", "s3://nowhere/m.tar.gz")
    assert no_bucket.returncode == 1 and "bucket nowhere does not exist" in no_bucket.stderr
    assert created_models(moto_url) == before


@pytest.mark.parametrize(
    ("name", "extra", "message"),
    [
        ("bad_name", (), "endpoint name 'bad_name' is not valid for SageMaker"),
        ("x" * 64, (), "at most 63 characters"),
        (
            "short-account",
            ("--role", "arn:aws:iam::12345:role/SageMakerRole"),
            "is not an IAM role ARN as SageMaker takes it",
        ),
    ],
    ids=["underscore", "too long", "malformed role ARN"],
)
def test_names_are_checked_with_sagemakers_own_rules(
    tmp_path: Path, moto_url: str, name: str, extra: tuple[str, ...], message: str
) -> None:
    refused = deploy(tmp_path, moto_url, name, *extra)
    assert refused.returncode == 1 and message in refused.stderr


def test_with_archive_and_image_in_place_the_deploy_goes_ahead(
    tmp_path: Path, moto_url: str
) -> None:
    put_image(moto_url, "ferry", ferry_image().rpartition(":")[2])
    done = deploy(tmp_path, moto_url, "all-there")
    assert done.returncode == 0, done.stderr
    assert "creating endpoint all-there" in done.stderr
