"""`ferry deploy sagemaker`, `ferry endpoints list|describe|delete` and `ferry invoke`.

AWS credentials and region come from the standard chain (environment, ~/.aws, instance
role) unless `--region` / `--profile` say otherwise; `--endpoint_url` points the calls
elsewhere (moto in the tests, or, for `ferry invoke`, a ferry server's runtime API).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ferry.deploy import sagemaker as sm
from ferry.deploy import sagemaker_scaling as autoscaling
from ferry.deploy import sagemaker_variants as variants_spec
from ferry.deploy.sagemaker_preflight import preflight

_REGION = click.option("--region", help="AWS region (default: the standard AWS chain).")
_PROFILE = click.option("--profile", help="AWS profile from ~/.aws (default: the chain's).")
_CONTROL_URL = click.option(
    "--endpoint_url",
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
@click.option(
    "--model",
    "model_url",
    help="s3://.../model.tar.gz (ferry package), served as the one variant AllTraffic; "
    "or give --variant / --variants.",
)
@click.option(
    "--instance-type",
    default="ml.m5.xlarge",
    show_default=True,
    help="SageMaker instance type (ml.g*/ml.p*: the GPU image).",
)
@click.option(
    "--instances",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Instances behind the endpoint.",
)
@click.option("--role", help="IAM role ARN that SageMaker assumes (S3, ECR, logs); required.")
@click.option(
    "--variant",
    "variant_texts",
    multiple=True,
    metavar="name=N,model=URL[,weight=W,instances=I,instance-type=T]",
    help="A production variant (repeatable, up to 10), instead of --model: traffic is "
    "split by weight (default 1); instances and instance-type default to --instances "
    "and --instance-type.",
)
@click.option(
    "--variants",
    "variants_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON file: a list of variant objects with --variant's keys.",
)
@click.option(
    "--shift",
    metavar="VARIANT=WEIGHT[,...]",
    help="Only move traffic: set these variants' weights on the live endpoint "
    "(UpdateEndpointWeightsAndCapacities; no new config, no --model or --role).",
)
@click.option(
    "--autoscale",
    metavar="MIN:MAX|off",
    help="Application Auto Scaling of every variant between MIN and MAX instances, "
    "tracking --target-invocations; 'off' deregisters it. Unset: a re-deploy keeps the "
    "autoscaling of the variants it keeps. Needs --wait.",
)
@click.option(
    "--target-invocations",
    type=click.FloatRange(min=0, min_open=True),
    help="With --autoscale: invocations per instance per minute to hold "
    "(SageMakerVariantInvocationsPerInstance).",
)
@click.option(
    "--scale-in-cooldown",
    type=click.IntRange(min=0),
    default=autoscaling.DEFAULT_SCALE_IN_COOLDOWN_SECONDS,
    show_default=True,
    help="With --autoscale: seconds after a scale-in before the next one.",
)
@click.option(
    "--scale-out-cooldown",
    type=click.IntRange(min=0),
    default=autoscaling.DEFAULT_SCALE_OUT_COOLDOWN_SECONDS,
    show_default=True,
    help="With --autoscale: seconds after a scale-out before the next one.",
)
@click.option(
    "--keep-previous-config",
    is_flag=True,
    help="After an update, keep the previous endpoint config and its models (default: "
    "deleted once the endpoint is InService on the new one).",
)
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
@click.option(
    "--poll-seconds",
    type=float,
    default=15.0,
    show_default=True,
    help="With --wait: ask for the endpoint's status this often.",
)
@click.option(
    "--timeout-seconds",
    type=float,
    default=3600.0,
    show_default=True,
    help="With --wait: give up (the endpoint stays) after this long.",
)
@_REGION
@_PROFILE
@_CONTROL_URL
def deploy_sagemaker(
    name: str,
    model_url: str | None,
    instance_type: str,
    instances: int,
    role: str | None,
    variant_texts: tuple[str, ...],
    variants_file: Path | None,
    shift: str | None,
    autoscale: str | None,
    target_invocations: float | None,
    scale_in_cooldown: int,
    scale_out_cooldown: int,
    keep_previous_config: bool,
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
    instances of --instance-type (or the --variant(s)), wait until it is InService, and
    print how to call it. With --shift, only move traffic between its variants."""
    if shift is not None:
        if model_url or variant_texts or variants_file or autoscale:
            raise _option_error(
                "--shift", "it only moves traffic: give no --model, --variant(s) or --autoscale"
            )
        _shift(name, shift, wait, poll_seconds, timeout_seconds, region, profile, endpoint_url)
        return
    if not role:
        raise _option_error("--role", "required: the IAM role ARN that SageMaker assumes")
    if not role.startswith("arn:"):
        # A bare role name fails botocore's parameter check with a traceback otherwise.
        raise _option_error(
            "--role",
            f"{role!r} is a role name; give its ARN, arn:aws:iam::ACCOUNT:role/{role} "
            f"(aws iam get-role --role-name {role} --query Role.Arn prints it)",
        )
    variants = _variants(model_url, variant_texts, variants_file, instance_type, instances)
    scaling_spec = _autoscaling(
        autoscale, target_invocations, scale_in_cooldown, scale_out_cooldown, wait
    )
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
            name,
            variants[0].model_data_url,
            instance_type,
            instances,
            role,
            image,
            env,
            multi_model,
            () if model_url else tuple(variants),
        )
        preflight(session, spec, endpoint_url, note=lambda line: click.echo(line, err=True))
        scaling = autoscaling.scaling_client(session, endpoint_url)
        result = sm.deploy(client, spec, scaling=scaling)
        verb = "updating" if result.updated else "creating"
        what = "config" if spec.variants else "model and config"
        click.echo(f"{verb} endpoint {name}: {what} {result.config_name}", err=True)
        again = "" if scaling_spec else "; give --autoscale to scale it again"
        for variant in result.deregistered:
            click.echo(
                f"deregistered autoscaling of variant {variant} (AWS updates no scaled "
                f"variant's instance type){again}",
                err=True,
            )
        if wait:
            with _waiting(name) as show:
                described = sm.wait_in_service(
                    client, name, poll_seconds, timeout_seconds, on_status=show
                )
            for item in sm.finish_update(client, result, described, keep_previous_config):
                click.echo(f"deleted previous {item}", err=True)
            _apply_autoscaling(scaling, name, spec, autoscale, scaling_spec)
        elif result.updated and not keep_previous_config:
            click.echo(
                f"--no-wait: the previous config {result.previous_config} stays; delete it "
                "once the endpoint is InService",
                err=True,
            )
    except sm.DeployError as exc:
        raise click.ClickException(str(exc)) from None
    if wait:
        click.echo(f"endpoint {name} is InService", err=True)
    _print_usage(name, session.region_name)


