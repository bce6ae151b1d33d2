"""`ferry deploy sagemaker` at scale: Application Auto Scaling (`--autoscale`,
`--target-invocations`), production variants with weights (`--variant`, `--variants`),
weight shifts (`--shift`), updates that leave no orphans, and deregistration on
`ferry endpoints delete`.

Everything runs through the CLI against moto's server on loopback (SageMaker and
Application Auto Scaling on one port). moto lacks UpdateEndpoint, so
support/moto_update_endpoint.py adds it with SageMaker's documented behaviour (new
variants, InService; rollback with a FailureReason; no instance-type change of a scaled
variant)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.server import free_port

from ferry.cli import main

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")
from support.moto_update_endpoint import UpdateEndpointSupport  # noqa: E402 - needs moto

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BLUE = "s3://models-bucket/blue/model.tar.gz"
GREEN = "s3://models-bucket/green/model.tar.gz"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"


@pytest.fixture(scope="module")
def updates() -> Iterator[UpdateEndpointSupport]:
    support = UpdateEndpointSupport()
    with pytest.MonkeyPatch.context() as patch:
        support.install(patch)
        yield support


@pytest.fixture(scope="module")
def moto_url(updates: UpdateEndpointSupport) -> Iterator[str]:
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        _put_archives(url)
        yield url
    finally:
        server.stop()


def _put_archives(moto_url: str) -> None:
    """The archives the variants name, so that deploy's preflight finds them in S3."""
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name=REGION,
        # Module scope: before the autouse fixture sets the fake credentials.
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="models-bucket")
    for key in ("blue/model.tar.gz", "green/model.tar.gz", "mme-a/m.tar.gz", "mme-b/m.tar.gz"):
        s3.put_object(Bucket="models-bucket", Key=key, Body=b"archive")


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, and no ~/.aws of the machine running the tests."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


def ferry(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


_last_deploy: dict[str, int] = {}


def deploy(name: str, moto_url: str, *extra: str) -> tuple[int, str, str]:
    """`ferry deploy sagemaker NAME` against moto. A deploy names its model and config by
    the second, as on AWS, so a second deploy of NAME waits for the clock's next second
    (under a second)."""
    if _last_deploy.get(name) == int(time.time()):
        time.sleep(1.0 - time.time() % 1.0 + 0.01)
    try:
        return ferry(
            "deploy", "sagemaker", name, "--role", ROLE, "--image", "img:1", "--region", REGION,
            "--endpoint-url", moto_url, "--poll-seconds", "0.05", "--timeout-seconds", "10", *extra,
        )  # fmt: skip
    finally:
        # The names were stamped at some second before now.
        _last_deploy[name] = int(time.time())


def sagemaker(moto_url: str):
    return boto3.client("sagemaker", endpoint_url=moto_url, region_name=REGION)


def scaling(moto_url: str):
    return boto3.client("application-autoscaling", endpoint_url=moto_url, region_name=REGION)


def targets(moto_url: str, endpoint: str) -> list[dict]:
    found = scaling(moto_url).describe_scalable_targets(ServiceNamespace="sagemaker")
    prefix = f"endpoint/{endpoint}/variant/"
    return [t for t in found["ScalableTargets"] if t["ResourceId"].startswith(prefix)]


def policies(moto_url: str, endpoint: str) -> list[dict]:
    found = scaling(moto_url).describe_scaling_policies(ServiceNamespace="sagemaker")
    prefix = f"endpoint/{endpoint}/variant/"
    return [p for p in found["ScalingPolicies"] if p["ResourceId"].startswith(prefix)]


def owned(moto_url: str, endpoint: str) -> tuple[set[str], set[str]]:
    """(configs, models) named for the endpoint: `<endpoint>-<YYYYMMDD>-...`."""
    client = sagemaker(moto_url)
    prefix = f"{endpoint}-2"
    configs = {
        c["EndpointConfigName"]
        for c in client.list_endpoint_configs()["EndpointConfigs"]
        if c["EndpointConfigName"].startswith(prefix)
    }
    models = {
        m["ModelName"] for m in client.list_models()["Models"] if m["ModelName"].startswith(prefix)
    }
    return configs, models


def live_config(moto_url: str, endpoint: str) -> dict:
    client = sagemaker(moto_url)
    name = client.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    return client.describe_endpoint_config(EndpointConfigName=name)


def policy_of(moto_url: str, endpoint: str, variant: str) -> dict:
    (policy,) = [
        p
        for p in policies(moto_url, endpoint)
        if p["ResourceId"] == f"endpoint/{endpoint}/variant/{variant}"
    ]
    return policy


def test_autoscale_registers_a_target_and_a_target_tracking_policy(moto_url: str) -> None:
    code, _, err = deploy(
        "scaled", moto_url, "--model", BLUE, "--autoscale", "1:4", "--target-invocations", "70"
    )
    assert code == 0, err
    assert "autoscaling AllTraffic: 1 to 4 instances at 70 invocations" in err
    (target,) = targets(moto_url, "scaled")
    assert target["ServiceNamespace"] == "sagemaker"
    assert target["ResourceId"] == "endpoint/scaled/variant/AllTraffic"
    assert target["ScalableDimension"] == DIMENSION
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    policy = policy_of(moto_url, "scaled", "AllTraffic")
    assert policy["PolicyName"] == "ferry-invocations-per-instance"
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["ScalableDimension"] == DIMENSION
    assert policy["TargetTrackingScalingPolicyConfiguration"] == {
        "TargetValue": 70.0,
        "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
        },
        "ScaleInCooldown": 600,
        "ScaleOutCooldown": 300,
    }


