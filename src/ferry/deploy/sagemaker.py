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
from typing import Any

from ferry.consent import CODE_ENV, PICKLE_ENV, model_names
from ferry.deploy import sagemaker_scaling as autoscaling
from ferry.deploy.sagemaker_variants import VariantSpec
from ferry.distribution import install_hint, installed_version
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
    # Production variants (A/B, canary): each its own model, weight and instances. Empty:
    # one variant, AllTraffic, of `model_data_url` on `instance_count` x `instance_type`.
    variants: tuple[VariantSpec, ...] = ()

    def production_variants(self) -> tuple[VariantSpec, ...]:
        if self.variants:
            return self.variants
        default = VariantSpec(
            VARIANT, self.model_data_url, 1.0, self.instance_count, self.instance_type
        )
        return (default,)


@dataclass(frozen=True)
class DeployResult:
    endpoint_name: str
    model_name: str
    config_name: str
    updated: bool  # True: an existing endpoint moved to the new config
    model_names: tuple[str, ...] = ()  # one per variant, in the config's order
    previous_config: str | None = None  # the config an update moved the endpoint from
    # Variants whose autoscaling an update removed first (AWS refuses to update a scaled
    # variant's instance type, or to remove a scaled variant).
    deregistered: tuple[str, ...] = ()


def boto3_session(region: str | None = None, profile: str | None = None):
    """A boto3 session (credentials and region from the standard AWS chain unless
    given); a clear error when boto3 is missing."""
    try:
        import boto3
    except ImportError:  # pragma: no cover - the aws extra is not installed
        raise DeployError(f"this command needs boto3: {install_hint('aws')}") from None
    return boto3.session.Session(region_name=region, profile_name=profile)


def sagemaker_client(session, endpoint_url: str | None = None):
    return session.client("sagemaker", endpoint_url=endpoint_url)


def ferry_version() -> str:
    """The image tag's version: the installed distribution's (the source tree's when
    run uninstalled, as ferry deploy kubernetes's default image)."""
    return installed_version()


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


