"""SageMaker real-time endpoints for ferry models: the control-plane calls behind
`ferry deploy sagemaker`, `ferry endpoints` and `ferry invoke`.

A deploy creates a new Model and EndpointConfig, both named `<endpoint>-<UTC time>`,
then creates the endpoint or, when it exists, updates it to the new config. New names
per deploy are what lets UpdateEndpoint roll the fleet over while the old one keeps
serving (SageMaker refuses to change a config in place). The container is ferry's image
(`Dockerfile`), run with FERRY_SAGEMAKER=true, so it serves the contract on port 8080.

Every call takes a boto3 client made by `sagemaker_client`, so tests point them at
moto's server and users at any region or endpoint URL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ferry.consent import CODE_ENV, PICKLE_ENV, model_names
from ferry.protocols.sagemaker_requirements import REQUIREMENTS_ENV
from ferry.repository.sagemaker_catalog import MULTI_MODEL_ENV

VARIANT = "AllTraffic"
# The status an endpoint settles in; anything else but Failed is still moving.
IN_SERVICE = "InService"
FAILED_STATES = frozenset({"Failed", "OutOfService", "UpdateRollbackFailed"})
# What deploy writes into the container's environment.
CONTAINER_ENVIRONMENT = {"FERRY_SAGEMAKER": "true"}


def consent_environment(
    allow_code: Iterable[str], allow_pickle: Iterable[str], allow_requirements: bool = False
) -> dict[str, str]:
    """The container environment that gives the operator's consent to run models' code
    or unpickle their files (`ferry serve --sagemaker` reads it; see ferry.consent), and
    to pip-install code/requirements.txt. Raises ValueError for a malformed model name."""
    env = {REQUIREMENTS_ENV: "true"} if allow_requirements else {}
    for variable, values in ((CODE_ENV, allow_code), (PICKLE_ENV, allow_pickle)):
        names = model_names(values)
        if names:
            env[variable] = ",".join(sorted(names))
    return env


class DeployError(Exception):
    """A control-plane call failed or the endpoint did not reach InService."""


@dataclass(frozen=True)
class DeploySpec:
    """Everything `ferry deploy sagemaker` needs to create or update one endpoint."""

    endpoint_name: str
    model_data_url: str
    instance_type: str
    instance_count: int
    role_arn: str
    image: str
    environment: dict[str, str] = field(default_factory=dict)
    # A multi-model endpoint: `model_data_url` is an S3 prefix of model archives, the
    # container runs in `Mode: MultiModel` and loads them on demand (TargetModel).
    multi_model: bool = False


@dataclass(frozen=True)
class DeployResult:
    endpoint_name: str
    model_name: str
    config_name: str
    updated: bool  # True: an existing endpoint moved to the new config


def boto3_session(region: str | None = None, profile: str | None = None):
    """A boto3 session (credentials and region from the standard AWS chain unless
    given); a clear error when boto3 is missing."""
    try:
        import boto3
    except ImportError:  # pragma: no cover - the aws extra is not installed
        raise DeployError("this command needs boto3: pip install 'ferry[aws]'") from None
    return boto3.session.Session(region_name=region, profile_name=profile)


def sagemaker_client(session, endpoint_url: str | None = None):
    return session.client("sagemaker", endpoint_url=endpoint_url)


def ferry_version() -> str:
    try:
        return version("ferry")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "latest"


# SageMaker's GPU instance families (ml.g4dn, ml.g5, ml.g6, ml.p3, ml.p4d, ml.p5, ...).
_GPU_INSTANCE_PREFIXES = ("ml.g", "ml.p")


def image_tag(instance_type: str = "") -> str:
    """The tag of ferry's image for an instance type: `<version>` (the default
    Dockerfile: TensorFlow CPU + ONNX), `<version>-gpu` (Dockerfile.gpu) on GPU types."""
    gpu = instance_type.startswith(_GPU_INSTANCE_PREFIXES)
    return f"{ferry_version()}-gpu" if gpu else ferry_version()


def default_image(session, endpoint_url: str | None = None, instance_type: str = "") -> str:
    """ferry's image in the caller's own ECR (`<account>.dkr.ecr.<region>.amazonaws.com/
    ferry:<tag>`, see `image_tag`): AWS publishes no ferry image, so the build-and-push
    step of docs/sagemaker.md puts it there."""
    sts = session.client("sts", endpoint_url=endpoint_url)
    account = sts.get_caller_identity()["Account"]
    region = session.region_name or "us-east-1"
    return f"{account}.dkr.ecr.{region}.amazonaws.com/ferry:{image_tag(instance_type)}"


def resource_name(endpoint_name: str, now: datetime | None = None) -> str:
    """`<endpoint>-<YYYYMMDD-HHMMSS>`, cut to SageMaker's 63 characters."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{endpoint_name[: 63 - len(stamp) - 1]}-{stamp}"


def endpoint_status(client, name: str) -> dict[str, Any] | None:
    """DescribeEndpoint, or None when there is no such endpoint."""
    from botocore.exceptions import ClientError

    try:
        return client.describe_endpoint(EndpointName=name)
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", "")
        if exc.response.get("Error", {}).get("Code") in (
            "ValidationException",
            "ResourceNotFound",
        ) and ("Could not find" in message or "not found" in message.lower()):
            return None
        raise