def _variants(
    model_url: str | None,
    variant_texts: tuple[str, ...],
    variants_file: Path | None,
    instance_type: str,
    instances: int,
) -> list[variants_spec.VariantSpec]:
    """The variants to deploy: --model's one, or those of --variant / --variants."""
    if sum(bool(given) for given in (model_url, variant_texts, variants_file)) != 1:
        raise _option_error("--model", "give one of --model, --variant (repeatable), --variants")
    if model_url:
        if not model_url.startswith(variants_spec.MODEL_URL_SCHEMES):
            raise click.BadParameter("must be an s3:// (or https://) URL", param_hint="--model")
        return [variants_spec.VariantSpec(sm.VARIANT, model_url, 1.0, instances, instance_type)]
    try:
        if variants_file:
            found = variants_spec.load_variants_file(variants_file, instance_type, instances)
        else:
            found = [
                variants_spec.parse_variant(text, instance_type, instances)
                for text in variant_texts
            ]
        return variants_spec.check_variants(found)
    except ValueError as exc:
        raise _option_error("--variants" if variants_file else "--variant", str(exc)) from None


def _autoscaling(
    autoscale: str | None,
    target_invocations: float | None,
    scale_in_cooldown: int,
    scale_out_cooldown: int,
    wait: bool,
) -> autoscaling.AutoscalingSpec | None:
    """--autoscale's spec (None when unset or 'off'), checked before any AWS call."""
    if autoscale is not None and not wait:
        raise _option_error("--autoscale", "it acts once the endpoint is InService: needs --wait")
    if autoscale is None or autoscale == "off":
        if target_invocations is not None:
            raise _option_error("--target-invocations", "needs --autoscale MIN:MAX")
        return None
    try:
        minimum, maximum = autoscaling.parse_capacity_range(autoscale)
    except ValueError as exc:
        raise _option_error("--autoscale", str(exc)) from None
    if target_invocations is None:
        raise _option_error(
            "--autoscale", "needs --target-invocations N (invocations per instance per minute)"
        )
    return autoscaling.AutoscalingSpec(
        minimum, maximum, target_invocations, scale_in_cooldown, scale_out_cooldown
    )


