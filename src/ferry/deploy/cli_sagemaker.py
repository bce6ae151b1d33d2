"""`ferry deploy sagemaker`, `ferry endpoints list|describe|delete` and `ferry invoke`.

AWS credentials and region come from the standard chain (environment, ~/.aws, instance
role) unless `--region` / `--profile` say otherwise; `--endpoint-url` points the calls
elsewhere (moto in the tests, or, for `ferry invoke`, a ferry server's runtime API).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ferry.deploy import sagemaker as sm

_REGION = click.option("--region", help="AWS region (default: the standard AWS chain).")
_PROFILE = click.option("--profile", help="AWS profile from ~/.aws (default: the chain's).")
_CONTROL_URL = click.option(
    "--endpoint-url",
    help="SageMaker API URL (default: AWS's for the region; e.g. a moto server).",
)


def _session(region: str | None, profile: str | None):
    try:
        return sm.boto3_session(region, profile)
    except sm.DeployError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # botocore's ProfileNotFound and kin
        raise click.ClickException(f"AWS session: {exc}") from None


@click.group()
def deploy() -> None:
    """Deploy ferry: a SageMaker endpoint, Kubernetes objects, or a KServe runtime."""


@deploy.command(name="sagemaker")
@click.argument("name")
@click.option("--model", "model_url", required=True, help="s3://.../model.tar.gz (ferry package).")
@click.option("--instance-type", default="ml.m5.xlarge", show_default=True)
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--role", required=True, help="IAM role ARN that SageMaker assumes (S3, ECR, logs).")
@click.option(
    "--image",
    help="Container image URI (default: <account>.dkr.ecr.<region>.amazonaws.com/"
    "ferry:<version>, or ferry:<version>-gpu on ml.g*/ml.p* instances, built from ferry's "
    "Dockerfile or Dockerfile.gpu and pushed there; docs/sagemaker.md).",
)
@click.option(
    "--env",
    "environment",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra container environment, e.g. SAGEMAKER_TFS_DEFAULT_MODEL_NAME=m (repeatable).",
)
@click.option(
    "--allow-code",
    "allow_code",
    multiple=True,
    metavar="MODEL[,MODEL...]",
    help="Models whose code may run (model.py; '*' also code/inference.py): sets "
    "FERRY_ALLOW_CODE on the container, ferry serve --allow_code's twin (repeatable).",
)
@click.option(
    "--allow-pickle",
    "allow_pickle",
    multiple=True,
    metavar="MODEL[,MODEL...]",
    help="Models whose pickled files may be unpickled: sets FERRY_ALLOW_PICKLE on the "
    "container, ferry serve --allow_pickle's twin (repeatable).",
)
@click.option(
    "--allow-requirements",
    is_flag=True,
    help="Let the container pip-install code/requirements.txt at start-up (runs the "
    "packages' code): sets FERRY_ALLOW_REQUIREMENTS=true, ferry serve --allow_requirements.",
)
@click.option(
    "--multi-model",
    is_flag=True,
    help="A multi-model endpoint (Mode: MultiModel): --model is an s3:// prefix of "
    "model.tar.gz archives, each loaded on its first InvokeEndpoint --target-model.",
)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for InService.")
@click.option("--poll-seconds", type=float, default=15.0, show_default=True)
@click.option("--timeout-seconds", type=float, default=3600.0, show_default=True)
@_REGION
@_PROFILE
@_CONTROL_URL
def deploy_sagemaker(
    name: str,
    model_url: str,
    instance_type: str,
    instances: int,
    role: str,
    image: str | None,
    environment: tuple[str, ...],
    allow_code: tuple[str, ...],
    allow_pickle: tuple[str, ...],
    allow_requirements: bool,
    multi_model: bool,
    wait: bool,
    poll_seconds: float,
    timeout_seconds: float,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
) -> None:
    """Create (or update) the SageMaker endpoint NAME serving --model on --instances
    instances of --instance-type, wait until it is InService, and print how to call it."""
    if not model_url.startswith(("s3://", "https://")):
        raise click.BadParameter("must be an s3:// (or https://) URL", param_hint="--model")
    env = {}
    for item in environment:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--env")
        env[key] = value
    try:
        env.update(sm.consent_environment(allow_code, allow_pickle, allow_requirements))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow-code / --allow-pickle") from None
    session = _session(region, profile)
    client = sm.sagemaker_client(session, endpoint_url)
    try:
        image = image or sm.default_image(session, endpoint_url, instance_type)
        spec = sm.DeploySpec(
            name, model_url, instance_type, instances, role, image, env, multi_model
        )
        result = sm.deploy(client, spec)
        verb = "updating" if result.updated else "creating"
        click.echo(f"{verb} endpoint {name}: model and config {result.model_name}", err=True)
        if wait:
            sm.wait_in_service(client, name, poll_seconds, timeout_seconds, on_status=_progress())
    except sm.DeployError as exc:
        raise click.ClickException(str(exc)) from None
    if wait:
        click.echo(f"endpoint {name} is InService", err=True)
    _print_usage(name, session.region_name)


def _progress():
    """A status display: one rewritten line on a terminal, a line per change otherwise."""
    tty = sys.stderr.isatty()
    last = [""]
    spinner = "|/-\\"
    count = [0]

    def show(status: str, elapsed: float) -> None:
        minutes, seconds = divmod(int(elapsed), 60)
        text = f"{status} ({minutes}m{seconds:02d}s)"
        if tty:
            count[0] += 1
            click.echo(f"\r{spinner[count[0] % 4]} {text}   ", err=True, nl=False)
            if status == sm.IN_SERVICE or status in sm.FAILED_STATES:
                click.echo("", err=True)
        elif status != last[0]:
            click.echo(text, err=True)
        last[0] = status

    return show


def _print_usage(name: str, region: str | None) -> None:
    click.echo(
        f"""Call it:
  ferry invoke {name} --data request.json
  python -c 'import boto3, json; r = boto3.client("sagemaker-runtime"{_region_arg(region)})\\
