"""What `ferry deploy sagemaker`'s preflight (ferry.deploy.sagemaker_preflight) looks for,
put into moto's server: the model archives in S3 and the image in ECR."""

from __future__ import annotations

import contextlib
import json

from ferry.deploy.sagemaker import image_tag
from ferry.repository.location import S3Url

ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"
# A Docker image manifest (schema 2) with no layers: all ECR needs to register a tag.
_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "size": 2,
        "digest": "sha256:" + "0" * 64,
    },
    "layers": [],
}


def _client(service: str, moto_url: str):
    import boto3  # here: the deploy tests skip themselves without boto3

    return boto3.client(
        service,
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def ferry_image(instance_type: str = "ml.m5.xlarge") -> str:
    """The image `deploy` picks by default in moto's account."""
    return f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/ferry:{image_tag(instance_type)}"


def put_model_archive(moto_url: str, url: str) -> None:
    location = S3Url.parse(url)
    s3 = _client("s3", moto_url)
    buckets = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if location.bucket not in buckets:
        s3.create_bucket(Bucket=location.bucket)
    s3.put_object(Bucket=location.bucket, Key=location.prefix, Body=b"a model archive")


def put_image(moto_url: str, repository: str, tag: str) -> None:
    ecr = _client("ecr", moto_url)
    names = {r["repositoryName"] for r in ecr.describe_repositories().get("repositories", [])}
    if repository not in names:
        ecr.create_repository(repositoryName=repository)
    # An earlier test may have pushed it already.
    with contextlib.suppress(ecr.exceptions.ImageAlreadyExistsException):
        ecr.put_image(repositoryName=repository, imageManifest=json.dumps(_MANIFEST), imageTag=tag)


def seed_deploy_targets(moto_url: str, model_urls: list[str], instance_type: str) -> None:
    """The archives at `model_urls` and ferry's default image for `instance_type`."""
    for url in model_urls:
        put_model_archive(moto_url, url)
    put_image(moto_url, "ferry", image_tag(instance_type))