def _apply_autoscaling(
    scaling,
    name: str,
    spec: sm.DeploySpec,
    autoscale: str | None,
    scaling_spec: autoscaling.AutoscalingSpec | None,
) -> None:
    """After InService: register (--autoscale MIN:MAX) or deregister ('off') every
    variant; unset leaves the autoscaling of the variants kept as it was."""
    variants = [v.name for v in spec.production_variants()]
    if scaling_spec is not None:
        sm.set_autoscaling(scaling, name, variants, scaling_spec)
        click.echo(
            f"autoscaling {', '.join(variants)}: {scaling_spec.min_capacity} to "
            f"{scaling_spec.max_capacity} instances at {scaling_spec.target_invocations:g} "
            "invocations per instance per minute",
            err=True,
        )
    elif autoscale == "off":
        for target in sm.remove_autoscaling(scaling, name, variants):
            click.echo(f"deregistered scalable target {target}", err=True)


def _shift(
    name: str,
    shift: str,
    wait: bool,
    poll_seconds: float,
    timeout_seconds: float,
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
) -> None:
    """`--shift`: new weights on the live endpoint, then (with --wait) InService."""
    try:
        weights = variants_spec.parse_shift(shift)
    except ValueError as exc:
        raise _option_error("--shift", str(exc)) from None
    client = sm.sagemaker_client(_session(region, profile), endpoint_url)
    try:
        after = sm.shift_weights(client, name, weights)
        if wait:
            with _waiting(name) as show:
                sm.wait_in_service(client, name, poll_seconds, timeout_seconds, on_status=show)
    except sm.DeployError as exc:
        raise click.ClickException(str(exc)) from None
    total = sum(after.values())
    for variant, weight in after.items():
        click.echo(f"{variant}: weight {weight:g} ({100 * weight / total:.0f}% of traffic)")


def _option_error(flag: str, message: str) -> click.ClickException:
    """One line (`Error: --flag: message`), without click's usage banner: the value is
    what was wrong, not how the command is typed."""
    return click.ClickException(f"{flag}: {message}")


@contextlib.contextmanager
def _waiting(name: str) -> Iterator[Callable[[str, float], None]]:
    """The wait for InService, as a status callback: on a terminal a spinner naming the
    status, with the elapsed time (ferry.cli_progress); elsewhere a line per change of
    status, which says as much as start and end lines and more."""
    from ferry.cli_progress import interactive, working

    terminal = interactive()
    last = [""]
    with working(f"waiting for endpoint {name} to be InService", quiet=not terminal) as step:

        def show(status: str, elapsed: float) -> None:
            if terminal:
                step.describe(f"waiting for endpoint {name} to be InService: {status}")
            elif status != last[0]:
                minutes, seconds = divmod(int(elapsed), 60)
                click.echo(f"{status} ({minutes}m{seconds:02d}s)", err=True)
            last[0] = status

        yield show


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
        weight = now.get("CurrentWeight")
        if weight is None:
            weight = variant.get("InitialVariantWeight", 1.0)
        click.echo(
            f"variant    {variant['VariantName']}: model {variant['ModelName']}, "
            f"{variant.get('InstanceType', 'serverless')} x "
            f"{now.get('CurrentInstanceCount', variant.get('InitialInstanceCount'))}, "
            f"weight {weight:g}"
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
    """Delete the endpoint NAME (instances stop billing), its variants' autoscaling, its
    endpoint config and the config's models (the model data in S3 stays)."""
    if not yes:
        click.confirm(f"Delete endpoint {name}?", abort=True)
    session = _session(region, profile)
    client = sm.sagemaker_client(session, endpoint_url)
    scaling = autoscaling.scaling_client(session, endpoint_url)
    for item in _call(sm.delete, client, name, keep_config, scaling):
        click.echo(f"deleted {item}")


@click.command()
@click.argument("name")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The request body (a file; - is not accepted).",
)
@click.option(
    "--content-type",
    default="application/json",
    show_default=True,
    help="Content-Type of the body (application/json, text/csv, ...).",
)
@click.option("--accept", help="Accept header (e.g. application/jsonlines).")
@click.option("--custom-attributes", help="e.g. tfs-model-version=2")
@click.option(
    "--endpoint_url",
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
    from ferry.cli_progress import working

    session = _session(region, profile)
    # A cold model (a multi-model endpoint's first call, a serverless start) takes seconds.
    with working(f"calling endpoint {name}"):
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
