"""Application Auto Scaling for SageMaker endpoint variants: the calls behind
`ferry deploy sagemaker --autoscale MIN:MAX --target-invocations N`.

Each variant is its own scalable target (`sagemaker:variant:DesiredInstanceCount` of
`endpoint/NAME/variant/VARIANT`) with one target-tracking policy on SageMaker's
predefined `SageMakerVariantInvocationsPerInstance` (invocations per instance per
minute). Registering and putting a policy are both upserts in AWS, so a re-deploy with
new bounds or a new target simply calls them again.

Calls raise botocore's ClientError; `ferry.deploy.sagemaker` turns them into DeployError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SERVICE_NAMESPACE = "sagemaker"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"
POLICY_TYPE = "TargetTrackingScaling"
# One policy per variant, ferry's; other policies on the target are left alone on
# deploy and deleted with the target on deregistration (AWS deletes them too).
POLICY_NAME = "ferry-invocations-per-instance"
# Scale out after 5 minutes, in after 10: a new instance takes minutes to come up, so
# scaling out should not wait long, while scaling in slowly keeps a burst that returns
# from paying twice for start-up (AWS's own SageMaker examples use the same pair).
DEFAULT_SCALE_OUT_COOLDOWN_SECONDS = 300
DEFAULT_SCALE_IN_COOLDOWN_SECONDS = 600


@dataclass(frozen=True)
class AutoscalingSpec:
    """Bounds of a variant's instance count and the load per instance to hold."""

    min_capacity: int
    max_capacity: int
    target_invocations: float  # per instance per minute
    scale_in_cooldown: int = DEFAULT_SCALE_IN_COOLDOWN_SECONDS
    scale_out_cooldown: int = DEFAULT_SCALE_OUT_COOLDOWN_SECONDS

    def policy_configuration(self) -> dict[str, Any]:
        return {
            "TargetValue": float(self.target_invocations),
            "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
            "ScaleInCooldown": self.scale_in_cooldown,
            "ScaleOutCooldown": self.scale_out_cooldown,
        }


def parse_capacity_range(text: str) -> tuple[int, int]:
    """`MIN:MAX`, whole numbers with 1 <= MIN <= MAX (a variant keeps one instance)."""
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError
        minimum, maximum = int(low), int(high)
    except ValueError:
        raise ValueError(f"{text!r} is not MIN:MAX (whole numbers, e.g. 1:4)") from None
    if minimum < 1:
        raise ValueError(f"MIN is {minimum}; a variant keeps at least 1 instance")
    if minimum > maximum:
        raise ValueError(f"MIN {minimum} is greater than MAX {maximum}")
    return minimum, maximum


def scaling_client(session, endpoint_url: str | None = None):
    return session.client("application-autoscaling", endpoint_url=endpoint_url)


def resource_id(endpoint_name: str, variant_name: str) -> str:
    return f"endpoint/{endpoint_name}/variant/{variant_name}"


def register(scaling, endpoint_name: str, variant_name: str, spec: AutoscalingSpec) -> None:
    """Register (or update) the variant's scalable target and ferry's policy on it."""
    target = resource_id(endpoint_name, variant_name)
    scaling.register_scalable_target(
        ServiceNamespace=SERVICE_NAMESPACE,
        ResourceId=target,
        ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=spec.min_capacity,
        MaxCapacity=spec.max_capacity,
    )
    scaling.put_scaling_policy(
        PolicyName=POLICY_NAME,
        ServiceNamespace=SERVICE_NAMESPACE,
        ResourceId=target,
        ScalableDimension=SCALABLE_DIMENSION,
        PolicyType=POLICY_TYPE,
        TargetTrackingScalingPolicyConfiguration=spec.policy_configuration(),
    )


def registered(scaling, endpoint_name: str, variant_names: list[str]) -> set[str]:
    """The variants among `variant_names` that are scalable targets now."""
    if not variant_names:
        return set()
    ids = {resource_id(endpoint_name, v): v for v in variant_names}
    # At most MAX_VARIANTS ids, so one page (AWS pages at 50) holds every answer.
    answer = scaling.describe_scalable_targets(
        ServiceNamespace=SERVICE_NAMESPACE,
        ResourceIds=list(ids),
        ScalableDimension=SCALABLE_DIMENSION,
    )
    return {ids[t["ResourceId"]] for t in answer["ScalableTargets"] if t["ResourceId"] in ids}


def deregister(scaling, endpoint_name: str, variant_name: str) -> None:
    """Delete every scaling policy of the variant's target, then the target. AWS deletes
    the policies with the target by itself; deleting them first says so explicitly and
    leaves nothing behind on services that do not (moto)."""
    target = resource_id(endpoint_name, variant_name)
    policies = scaling.describe_scaling_policies(
        ServiceNamespace=SERVICE_NAMESPACE, ResourceId=target, ScalableDimension=SCALABLE_DIMENSION
    )["ScalingPolicies"]
    for policy in policies:
        if policy["ResourceId"] != target:  # a filter may match by prefix
            continue
        scaling.delete_scaling_policy(
            PolicyName=policy["PolicyName"],
            ServiceNamespace=SERVICE_NAMESPACE,
            ResourceId=target,
            ScalableDimension=SCALABLE_DIMENSION,
        )
    scaling.deregister_scalable_target(
        ServiceNamespace=SERVICE_NAMESPACE, ResourceId=target, ScalableDimension=SCALABLE_DIMENSION
    )