def test_a_redeploy_updates_the_autoscaling_and_retires_the_previous_config(
    moto_url: str,
) -> None:
    code, _, err = deploy(
        "rescaled", moto_url, "--model", BLUE, "--autoscale", "1:2", "--target-invocations", "50"
    )
    assert code == 0, err
    first_configs, first_models = owned(moto_url, "rescaled")
    code, _, err = deploy(
        "rescaled", moto_url, "--model", GREEN, "--autoscale", "2:6",
        "--target-invocations", "120", "--scale-in-cooldown", "900", "--scale-out-cooldown", "60",
    )  # fmt: skip
    assert code == 0, err
    assert "updating endpoint rescaled" in err
    (target,) = targets(moto_url, "rescaled")
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 6)
    (policy,) = policies(moto_url, "rescaled")
    assert policy["TargetTrackingScalingPolicyConfiguration"] == {
        "TargetValue": 120.0,
        "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
        },
        "ScaleInCooldown": 900,
        "ScaleOutCooldown": 60,
    }
    # The previous config and model went once the endpoint was InService on the new one.
    configs, models = owned(moto_url, "rescaled")
    config = live_config(moto_url, "rescaled")
    assert configs == {config["EndpointConfigName"]} and not configs & first_configs
    assert models == {config["ProductionVariants"][0]["ModelName"]} and not models & first_models
    (old,) = first_configs
    assert f"deleted previous endpoint config {old}" in err
    model = sagemaker(moto_url).describe_model(ModelName=next(iter(models)))
    assert model["PrimaryContainer"]["ModelDataUrl"] == GREEN


def test_variants_get_their_models_weights_and_instances(moto_url: str) -> None:
    code, _, err = deploy(
        "canary", moto_url, "--instance-type", "ml.m5.large",
        "--variant", f"name=blue,model={BLUE},weight=90",
        "--variant", f"name=green,model={GREEN},weight=10,instances=2,instance-type=ml.c5.large",
    )  # fmt: skip
    assert code == 0, err
    config = live_config(moto_url, "canary")
    variants = config["ProductionVariants"]
    assert [
        (v["VariantName"], v["InstanceType"], v["InitialInstanceCount"], v["InitialVariantWeight"])
        for v in variants
    ] == [("blue", "ml.m5.large", 1, 90.0), ("green", "ml.c5.large", 2, 10.0)]
    client = sagemaker(moto_url)
    urls = [
        client.describe_model(ModelName=v["ModelName"])["PrimaryContainer"]["ModelDataUrl"]
        for v in variants
    ]
    assert urls == [BLUE, GREEN]
    code, out, _ = ferry(
        "endpoints", "describe", "canary", "--region", REGION, "--endpoint-url", moto_url
    )
    assert code == 0
    assert "blue: model" in out and "ml.m5.large x 1, weight 90" in out
    assert "ml.c5.large x 2, weight 10" in out