.invoke_endpoint(EndpointName="{name}", ContentType="application/json", \\
Body=json.dumps({{"instances": [[1.0, 2.0]]}})); print(r["Body"].read())'"""
    )


def _region_arg(region: str | None) -> str:
    return f', region_name="{region}"' if region else ""


@click.group()
def endpoints() -> None:
    """List, describe and delete SageMaker endpoints."""


@endpoints.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print SageMaker's answer as JSON.")
@_REGION
@_PROFILE
@_CONTROL_URL
def list_endpoints(
    as_json: bool, region: str | None, profile: str | None, endpoint_url: str | None
) -> None:
    """List the endpoints of the account and region: name, status, last change."""
    client = sm.sagemaker_client(_session(region, profile), endpoint_url)
    found = _call(sm.list_endpoints, client)
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
        return
    if not found:
        click.echo("no endpoints")
        return
    click.echo(f"{'NAME':<40} {'STATUS':<15} LAST MODIFIED")
    for e in found:
        click.echo(f"{e['EndpointName']:<40} {e['EndpointStatus']:<15} {e['LastModifiedTime']}")


@endpoints.command(name="describe")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print SageMaker's answers as JSON.")
@_REGION
@_PROFILE
@_CONTROL_URL
def describe_endpoint(
    name: str, as_json: bool, region: str | None, profile: str | None, endpoint_url: str | None
) -> None:
    """Show the endpoint NAME: status, config, and per variant the model, instance
    type and instance counts."""
    client = sm.sagemaker_client(_session(region, profile), endpoint_url)
    info = _call(sm.describe, client, name)
    if as_json:
        for document in info.values():
            document.pop("ResponseMetadata", None)
        click.echo(json.dumps(info, indent=2, default=str))
        return
    endpoint, config = info["endpoint"], info["config"]
    click.echo(f"endpoint   {endpoint['EndpointName']}")
    click.echo(f"status     {endpoint['EndpointStatus']}")
    if endpoint.get("FailureReason"):
        click.echo(f"failure    {endpoint['FailureReason']}")
    click.echo(f"config     {endpoint['EndpointConfigName']}")
    click.echo(f"created    {endpoint.get('CreationTime')}")
    live = {v["VariantName"]: v for v in endpoint.get("ProductionVariants", [])}
    for variant in config["ProductionVariants"]:
        now = live.get(variant["VariantName"], {})
        click.echo(
            f"variant    {variant['VariantName']}: model {variant['ModelName']}, "
            f"{variant.get('InstanceType', 'serverless')} x "
            f"{now.get('CurrentInstanceCount', variant.get('InitialInstanceCount'))}"
        )


@endpoints.command(name="delete")
@click.argument("name")
@click.option("--keep-config", is_flag=True, help="Delete only the endpoint.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_REGION
@_PROFILE
@_CONTROL_URL
def delete_endpoint(
    name: str,
    keep_config: bool,
    yes: bool,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
) -> None:
    """Delete the endpoint NAME (instances stop billing), its endpoint config and the
    config's models (the model data in S3 stays)."""
    if not yes:
        click.confirm(f"Delete endpoint {name}?", abort=True)
    client = sm.sagemaker_client(_session(region, profile), endpoint_url)
    for item in _call(sm.delete, client, name, keep_config):
        click.echo(f"deleted {item}")


@click.command()
@click.argument("name")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The request body (a file; - is not accepted).",
)
@click.option("--content-type", default="application/json", show_default=True)
@click.option("--accept", help="Accept header (e.g. application/jsonlines).")
@click.option("--custom-attributes", help="e.g. tfs-model-version=2")
@click.option(
    "--endpoint-url",
    help="sagemaker-runtime URL: a self-hosted ferry server (http://HOST:8501) instead "
    "of AWS. Credentials are signed with SigV4 either way (for `ferry serve --auth`).",
)
@_REGION
@_PROFILE
def invoke(
    name: str,
    data: Path,
    content_type: str,
    accept: str | None,
    custom_attributes: str | None,
    endpoint_url: str | None,
    region: str | None,
    profile: str | None,
) -> None:
    """Call the endpoint NAME with the body in --data and print the answer."""
    session = _session(region, profile)
    response = _call(
        sm.invoke,
        session,
        name,
        data.read_bytes(),
        content_type,
        accept,
        custom_attributes,
        endpoint_url,
    )
    body = response["Body"].read()
    try:
        click.echo(json.dumps(json.loads(body), indent=2))
    except ValueError:
        click.echo(body.decode("utf-8", "replace"))


def _call(function, *args: Any) -> Any:
    try:
        return function(*args)
    except sm.DeployError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, BotoCoreError | ClientError):
            raise click.ClickException(str(exc)) from None
        raise