def resource_name(endpoint_name: str, now: datetime | None = None, suffix: str = "") -> str:
    """`<endpoint>-<YYYYMMDD-HHMMSS><suffix>`, the endpoint's part cut so that the whole
    fits SageMaker's 63 characters."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S") + suffix
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


def deploy(client, spec: DeploySpec, now: datetime | None = None, scaling=None) -> DeployResult:
    """CreateModel (one per variant), CreateEndpointConfig, then CreateEndpoint or
    UpdateEndpoint. When a call fails, the models and config this deploy made are
    deleted again, so a failed deploy leaves no orphans. With `scaling` (an
    application-autoscaling client), an update first deregisters the autoscaling of the
    variants it removes or moves to another instance type, which AWS requires.

    An update is finished by `finish_update` once the endpoint is InService again."""
    from botocore.exceptions import BotoCoreError, ClientError

    name = resource_name(spec.endpoint_name, now)
    variants = spec.production_variants()
    # One variant of --model keeps the model's name equal to the config's.
    models = (
        [resource_name(spec.endpoint_name, now, f"-{i}") for i in range(1, len(variants) + 1)]
        if spec.variants
        else [name]
    )
    made: list[tuple[str, str]] = []
    deregistered: list[str] = []
    try:
        for variant, model in zip(variants, models, strict=True):
            client.create_model(
                ModelName=model,
                ExecutionRoleArn=spec.role_arn,
                PrimaryContainer=_container(spec, variant.model_data_url),
            )
            made.append(("model", model))
        client.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": variant.name,
                    "ModelName": model,
                    "InstanceType": variant.instance_type,
                    "InitialInstanceCount": variant.instance_count,
                    "InitialVariantWeight": variant.weight,
                }
                for variant, model in zip(variants, models, strict=True)
            ],
        )
        made.append(("endpoint config", name))
        existing = endpoint_status(client, spec.endpoint_name)
        if existing is None:
            client.create_endpoint(EndpointName=spec.endpoint_name, EndpointConfigName=name)
        else:
            if scaling is not None:
                deregistered = _unscale_for_update(client, scaling, existing, variants)
            client.update_endpoint(EndpointName=spec.endpoint_name, EndpointConfigName=name)
    except (ClientError, BotoCoreError) as exc:
        raise DeployError(_client_error(exc) + _discard(client, made)) from None
    return DeployResult(
        spec.endpoint_name,
        models[0],
        name,
        updated=existing is not None,
        model_names=tuple(models),
        previous_config=existing["EndpointConfigName"] if existing else None,
        deregistered=tuple(deregistered),
    )


def _unscale_for_update(
    client, scaling, existing: dict[str, Any], variants: tuple[VariantSpec, ...]
) -> list[str]:
    """Deregister the autoscaling of the endpoint's variants that the new config drops
    or gives another instance type; returns their names."""
    current = client.describe_endpoint_config(EndpointConfigName=existing["EndpointConfigName"])
    before = {v["VariantName"]: v.get("InstanceType") for v in current["ProductionVariants"]}
    after = {v.name: v.instance_type for v in variants}
    changed = [v for v, kind in before.items() if after.get(v, object()) != kind]
    scaled = _scaled(scaling, existing["EndpointName"], changed)
    for variant in changed:
        if variant in scaled:
            autoscaling.deregister(scaling, existing["EndpointName"], variant)
    return [v for v in changed if v in scaled]


def _scaled(scaling, endpoint_name: str, variant_names: list[str]) -> set[str]:
    """The scaled variants among `variant_names`; none when the caller may not read
    Application Auto Scaling (AWS then refuses what would need it, with its reason)."""
    from botocore.exceptions import ClientError

    try:
        return autoscaling.registered(scaling, endpoint_name, variant_names)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "AccessDeniedException":
            return set()
        raise


def _discard(client, made: list[tuple[str, str]]) -> str:
    """Remove what a failed deploy made, newest first (the config before its models).
    A failure here must not hide the error that led to it, so it is returned as text to
    add to that error ('' when everything went), naming what is left to delete."""
    from botocore.exceptions import BotoCoreError, ClientError

    left = []
    for kind, name in reversed(made):
        try:
            if kind == "model":
                client.delete_model(ModelName=name)
            else:
                client.delete_endpoint_config(EndpointConfigName=name)
        except (ClientError, BotoCoreError):
            left.append(f"{kind} {name}")
    return f" (left behind, delete by hand: {', '.join(left)})" if left else ""


def finish_update(
    client, result: DeployResult, described: dict[str, Any], keep_previous: bool = False
) -> list[str]:
    """Settle an update once the endpoint is InService (`described`, from
    `wait_in_service`). SageMaker rolls a failed update back: InService on the previous
    config, with a FailureReason; then the new config and models are deleted and
    DeployError raised. A completed update deletes the previous config and its models
    (unless `keep_previous`): only now nothing serves from them. Returns what was deleted."""
    if not result.updated:
        return []
    if described.get("EndpointConfigName") != result.config_name:
        reason = described.get("FailureReason") or "no reason given"
        made = [("model", m) for m in result.model_names or (result.model_name,)]
        left = _discard(client, [*made, ("endpoint config", result.config_name)])
        raise DeployError(
            f"the update of {result.endpoint_name} failed and SageMaker kept "
            f"{described.get('EndpointConfigName')}: {reason}; deleted the new "
            f"config {result.config_name} and its models{left}"
        )
    previous = result.previous_config
    if keep_previous or not previous or previous == result.config_name:
        return []
    from botocore.exceptions import ClientError

    try:
        config = client.describe_endpoint_config(EndpointConfigName=previous)
        return _delete_config(client, config, keep_models=set(result.model_names))
    except ClientError as exc:
        raise DeployError(
            f"endpoint {result.endpoint_name} is InService on {result.config_name}, but "
            f"deleting the previous config {previous} failed: {_client_error(exc)}"
        ) from None


def _delete_config(client, config: dict[str, Any], keep_models: set[str]) -> list[str]:
    """Delete an endpoint config, then its models (but `keep_models`); ClientError
    propagates. Returns what was deleted, as `kind name`."""
    client.delete_endpoint_config(EndpointConfigName=config["EndpointConfigName"])
    deleted = [f"endpoint config {config['EndpointConfigName']}"]
    for variant in config["ProductionVariants"]:
        if variant["ModelName"] not in keep_models:
            client.delete_model(ModelName=variant["ModelName"])
            deleted.append(f"model {variant['ModelName']}")
    return deleted


def set_autoscaling(
    scaling, endpoint_name: str, variant_names: list[str], spec: autoscaling.AutoscalingSpec
) -> None:
    """Register (or update) every variant's scalable target and policy; the endpoint
    must be InService, since AWS checks that the variant exists."""
    from botocore.exceptions import ClientError

    try:
        for variant in variant_names:
            autoscaling.register(scaling, endpoint_name, variant, spec)
    except ClientError as exc:
        raise DeployError(f"autoscaling {endpoint_name}: {_client_error(exc)}") from None


def remove_autoscaling(scaling, endpoint_name: str, variant_names: list[str]) -> list[str]:
    """Deregister the variants that are scaled; returns their resource ids."""
    from botocore.exceptions import ClientError

    try:
        scaled = _scaled(scaling, endpoint_name, variant_names)
        removed = []
        for variant in variant_names:
            if variant in scaled:
                autoscaling.deregister(scaling, endpoint_name, variant)
                removed.append(autoscaling.resource_id(endpoint_name, variant))
        return removed
    except ClientError as exc:
        raise DeployError(f"autoscaling {endpoint_name}: {_client_error(exc)}") from None


def shift_weights(client, name: str, weights: dict[str, float]) -> dict[str, float]:
    """UpdateEndpointWeightsAndCapacities: move traffic between the endpoint's variants
    without a new config. Variants not named keep their weight; instance counts are
    left alone (autoscaling may own them). Returns every variant's weight after."""
    from botocore.exceptions import ClientError

    described = endpoint_status(client, name)
    if described is None:
        raise DeployError(f"no endpoint {name}")
    current = {
        v["VariantName"]: float(v.get("CurrentWeight", v.get("DesiredWeight", 0.0)) or 0.0)
        for v in described.get("ProductionVariants", [])
    }
    for variant in weights:
        if variant not in current:
            raise DeployError(
                f"endpoint {name} has no variant {variant} (its variants: {', '.join(current)})"
            )
    after = {**current, **weights}
    if not any(after.values()):
        raise DeployError(f"every variant of {name} would have weight 0: no traffic")
    try:
        client.update_endpoint_weights_and_capacities(
            EndpointName=name,
            DesiredWeightsAndCapacities=[
                {"VariantName": v, "DesiredWeight": w} for v, w in weights.items()
            ],
        )
    except ClientError as exc:
        raise DeployError(_client_error(exc)) from None
    return after


def _container(spec: DeploySpec, model_data_url: str) -> dict[str, Any]:
    """The model's container definition; a multi-model one also tells ferry (and the
    SageMaker TensorFlow Serving container) so through SAGEMAKER_MULTI_MODEL."""
    environment = {**CONTAINER_ENVIRONMENT, **spec.environment}
    container: dict[str, Any] = {"Image": spec.image, "ModelDataUrl": model_data_url}
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


def delete(client, name: str, keep_config: bool = False, scaling=None) -> list[str]:
    """Delete the endpoint and (unless `keep_config`) its config and the config's
    models; with `scaling`, first deregister its variants' autoscaling. Returns what
    was deleted, as `kind name`."""
    from botocore.exceptions import ClientError

    info = describe(client, name)
    config = info["config"]
    deleted = []
    if scaling is not None:
        variants = [v["VariantName"] for v in config["ProductionVariants"]]
        deleted += [f"scalable target {r}" for r in remove_autoscaling(scaling, name, variants)]
    try:
        client.delete_endpoint(EndpointName=name)
        deleted.append(f"endpoint {name}")
        if not keep_config:
            deleted += _delete_config(client, config, keep_models=set())
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