def test_a_variants_file_with_multi_model_and_autoscaling(moto_url: str, tmp_path: Path) -> None:
    """--variants FILE, each variant a multi-model endpoint's S3 prefix, each scaled."""
    spec = tmp_path / "variants.json"
    spec.write_text(
        json.dumps(
            [
                {"name": "a", "model": "s3://models-bucket/mme-a/", "weight": 3},
                {"name": "b", "model": "s3://models-bucket/mme-b/", "weight": 1, "instances": 2},
            ]
        )
    )
    code, _, err = deploy(
        "mme-ab", moto_url, "--variants", str(spec), "--multi-model",
        "--autoscale", "2:3", "--target-invocations", "200",
    )  # fmt: skip
    assert code == 0, err
    variants = live_config(moto_url, "mme-ab")["ProductionVariants"]
    assert [(v["VariantName"], v["InitialVariantWeight"]) for v in variants] == [
        ("a", 3.0),
        ("b", 1.0),
    ]
    client = sagemaker(moto_url)
    for variant, prefix in zip(variants, ("mme-a/", "mme-b/"), strict=True):
        container = client.describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]
        assert container["Mode"] == "MultiModel"
        assert container["ModelDataUrl"] == f"s3://models-bucket/{prefix}"
        assert container["Environment"]["SAGEMAKER_MULTI_MODEL"] == "true"
    bounds = [
        (t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets(moto_url, "mme-ab")
    ]
    assert sorted(bounds) == [
        ("endpoint/mme-ab/variant/a", 2, 3),
        ("endpoint/mme-ab/variant/b", 2, 3),
    ]
    assert len(policies(moto_url, "mme-ab")) == 2


def test_shift_moves_traffic_without_a_new_config(moto_url: str) -> None:
    code, _, err = deploy(
        "shifty", moto_url,
        "--variant", f"name=blue,model={BLUE},weight=90",
        "--variant", f"name=green,model={GREEN},weight=10",
    )  # fmt: skip
    assert code == 0, err
    config = live_config(moto_url, "shifty")["EndpointConfigName"]
    code, out, err = ferry(
        "deploy", "sagemaker", "shifty", "--shift", "blue=50,green=50", "--region", REGION,
        "--endpoint-url", moto_url, "--poll-seconds", "0.05",
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines() == [
        "blue: weight 50 (50% of traffic)",
        "green: weight 50 (50% of traffic)",
    ]
    endpoint = sagemaker(moto_url).describe_endpoint(EndpointName="shifty")
    assert endpoint["EndpointConfigName"] == config
    weights = {v["VariantName"]: v["CurrentWeight"] for v in endpoint["ProductionVariants"]}
    assert weights == {"blue": 50.0, "green": 50.0}
    # A variant not named keeps its weight.
    code, out, err = ferry(
        "deploy", "sagemaker", "shifty", "--shift", "green=100", "--region", REGION,
        "--endpoint-url", moto_url, "--no-wait",
    )  # fmt: skip
    assert code == 0, err
    assert "blue: weight 50 (33% of traffic)" in out


def test_an_update_to_variants_leaves_no_orphans(
    moto_url: str, updates: UpdateEndpointSupport
) -> None:
    code, _, err = deploy("rollout", moto_url, "--model", BLUE)
    assert code == 0, err
    code, _, err = deploy(
        "rollout", moto_url,
        "--variant", f"name=blue,model={BLUE},weight=90",
        "--variant", f"name=green,model={GREEN},weight=10",
    )  # fmt: skip
    assert code == 0, err
    config = live_config(moto_url, "rollout")
    assert [v["VariantName"] for v in config["ProductionVariants"]] == ["blue", "green"]
    assert owned(moto_url, "rollout") == (
        {config["EndpointConfigName"]},
        {v["ModelName"] for v in config["ProductionVariants"]},
    )
    before = owned(moto_url, "rollout")

    # Refused at once (a variant on an instance type moto's SageMaker does not know):
    # the models this deploy made are deleted again.
    code, _, err = deploy(
        "rollout", moto_url, "--variant", f"name=blue,model={BLUE},instance-type=ml.nope.huge"
    )
    assert code != 0 and "ml.nope.huge" in err
    assert owned(moto_url, "rollout") == before

    # Accepted, then rolled back by SageMaker: the new config and models are deleted.
    updates.fail_next("The primary container for production variant blue did not pass ping")
    code, _, err = deploy("rollout", moto_url, "--model", GREEN)
    assert code != 0
    assert "did not pass ping" in err and "deleted the new config" in err
    assert owned(moto_url, "rollout") == before
    assert live_config(moto_url, "rollout")["EndpointConfigName"] == config["EndpointConfigName"]


def test_without_waiting_the_previous_config_stays_and_is_named(moto_url: str) -> None:
    code, _, err = deploy("unhurried", moto_url, "--model", BLUE)
    assert code == 0, err
    (first,) = owned(moto_url, "unhurried")[0]
    code, _, err = deploy("unhurried", moto_url, "--model", GREEN, "--no-wait")
    assert code == 0, err
    assert f"the previous config {first} stays" in err
    configs, models = owned(moto_url, "unhurried")
    assert first in configs and len(configs) == 2 and len(models) == 2


def test_an_instance_type_change_deregisters_the_variant_first(moto_url: str) -> None:
    """AWS refuses to change a scaled variant's instance type: ferry deregisters it
    before UpdateEndpoint (and registers again when --autoscale is given)."""
    code, _, err = deploy(
        "resized", moto_url, "--model", BLUE, "--autoscale", "1:3", "--target-invocations", "70"
    )
    assert code == 0, err
    # Same instance type, no --autoscale: the autoscaling stays.
    code, _, err = deploy("resized", moto_url, "--model", GREEN)
    assert code == 0, err
    assert [t["MinCapacity"] for t in targets(moto_url, "resized")] == [1]
    code, _, err = deploy("resized", moto_url, "--model", GREEN, "--instance-type", "ml.c5.xlarge")
    assert code == 0, err
    assert "deregistered autoscaling of variant AllTraffic" in err
    assert targets(moto_url, "resized") == [] and policies(moto_url, "resized") == []
    assert live_config(moto_url, "resized")["ProductionVariants"][0]["InstanceType"] == (
        "ml.c5.xlarge"
    )
    code, _, err = deploy(
        "resized", moto_url, "--model", GREEN, "--instance-type", "ml.c5.large",
        "--autoscale", "2:5", "--target-invocations", "70",
    )  # fmt: skip
    assert code == 0, err
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets(moto_url, "resized")] == [(2, 5)]
    code, _, err = deploy(
        "resized",
        moto_url,
        "--model",
        GREEN,
        "--instance-type",
        "ml.c5.large",
        "--autoscale",
        "off",
    )
    assert code == 0, err
    assert "deregistered scalable target endpoint/resized/variant/AllTraffic" in err
    assert targets(moto_url, "resized") == [] and policies(moto_url, "resized") == []


def test_delete_deregisters_the_autoscaling(moto_url: str) -> None:
    code, _, err = deploy(
        "doomed", moto_url,
        "--variant", f"name=blue,model={BLUE}", "--variant", f"name=green,model={GREEN}",
        "--autoscale", "1:2", "--target-invocations", "10",
    )  # fmt: skip
    assert code == 0, err
    assert len(targets(moto_url, "doomed")) == 2 and len(policies(moto_url, "doomed")) == 2
    code, out, err = ferry(
        "endpoints", "delete", "doomed", "--yes", "--region", REGION, "--endpoint-url", moto_url
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:3] == [
        "deleted scalable target endpoint/doomed/variant/blue",
        "deleted scalable target endpoint/doomed/variant/green",
        "deleted endpoint doomed",
    ]
    assert targets(moto_url, "doomed") == [] and policies(moto_url, "doomed") == []
    assert owned(moto_url, "doomed") == (set(), set())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--model", BLUE, "--autoscale", "4:2", "--target-invocations", "5"),
         "--autoscale: MIN 4 is greater than MAX 2"),
        (("--model", BLUE, "--autoscale", "0:2", "--target-invocations", "5"),
         "--autoscale: MIN is 0; a variant keeps at least 1 instance"),
        (("--model", BLUE, "--autoscale", "two", "--target-invocations", "5"),
         "--autoscale: 'two' is not MIN:MAX"),
        (("--model", BLUE, "--autoscale", "1:2"), "--autoscale: needs --target-invocations"),
        (("--model", BLUE, "--autoscale", "1:2", "--target-invocations", "5", "--no-wait"),
         "--autoscale: it acts once the endpoint is InService: needs --wait"),
        (("--model", BLUE, "--target-invocations", "5"),
         "--target-invocations: needs --autoscale MIN:MAX"),
        (("--variant", f"name=blue,model={BLUE},weight=lots"),
         "--variant: variant blue: weight 'lots' is not a number"),
        (("--variant", f"name=blue,model={BLUE},weight=-1"),
         "--variant: variant blue: weight '-1' must be a number >= 0"),
        (("--variant", f"name=blue,model={BLUE},weight=0"),
         "--variant: every variant has weight 0"),
        (("--variant", f"name=blue,model={BLUE}", "--variant", f"name=blue,model={GREEN}"),
         "--variant: variant blue is given twice"),
        (("--variant", f"name=blue,model={BLUE},colour=red"), "--variant: unknown key 'colour'"),
        (("--variant", "name=blue,model=models/blue"),
         "--variant: variant blue: model must be an s3:// (or https://) URL"),
        (("--variant", f"name=b_1,model={BLUE}"), "--variant: variant name 'b_1' must be"),
        (("--model", BLUE, "--variant", f"name=blue,model={BLUE}"),
         "--model: give one of --model, --variant"),
        (("--shift", "blue=50", "--model", BLUE), "--shift: it only moves traffic"),
    ],
)  # fmt: skip
def test_bad_values_get_one_clear_line(moto_url: str, extra: tuple[str, ...], message: str) -> None:
    code, _, err = ferry(
        "deploy", "sagemaker", "never", "--role", ROLE, "--image", "img:1", "--region", REGION,
        "--endpoint-url", moto_url, *extra,
    )  # fmt: skip
    assert code != 0
    (line,) = err.strip().splitlines()
    assert message in line, err
    assert owned(moto_url, "never") == (set(), set())


def test_shift_errors_name_the_variants_there_are(moto_url: str) -> None:
    code, _, err = deploy(
        "two-tone", moto_url,
        "--variant", f"name=blue,model={BLUE}", "--variant", f"name=green,model={GREEN}",
    )  # fmt: skip
    assert code == 0, err
    for shift, message in [
        ("purple=10", "endpoint two-tone has no variant purple (its variants: blue, green)"),
        ("blue=half", "--shift: variant blue: weight 'half' is not a number"),
        ("blue", "--shift: 'blue' is not VARIANT=WEIGHT"),
        ("blue=0,green=0", "every variant of two-tone would have weight 0"),
    ]:
        code, _, err = ferry(
            "deploy", "sagemaker", "two-tone", "--shift", shift, "--region", REGION,
            "--endpoint-url", moto_url,
        )  # fmt: skip
        assert code != 0
        (line,) = err.strip().splitlines()
        assert message in line, err
    endpoint = sagemaker(moto_url).describe_endpoint(EndpointName="two-tone")
    assert {v["CurrentWeight"] for v in endpoint["ProductionVariants"]} == {1.0}