def deploy(client, spec: DeploySpec, now: datetime | None = None) -> DeployResult:
    """CreateModel, CreateEndpointConfig, then CreateEndpoint or UpdateEndpoint."""
    from botocore.exceptions import ClientError

    name = resource_name(spec.endpoint_name, now)
    try:
        client.create_model(
            ModelName=name,
            ExecutionRoleArn=spec.role_arn,
            PrimaryContainer=_container(spec),
        )
        client.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": VARIANT,
                    "ModelName": name,
                    "InstanceType": spec.instance_type,
                    "InitialInstanceCount": spec.instance_count,
                    "InitialVariantWeight": 1.0,
                }
            ],
        )
        existing = endpoint_status(client, spec.endpoint_name)
        if existing is None:
            client.create_endpoint(EndpointName=spec.endpoint_name, EndpointConfigName=name)
        else:
            client.update_endpoint(EndpointName=spec.endpoint_name, EndpointConfigName=name)
    except ClientError as exc:
        raise DeployError(_client_error(exc)) from None
    return DeployResult(spec.endpoint_name, name, name, updated=existing is not None)


def _container(spec: DeploySpec) -> dict[str, Any]:
    """The model's container definition; a multi-model one also tells ferry (and the
    SageMaker TensorFlow Serving container) so through SAGEMAKER_MULTI_MODEL."""
    environment = {**CONTAINER_ENVIRONMENT, **spec.environment}
    container: dict[str, Any] = {"Image": spec.image, "ModelDataUrl": spec.model_data_url}
    if spec.multi_model:
        container["Mode"] = "MultiModel"
        environment[MULTI_MODEL_ENV] = "true"
    container["Environment"] = environment
    return container


def wait_in_service(
    client,
    name: str,
    poll_seconds: float = 15.0,
    timeout_seconds: float = 3600.0,
    on_status: Callable[[str, float], None] = lambda status, elapsed: None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll DescribeEndpoint until InService (returned), Failed (DeployError with
    SageMaker's FailureReason) or the timeout; `on_status` sees every poll."""
    started = time.monotonic()
    while True:
        described = endpoint_status(client, name)
        if described is None:
            raise DeployError(f"endpoint {name} does not exist (deleted while waiting?)")
        status = described["EndpointStatus"]
        elapsed = time.monotonic() - started
        on_status(status, elapsed)
        if status == IN_SERVICE:
            return described
        if status in FAILED_STATES:
            reason = described.get("FailureReason", "no reason given")
            raise DeployError(f"endpoint {name} is {status}: {reason}")
        if elapsed > timeout_seconds:
            raise DeployError(
                f"endpoint {name} is still {status} after {timeout_seconds:.0f} s; "
                f"follow it with `ferry endpoints describe {name}`"
            )
        sleep(poll_seconds)


def describe(client, name: str) -> dict[str, Any]:
    """The endpoint with its config's variants (instance type and count)."""
    from botocore.exceptions import ClientError

    described = endpoint_status(client, name)
    if described is None:
        raise DeployError(f"no endpoint {name}")
    try:
        config = client.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    except ClientError as exc:
        raise DeployError(_client_error(exc)) from None
    return {"endpoint": described, "config": config}


def list_endpoints(client) -> list[dict[str, Any]]:
    endpoints: list[dict[str, Any]] = []
    for page in client.get_paginator("list_endpoints").paginate():
        endpoints.extend(page["Endpoints"])
    return endpoints


def delete(client, name: str, keep_config: bool = False) -> list[str]:
    """Delete the endpoint and (unless `keep_config`) its config and the config's
    models; returns what was deleted, as `kind name`."""
    from botocore.exceptions import ClientError

    info = describe(client, name)
    config = info["config"]
    deleted = []
    try:
        client.delete_endpoint(EndpointName=name)
        deleted.append(f"endpoint {name}")
        if not keep_config:
            client.delete_endpoint_config(EndpointConfigName=config["EndpointConfigName"])
            deleted.append(f"endpoint config {config['EndpointConfigName']}")
            for variant in config["ProductionVariants"]:
                client.delete_model(ModelName=variant["ModelName"])
                deleted.append(f"model {variant['ModelName']}")
    except ClientError as exc:
        raise DeployError(_client_error(exc)) from None
    return deleted


def invoke(
    session,
    name: str,
    body: bytes,
    content_type: str,
    accept: str | None = None,
    custom_attributes: str | None = None,
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """InvokeEndpoint through `sagemaker-runtime` (AWS, or a ferry server's runtime API
    when `endpoint_url` points at one)."""
    from botocore.exceptions import ClientError

    runtime = session.client(
        "sagemaker-runtime",
        endpoint_url=endpoint_url,
        # A self-hosted server has a region only for the signature's sake.
        region_name=session.region_name or "us-east-1",
    )
    extra = {k: v for k, v in (("Accept", accept), ("CustomAttributes", custom_attributes)) if v}
    try:
        return runtime.invoke_endpoint(
            EndpointName=name, Body=body, ContentType=content_type, **extra
        )
    except ClientError as exc:
        raise DeployError(_client_error(exc)) from None


def _client_error(exc: Exception) -> str:
    response = getattr(exc, "response", {}) or {}
    error = response.get("Error", {})
    code, message = error.get("Code", "Error"), error.get("Message", str(exc))
    original = response.get("OriginalMessage")
    return f"{code}: {message}" + (f"\n{original}" if original and original not in message else "")
