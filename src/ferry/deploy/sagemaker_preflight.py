"""Checks before `ferry deploy sagemaker` creates anything: the names are valid, the
model archives are in S3, the image is in ECR.

Without them a typo costs a SageMaker Model and EndpointConfig, then ten minutes of
"Creating" before the endpoint fails with "could not download model data" or "image
does not exist". Each check here takes one API call and fails at once, naming what
is wrong and the fix. The name patterns are AWS's own, read from botocore's service
models, so they never drift from what the API enforces.

A check the caller's credentials may not make (S3 or ECR answering AccessDenied: the
endpoint's role may still read what the caller cannot) is reported as a note and
skipped, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

from ferry.deploy.sagemaker import DeployError, DeploySpec
from ferry.repository.location import S3Url

# <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:<tag>|@<digest>]
_ECR_IMAGE = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[^:@]+)(?::(?P<tag>[^@]+)|@(?P<digest>sha256:[0-9a-f]{64}))?"
)
_DENIED = {"AccessDenied", "AccessDeniedException", "403", "Forbidden"}
_MISSING_OBJECT = {"404", "NoSuchKey", "NotFound"}


@cache
def _pattern(service: str, shape: str) -> tuple[re.Pattern[str], int]:
    """AWS's pattern and maximum length of a string shape (botocore's service model)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model(service).shape_for(shape)
    return re.compile(model.metadata["pattern"]), int(model.metadata.get("max", 1 << 16))


def check_names(spec: DeploySpec) -> None:
    """The endpoint name and role ARN as SageMaker's API will require them."""
    pattern, longest = _pattern("sagemaker", "EndpointName")
    name = spec.endpoint_name
    if len(name) > longest or not pattern.fullmatch(name):
        raise DeployError(
            f"endpoint name {name!r} is not valid for SageMaker: letters, digits and '-' "
            f"only, starting and ending with a letter or digit, at most {longest} characters"
        )
    pattern, longest = _pattern("sagemaker", "RoleArn")
    role = spec.role_arn
    if len(role) > longest or not pattern.fullmatch(role):
        raise DeployError(
            f"--role {role!r} is not an IAM role ARN as SageMaker takes it "
            "(arn:aws:iam::<12-digit account>:role/<name>)"
        )


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _no_bucket(s3, location: S3Url) -> bool:
    """Whether the bucket itself is missing (a HEAD's 404 does not say which)."""
    import botocore.exceptions

    try:
        s3.head_bucket(Bucket=location.bucket)
    except botocore.exceptions.ClientError as exc:
        return _error_code(exc) in ("404", "NoSuchBucket", "NotFound")
    return False


def check_model_data(s3, url: str, multi_model: bool, note: Callable[[str], None]) -> None:
    """The archive (or, for a multi-model endpoint, at least one object under the prefix)
    exists in S3."""
    import botocore.exceptions

    try:
        location = S3Url.parse(url)
    except ValueError as exc:
        raise DeployError(f"--model {url}: {exc}") from None
    try:
        if multi_model:
            # SageMaker appends TargetModel to the URL as written: list it as is.
            listed = s3.list_objects_v2(Bucket=location.bucket, Prefix=location.prefix, MaxKeys=1)
            if not listed.get("Contents"):
                raise DeployError(
                    f"nothing under {url} for the multi-model endpoint: push the model "
                    f"archives there first (ferry push MODEL.tar.gz {url.rstrip('/')}/)"
                )
        else:
            s3.head_object(Bucket=location.bucket, Key=location.prefix)
    except botocore.exceptions.ClientError as exc:
        code = _error_code(exc)
        if code in _DENIED:
            note(f"preflight: cannot read {url} with these credentials ({code}); not checked")
            return
        if code == "NoSuchBucket" or (code in _MISSING_OBJECT and _no_bucket(s3, location)):
            raise DeployError(f"--model {url}: bucket {location.bucket} does not exist") from None
        if code in _MISSING_OBJECT:
            raise DeployError(
                f"--model {url} does not exist: package and push it first "
                f"(ferry package MODEL_DIR -o model.tar.gz && ferry push model.tar.gz {url})"
            ) from None
        raise DeployError(f"--model {url}: {code or exc}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise DeployError(f"--model {url}: cannot reach S3: {exc}") from None


def check_image(session, image: str, endpoint_url: str | None, note: Callable[[str], None]):
    """An ECR image exists in its repository (other registries: SageMaker refuses them
    unless set up for private registries, which it then checks itself)."""
    import botocore.exceptions

    match = _ECR_IMAGE.fullmatch(image)
    if match is None:
        note(f"preflight: {image} is not an ECR image URI; not checked")
        return
    image_id = (
        {"imageDigest": match["digest"]}
        if match["digest"]
        else {"imageTag": match["tag"] or "latest"}
    )
    ecr = session.client("ecr", region_name=match["region"], endpoint_url=endpoint_url)
    try:
        ecr.describe_images(
            registryId=match["account"],
            repositoryName=match["repository"],
            imageIds=[image_id],
        )
    except botocore.exceptions.ClientError as exc:
        code = _error_code(exc)
        if code in _DENIED:
            note(f"preflight: cannot read {image} with these credentials ({code}); not checked")
            return
        if code in ("ImageNotFoundException", "RepositoryNotFoundException"):
            what = "repository" if code.startswith("Repository") else "image"
            raise DeployError(
                f"image {image}: no such {what} in ECR; build and push ferry's image first "
                "(docs/sagemaker.md), or pass --image"
            ) from None
        raise DeployError(f"image {image}: {code or exc}") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise DeployError(f"image {image}: cannot reach ECR: {exc}") from None


def preflight(
    session,
    spec: DeploySpec,
    endpoint_url: str | None = None,
    note: Callable[[str], None] = lambda message: None,
) -> None:
    """Raise DeployError, before anything is created, when the endpoint name or role is
    invalid, a variant's model data is missing from S3, or the image is missing from
    ECR. `note` receives the checks that were skipped and why."""
    check_names(spec)
    s3 = session.client("s3", endpoint_url=endpoint_url)
    for url in sorted({variant.model_data_url for variant in spec.production_variants()}):
        check_model_data(s3, url, spec.multi_model, note)
    check_image(session, spec.image, endpoint_url, note)
