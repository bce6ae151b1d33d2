"""`ferry deploy kubernetes` and `ferry deploy kserve`: render ferry's Kubernetes objects
(ferry.deploy.kubernetes) as YAML, as a Helm chart, or apply them with kubectl."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import click

from ferry import __version__
from ferry.deploy import kubernetes as k8s

DEFAULT_IMAGE = f"ferry:{__version__}"
_IMAGE = click.option(
    "--image",
    default=DEFAULT_IMAGE,
    show_default=True,
    help="ferry's image (built from its Dockerfile and pushed to your registry).",
)
_OUTPUT = click.option(
    "--output",
    type=click.Path(path_type=Path),
    help="Write the YAML to this file (default: standard output).",
)
_APPLY = click.option(
    "--apply", is_flag=True, help="Pipe the objects to `kubectl apply -f -` (kubectl on PATH)."
)


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Objects as one multi-document YAML stream, keys in the order written."""
    import yaml

    return "".join(
        "---\n" + yaml.safe_dump(item, sort_keys=False, default_flow_style=False)
        for item in objects
    )


def write_helm_chart(folder: Path, name: str, objects: list[dict[str, Any]]) -> list[Path]:
    """A Helm chart for the rendered objects: its values hold them (so `helm install
    --set`/`-f` override any field) and its one template writes them back out. The objects
    stay ferry's single source; the chart is a way to install and upgrade them."""
    import yaml

    templates = folder / "templates"
    templates.mkdir(parents=True, exist_ok=True)
    chart = {
        "apiVersion": "v2",
        "name": name,
        "description": "ferry model server (rendered by `ferry deploy kubernetes`)",
        "type": "application",
        "version": __version__,
        "appVersion": __version__,
    }
    written = [folder / "Chart.yaml", folder / "values.yaml", templates / "objects.yaml"]
    written[0].write_text(yaml.safe_dump(chart, sort_keys=False))
    written[1].write_text(yaml.safe_dump({"objects": objects}, sort_keys=False))
    written[2].write_text(
        "{{- range .Values.objects }}\n---\n{{ toYaml . }}\n{{- end }}\n",
    )
    return written


def _emit(objects: list[dict[str, Any]], output: Path | None, apply: bool) -> None:
    text = to_yaml(objects)
    if apply:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise click.ClickException("--apply needs kubectl on PATH")
        done = subprocess.run([kubectl, "apply", "-f", "-"], input=text, text=True, check=False)
        if done.returncode != 0:
            raise click.ClickException(f"kubectl apply exited {done.returncode}")
        return
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {len(objects)} objects to {output}")


