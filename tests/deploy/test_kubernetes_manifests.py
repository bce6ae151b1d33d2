"""`ferry deploy kubernetes` and `ferry deploy kserve`: the objects they render are valid
for Kubernetes (its own OpenAPI schemas, via kubernetes-validate) and KServe, and what
they ask of ferry works: the container's arguments start a real `ferry serve`, whose
probe and metrics paths answer as the objects expect.

No cluster runs here; tests/cluster/ runs replicas behind a real load balancer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from support.models import scale_model, write_model
from support.server import FerryProcess

from ferry.deploy import kubernetes as k8s
from ferry.deploy.cli_kubernetes import write_helm_chart

# The oldest Kubernetes minor still supported by its maintainers when this was written,
# and the newest the validator knows: the objects must suit both.
KUBERNETES_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
CORE_KINDS = {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}

OPTION_SETS = {
    "s3": {"model": "s3://models/root"},
    "s3-autoscaled": {
        "model": "s3://models/root",
        "autoscale": (2, 8),
        "s3_event_queue_url": "https://sqs.eu-west-1.amazonaws.com/1/models",
        "aws_secret": "aws",
    },
    "volume-gpu": {
        "model": "mlp",
        "model_volume": "models-pvc",
        "gpus": 1,
        "service_monitor": False,
        "serve_args": ("--enable_batching",),
    },
}


def render_cli(*args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "ferry.cli", "deploy", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [item for item in yaml.safe_load_all(done.stdout) if item]


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_every_core_object_is_valid_for_kubernetes(name: str) -> None:
    objects = k8s.render(k8s.KubernetesOptions(name="demo", image="ferry:1", **OPTION_SETS[name]))

    kinds = {item["kind"] for item in objects}
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= kinds
    assert ("HorizontalPodAutoscaler" in kinds) is ("autoscale" in OPTION_SETS[name])
    for item in objects:
        if item["kind"] in CORE_KINDS:
            for version in KUBERNETES_VERSIONS:
                kubernetes_validate.validate(item, version, strict=True)


def test_a_wrong_field_is_caught_by_the_validator() -> None:
    """The schema check can fail: a misspelt probe field is refused."""
    item = k8s.deployment(k8s.KubernetesOptions(name="demo", model="s3://m", image="ferry:1"))
    item["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5

    with pytest.raises(kubernetes_validate.ValidationError, match="periodSecond"):
        kubernetes_validate.validate(item, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_cli_renders_what_the_module_builds() -> None:
    objects = render_cli(
        "kubernetes", "demo", "--model", "s3://models/root", "--autoscale", "2:8",
        "--image", "registry.example/ferry:1",
    )  # fmt: skip
    options = k8s.KubernetesOptions(
        name="demo", model="s3://models/root", image="registry.example/ferry:1", autoscale=(2, 8)
    )

    assert objects == k8s.render(options)
    deployment = objects[0]
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    autoscaler = next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler")
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (2, 8)
    metric = autoscaler["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert metric == "ferry_requests_in_flight"


def test_bad_options_are_one_clear_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ferry.cli", "deploy", "kubernetes", "demo", "--model", "m1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "Error: model 'm1': an s3:// URL, or a path inside --model-volume"
    )


def test_the_grace_period_covers_ferrys_drain_grace_and_drain() -> None:
    options = k8s.KubernetesOptions(name="d", model="s3://m", image="i", drain_seconds=45)
    pod = k8s.deployment(options)["spec"]["template"]["spec"]
    container = pod["containers"][0]

    assert "--unload_drain_timeout_seconds=45" in container["args"]
    assert f"--drain_grace_seconds={k8s.DRAIN_GRACE_SECONDS}" in container["args"]
    assert pod["terminationGracePeriodSeconds"] >= k8s.DRAIN_GRACE_SECONDS + 45


def _local_args(args: list[str], models: Path, cache: Path) -> list[str]:
    """The container's `ferry serve` arguments with its mounts mapped to local folders."""
    local = []
    for arg in args[1:]:  # FerryProcess adds `serve`, and loopback host and ports last
        arg = arg.replace(k8s.KSERVE_MODEL_DIR, str(models)).replace(k8s.CACHE_MOUNT, str(cache))
        arg = arg.replace(k8s.MODEL_MOUNT, str(models))
        local.append(arg)
    return local


