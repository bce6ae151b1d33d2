"""UpdateEndpoint for moto's SageMaker server, which lacks it (moto 5 answers the action
with NotImplementedError, an HTTP 500 that botocore retries for seconds).

`UpdateEndpointSupport` adds the action to moto's SageMaker responses, in the test
process where `ThreadedMotoServer` runs, with what SageMaker documents of it:

- the endpoint moves to the new config's variants and ends InService;
- an update that would change the instance type of a variant that is an Application
  Auto Scaling target, or remove such a variant, is refused (ValidationException), as
  "Update endpoints that use auto scaling" in SageMaker's guide says;
- `fail_next(reason)` makes the next update fail as SageMaker's do after the call was
  accepted: the endpoint rolls back, InService on its previous config with a
  FailureReason (DescribeEndpoint's FailureReason "if the status is InService but
  update operation fails").

Everything else (models, configs, DescribeEndpoint, the autoscaling API) is moto's own.
"""

from __future__ import annotations

from typing import Any

from moto.applicationautoscaling.models import applicationautoscaling_backends
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.responses import SageMakerResponse

_SCALED_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


class UpdateEndpointSupport:
    """Install with `install(monkeypatch)`; removed when the monkeypatch is undone."""

    def __init__(self) -> None:
        self._failure: str | None = None
        self.calls: list[dict[str, Any]] = []

    def fail_next(self, reason: str) -> None:
        self._failure = reason

    def install(self, monkeypatch) -> None:
        support = self

        def update_endpoint(response: SageMakerResponse) -> ActionResult:
            return support._update(response)

        monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_endpoint, raising=False)

    def _update(self, response: SageMakerResponse) -> ActionResult:
        backend = response.sagemaker_backend
        name = response._get_param("EndpointName")
        config_name = response._get_param("EndpointConfigName")
        self.calls.append({"EndpointName": name, "EndpointConfigName": config_name})
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            raise ValidationError(message=f"Could not find endpoint '{name}'.")
        config = backend.describe_endpoint_config(config_name)
        self._refuse_scaled_changes(response, endpoint, config)
        if self._failure is not None:
            endpoint.failure_reason, self._failure = self._failure, None
        else:
            endpoint.endpoint_config_name = config_name
            endpoint.production_variants = endpoint._process_production_variants(
                config["ProductionVariants"]
            )
            endpoint.failure_reason = None
        endpoint.endpoint_status = "InService"
        endpoint.last_modified_time = utcnow()
        return ActionResult({"EndpointArn": endpoint.arn})

    @staticmethod
    def _refuse_scaled_changes(response: SageMakerResponse, endpoint, config: dict) -> None:
        scaling = applicationautoscaling_backends[response.current_account][response.region]
        targets = scaling.targets.get(_SCALED_DIMENSION, {})
        backend = response.sagemaker_backend
        current = backend.describe_endpoint_config(endpoint.endpoint_config_name)
        before = {v["VariantName"]: v.get("InstanceType") for v in current["ProductionVariants"]}
        after = {v["VariantName"]: v.get("InstanceType") for v in config["ProductionVariants"]}
        for variant, instance_type in before.items():
            scaled = f"endpoint/{endpoint.endpoint_name}/variant/{variant}" in targets
            if scaled and after.get(variant) != instance_type:
                raise ValidationError(
                    message=f"The variant {variant} is a target of automatic scaling: "
                    "deregister it before changing its instance type or removing it."
                )