def _replica_range(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    low, sep, high = value.partition(":")
    if not sep or not low.isdigit() or not high.isdigit():
        raise click.BadParameter("MIN:MAX, e.g. 2:10")
    return int(low), int(high)


@click.command(name="kubernetes")
@click.argument("name")
@click.option(
    "--model",
    required=True,
    help="s3://bucket/prefix (a model root, or one model's folder of versions), or a path "
    "inside --model-volume.",
)
@_IMAGE
@click.option("--namespace", default="default", show_default=True, help="Namespace of the objects.")
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Pods of the Deployment (without --autoscale).",
)
@click.option(
    "--autoscale",
    callback=_replica_range,
    metavar="MIN:MAX",
    help="A HorizontalPodAutoscaler on ferry_requests_in_flight per pod (needs a custom "
    "metrics adapter; docs/kubernetes.md).",
)
@click.option(
    "--target-in-flight",
    type=click.FloatRange(min=0, min_open=True),
    default=8.0,
    show_default=True,
    help="Autoscaling target: requests in flight per pod, on average.",
)
@click.option("--cpu", default="1", show_default=True, help="CPU request per pod.")
@click.option("--memory", default="2Gi", show_default=True, help="Memory request and limit.")
@click.option(
    "--gpus",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="nvidia.com/gpu each pod requests (use a GPU --image).",
)
@click.option("--model-volume", default="", help="A PersistentVolumeClaim with the models.")
@click.option("--s3-event-queue-url", default="", help="SQS queue of the bucket's S3 events.")
@click.option("--aws-secret", default="", help="A Secret with AWS_* variables (envFrom).")
@click.option(
    "--drain-seconds",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="ferry's drain on SIGTERM (--unload_drain_timeout_seconds); the termination grace "
    "period covers it.",
)
@click.option(
    "--service-monitor/--no-service-monitor",
    default=True,
    show_default=True,
    help="A Prometheus Operator ServiceMonitor for ferry's metrics.",
)
@click.option(
    "--serve-arg",
    "serve_args",
    multiple=True,
    help="Extra `ferry serve` argument, e.g. --serve-arg=--enable_batching (repeatable).",
)
@click.option(
    "--helm-chart",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write a Helm chart of these objects into this folder instead.",
)
@_OUTPUT
@_APPLY
def deploy_kubernetes(
    name: str,
    model: str,
    image: str,
    namespace: str,
    replicas: int,
    autoscale: tuple[int, int] | None,
    target_in_flight: float,
    cpu: str,
    memory: str,
    gpus: int,
    model_volume: str,
    s3_event_queue_url: str,
    aws_secret: str,
    drain_seconds: float,
    service_monitor: bool,
    serve_args: tuple[str, ...],
    helm_chart: Path | None,
    output: Path | None,
    apply: bool,
) -> None:
    """Render a ferry Deployment NAME with its Service, PodDisruptionBudget, autoscaler
    and ServiceMonitor (docs/kubernetes.md)."""
    try:
        options = k8s.KubernetesOptions(
            name=name,
            model=model,
            image=image,
            namespace=namespace,
            replicas=replicas,
            autoscale=autoscale,
            target_in_flight=target_in_flight,
            cpu=cpu,
            memory=memory,
            gpus=gpus,
            model_volume=model_volume,
            s3_event_queue_url=s3_event_queue_url,
            aws_secret=aws_secret,
            drain_seconds=drain_seconds,
            service_monitor=service_monitor,
            serve_args=serve_args,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    objects = k8s.render(options)
    if helm_chart is not None:
        for path in write_helm_chart(helm_chart, name, objects):
            click.echo(f"wrote {path}")
        return
    _emit(objects, output, apply)


@click.command(name="kserve")
@click.argument("name")
@click.option(
    "--storage-uri",
    required=True,
    help="Where KServe's storage initializer fetches the model from (a folder of versions).",
)
@click.option(
    "--model-format",
    type=click.Choice(sorted({f for f, _ in k8s.KSERVE_FORMATS})),
    required=True,
    help="The InferenceService's model format, which picks this serving runtime.",
)
@click.option(
    "--protocol",
    type=click.Choice(["v1", "v2"]),
    default="v2",
    show_default=True,
    help="KServe protocol: v1 (TF Serving's REST API) or v2 (Open Inference Protocol).",
)
@click.option("--grpc", is_flag=True, help="Expose the gRPC port (h2c) instead of REST.")
@click.option("--namespace", default="default", show_default=True, help="Namespace of the objects.")
@_IMAGE
@click.option(
    "--runtime/--no-runtime",
    default=True,
    show_default=True,
    help="Also render the ClusterServingRuntime kserve-ferry.",
)
@_OUTPUT
@_APPLY
def deploy_kserve(
    name: str,
    storage_uri: str,
    model_format: str,
    protocol: str,
    grpc: bool,
    namespace: str,
    image: str,
    runtime: bool,
    output: Path | None,
    apply: bool,
) -> None:
    """Render a KServe InferenceService NAME served by ferry's ClusterServingRuntime."""
    objects = [k8s.kserve_runtime(image)] if runtime else []
    objects.append(
        k8s.kserve_inference_service(
            name, storage_uri, model_format, protocol, namespace, grpc=grpc
        )
    )
    _emit(objects, output, apply)