def test_the_container_arguments_serve_and_answer_the_probes(tmp_path: Path) -> None:
    models = tmp_path / "volume"
    write_model(scale_model(2.0), models / "root" / "m", 1)
    options = k8s.KubernetesOptions(
        name="demo", model="root", image="ferry:1", model_volume="pvc", drain_seconds=5
    )
    container = k8s.deployment(options)["spec"]["template"]["spec"]["containers"][0]
    service_monitor = k8s.service_monitor(options)

    server = FerryProcess(
        _local_args(container["args"], models, tmp_path / "cache"), tmp_path / "ferry.log"
    )
    try:
        server.wait_ready(timeout=60)
        server.wait_version("m", 1)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert server.get(container[probe]["httpGet"]["path"]).status_code == 200, probe
        metrics = server.get(service_monitor["spec"]["endpoints"][0]["path"])
        assert metrics.status_code == 200
        assert "ferry_requests_in_flight" in metrics.text
    finally:
        server.stop()


# -- KServe ---------------------------------------------------------------------------------

# KServe's CRD fields that ferry's objects use (serving.kserve.io_clusterservingruntimes and
# _inferenceservices, openAPIV3Schema): the allowed keys and their types.
_KSERVE_RUNTIME_SPEC = {
    "annotations": dict,
    "supportedModelFormats": list,
    "protocolVersions": list,
    "containers": list,
}
_KSERVE_FORMAT_KEYS = {"name": str, "version": str, "autoSelect": bool, "priority": int}
_KSERVE_PROTOCOLS = {"v1", "v2", "grpc-v1", "grpc-v2"}
_KSERVE_MODEL_SPEC = {
    "modelFormat": dict,
    "runtime": str,
    "protocolVersion": str,
    "storageUri": str,
    "ports": list,
}


def _check_fields(item: dict, allowed: dict[str, type], where: str) -> None:
    for key, value in item.items():
        assert key in allowed, f"{where}: {key} is not a KServe field"
        assert isinstance(value, allowed[key]), f"{where}.{key}: {type(value).__name__}"


def _check_container(container: dict) -> None:
    """A runtime's container is a core V1Container: validate it inside a Pod."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "check"},
        "spec": {"containers": [container]},
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_kserve_runtime_and_inference_service_have_kserves_shape() -> None:
    runtime, service = render_cli(
        "kserve", "mnist", "--storage-uri", "s3://models/mnist", "--model-format", "onnx",
        "--grpc",
    )  # fmt: skip

    assert (runtime["apiVersion"], runtime["kind"]) == (
        "serving.kserve.io/v1alpha1",
        "ClusterServingRuntime",
    )
    _check_fields(runtime["spec"], _KSERVE_RUNTIME_SPEC, "ClusterServingRuntime.spec")
    for entry in runtime["spec"]["supportedModelFormats"]:
        _check_fields(entry, _KSERVE_FORMAT_KEYS, "supportedModelFormats[]")
    assert set(runtime["spec"]["protocolVersions"]) <= _KSERVE_PROTOCOLS
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for
    _check_container(container)

    assert (service["apiVersion"], service["kind"]) == (
        "serving.kserve.io/v1beta1",
        "InferenceService",
    )
    model = service["spec"]["predictor"]["model"]
    _check_fields(model, _KSERVE_MODEL_SPEC, "predictor.model")
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["ports"] == [{"name": "h2c", "protocol": "TCP", "containerPort": 9000}]


def test_the_kserve_runtime_arguments_serve_the_model_under_its_name(tmp_path: Path) -> None:
    """KServe's storage initializer leaves the model's versions in /mnt/models and fills
    in `{{.Name}}` with the InferenceService's name."""
    models = tmp_path / "mnt-models"
    write_model(scale_model(3.0), models, 1)
    (container,) = k8s.kserve_runtime("ferry:1")["spec"]["containers"]
    args = [arg.replace("{{.Name}}", "mnist") for arg in container["args"]]

    server = FerryProcess(_local_args(args, models, tmp_path / "cache"), tmp_path / "ferry.log")
    try:
        server.wait_ready(timeout=60)
        server.wait_version("mnist", 1)
        assert server.get("/v2/models/mnist/ready").status_code == 200
        answer = server.predict("mnist", {"instances": [[1.0, 2.0, 3.0, 4.0]]})
        assert answer.json() == {"predictions": [[3.0, 6.0, 9.0, 12.0]]}
    finally:
        server.stop()


def test_the_helm_chart_carries_the_rendered_objects(tmp_path: Path) -> None:
    options = k8s.KubernetesOptions(name="demo", model="s3://m", image="ferry:1")
    objects = k8s.render(options)

    chart, values, template = write_helm_chart(tmp_path / "chart", "demo", objects)

    assert yaml.safe_load(chart.read_text())["apiVersion"] == "v2"
    assert yaml.safe_load(values.read_text()) == {"objects": objects}
    assert "range .Values.objects" in template.read_text()
