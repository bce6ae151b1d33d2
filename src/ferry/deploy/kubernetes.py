"""ferry on Kubernetes: the objects of one ferry Deployment, and ferry as a KServe
serving runtime, built as plain dicts (the one source for `ferry deploy kubernetes`'s
YAML and for its Helm chart).

Kubernetes schedules and balances; each ferry pod is a good replica:
- probes on ferry's own health endpoints: a startup probe on `/v2/health/live` long enough
  for the first loads (ferry opens its ports only once every configured model was tried),
  liveness on `/v2/health/live`, readiness on `/v2/health/ready` (503 from the moment a
  drain starts, so endpoints drop the pod before it stops listening);
- a drain grace (`--drain_grace_seconds`: after SIGTERM ferry keeps serving while it
  answers "not ready", since the endpoint removal races SIGTERM; the same job as a
  `preStop` sleep, without needing a `sleep` binary in the image) and a termination grace
  period that covers it plus ferry's drain (`--unload_drain_timeout_seconds`);
- REST and gRPC on named ports (gRPC as `kubernetes.io/h2c`), a PodDisruptionBudget, a
  Prometheus ServiceMonitor for ferry's metrics endpoint;
- autoscaling on ferry's own load signal: an `autoscaling/v2` HorizontalPodAutoscaler on
  the per-pod average of `ferry_requests_in_flight` (requests accepted and not yet
  answered: queue plus running), served to the HPA by a custom-metrics adapter
  (prometheus-adapter, or a cloud's). Chosen over a KEDA ScaledObject because it is a
  core API object with no operator to install and any metrics adapter can feed it;
  docs/kubernetes.md shows the adapter rule and the KEDA equivalent.

Models come from S3 (`s3://...`, with the optional S3 event queue for push updates) or
from a volume (a PersistentVolumeClaim mounted read-only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ferry.metrics import PROMETHEUS_PATH

REST_PORT, GRPC_PORT = 8501, 8500  # TF Serving's defaults, ferry's too
MODEL_MOUNT = "/models"
CACHE_MOUNT = "/var/cache/ferry"
IN_FLIGHT_METRIC = "ferry_requests_in_flight"
# Seconds after SIGTERM that ferry keeps serving (not ready), while the endpoint
# controller and kube-proxy take the pod out of rotation.
DRAIN_GRACE_SECONDS = 5
# The first loads of big models (a TensorFlow import alone is ~10 s): 10 minutes.
STARTUP_SECONDS = 600
_STARTUP_PERIOD = 5
# KServe's conventions for a serving runtime (its kserve-tensorflow-serving and
# kserve-tritonserver runtimes): the container name, the storage initializer's folder, the
# HTTP port 8080 and the gRPC port 9000.
KSERVE_CONTAINER = "kserve-container"
KSERVE_MODEL_DIR = "/mnt/models"
KSERVE_REST_PORT, KSERVE_GRPC_PORT = 8080, 9000
KSERVE_RUNTIME_NAME = "kserve-ferry"
# KServe model formats ferry serves, with the format versions KServe's own runtimes use.
KSERVE_FORMATS: tuple[tuple[str, str], ...] = (
    ("onnx", "1"),
    ("tensorflow", "1"),
    ("tensorflow", "2"),
    ("pytorch", "1"),
    ("pytorch", "2"),
    ("sklearn", "1"),
    ("tflite", "1"),
)
KSERVE_PROTOCOLS = ("v1", "v2", "grpc-v1", "grpc-v2")


@dataclass(frozen=True)
class KubernetesOptions:
    """What `ferry deploy kubernetes` renders: one Deployment of ferry and its objects."""

    name: str
    model: str  # an s3:// model root (or one model's folder), or a path inside the volume
    image: str
    namespace: str = "default"
    replicas: int = 2
    autoscale: tuple[int, int] | None = None  # (min, max) replicas
    target_in_flight: float = 8.0  # per replica, averaged, for the autoscaler
    cpu: str = "1"
    memory: str = "2Gi"
    gpus: int = 0
    model_volume: str = ""  # a PersistentVolumeClaim holding the model root
    s3_event_queue_url: str = ""
    aws_secret: str = ""  # a Secret with AWS_* variables, for S3 and the queue
    drain_seconds: float = 30.0
    service_monitor: bool = True
    serve_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.autoscale is not None:
            low, high = self.autoscale
            if not 1 <= low <= high:
                raise ValueError(f"autoscale {low}:{high}: need 1 <= MIN <= MAX")
        if self.replicas < 1:
            raise ValueError("replicas must be at least 1")
        if not self.model.startswith("s3://") and not self.model_volume:
            raise ValueError(f"model {self.model!r}: an s3:// URL, or a path inside --model-volume")


def labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "ferry", "app.kubernetes.io/instance": name}


def _metadata(options: KubernetesOptions, name: str | None = None) -> dict[str, Any]:
    return {
        "name": name or options.name,
        "namespace": options.namespace,
        "labels": labels(options.name),
    }


def model_location(options: KubernetesOptions) -> str:
    """What `ferry serve` is given: the S3 URL, or the path under the volume's mount."""
    if options.model.startswith("s3://"):
        return options.model
    return f"{MODEL_MOUNT}/{options.model.strip('/')}".rstrip("/")


def serve_args(options: KubernetesOptions) -> list[str]:
    args = [
        "serve",
        model_location(options),
        "--host=0.0.0.0",
        f"--rest_api_port={REST_PORT}",
        f"--port={GRPC_PORT}",
        f"--model_cache_dir={CACHE_MOUNT}",
        f"--drain_grace_seconds={DRAIN_GRACE_SECONDS}",
        f"--unload_drain_timeout_seconds={options.drain_seconds:g}",
    ]
    if options.s3_event_queue_url:
        args.append(f"--s3_event_queue_url={options.s3_event_queue_url}")
    return [*args, *options.serve_args]


def _resources(options: KubernetesOptions) -> dict[str, Any]:
    requests = {"cpu": options.cpu, "memory": options.memory}
    limits: dict[str, Any] = {"memory": options.memory}
    if options.gpus:
        limits["nvidia.com/gpu"] = options.gpus
    return {"requests": requests, "limits": limits}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def _container(options: KubernetesOptions) -> dict[str, Any]:
    mounts = [{"name": "cache", "mountPath": CACHE_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}]
    if options.model_volume:
        mounts.append({"name": "models", "mountPath": MODEL_MOUNT, "readOnly": True})
    container: dict[str, Any] = {
        "name": "ferry",
        "image": options.image,
        "args": serve_args(options),
        # The image's default is SageMaker mode (its entrypoint is `ferry`); the root
        # file system is read-only, so anything that writes under $HOME writes to /tmp.
        "env": [
            {"name": "FERRY_SAGEMAKER", "value": "false"},
            {"name": "HOME", "value": "/tmp"},
        ],
        "ports": [
            {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "startupProbe": _probe(
            "/v2/health/live", _STARTUP_PERIOD, STARTUP_SECONDS // _STARTUP_PERIOD
        ),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "readinessProbe": _probe("/v2/health/ready", 5, 2),
        "resources": _resources(options),
        "volumeMounts": mounts,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if options.aws_secret:
        container["envFrom"] = [{"secretRef": {"name": options.aws_secret}}]
    return container


def deployment(options: KubernetesOptions) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [
        {"name": "cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if options.model_volume:
        volumes.append(
            {
                "name": "models",
                "persistentVolumeClaim": {"claimName": options.model_volume, "readOnly": True},
            }
        )
    spec: dict[str, Any] = {
        "selector": {"matchLabels": labels(options.name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}},
        "template": {
            "metadata": {"labels": labels(options.name)},
            "spec": {
                "containers": [_container(options)],
                "volumes": volumes,
                # Service links would set FERRY_*_PORT variables, which ferry reads as
                # its own settings (docs/configuration.md).
                "enableServiceLinks": False,
                # ferry's drain grace + its drain + 10 s to unload and exit.
                "terminationGracePeriodSeconds": int(
                    DRAIN_GRACE_SECONDS + options.drain_seconds + 10
                ),
            },
        },
    }
    if options.autoscale is None:  # the autoscaler owns the count otherwise
        spec["replicas"] = options.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(options),
        "spec": spec,
    }


def service(options: KubernetesOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(options),
        "spec": {
            "selector": labels(options.name),
            "ports": [
                {"name": "http", "port": REST_PORT, "targetPort": "http", "protocol": "TCP"},
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                },
            ],
        },
    }


def pod_disruption_budget(options: KubernetesOptions) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(options),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(options.name)}},
    }


def autoscaler(options: KubernetesOptions) -> dict[str, Any]:
    low, high = options.autoscale or (options.replicas, options.replicas)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(options),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": options.name},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": IN_FLIGHT_METRIC},
                        "target": {
                            "type": "AverageValue",
                            "averageValue": f"{options.target_in_flight:g}",
                        },
                    },
                }
            ],
            # Scale down slowly: a model load on a new pod takes longer than a burst.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def service_monitor(options: KubernetesOptions) -> dict[str, Any]:
    """A Prometheus Operator ServiceMonitor for ferry's metrics endpoint."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(options),
        "spec": {
            "selector": {"matchLabels": labels(options.name)},
            "endpoints": [{"port": "http", "path": PROMETHEUS_PATH, "interval": "15s"}],
        },
    }


def render(options: KubernetesOptions) -> list[dict[str, Any]]:
    """Every object of one ferry deployment, in the order `kubectl apply` should see them."""
    objects = [deployment(options), service(options), pod_disruption_budget(options)]
    if options.autoscale is not None:
        objects.append(autoscaler(options))
    if options.service_monitor:
        objects.append(service_monitor(options))
    return objects


# -- KServe ---------------------------------------------------------------------------------


def kserve_runtime(image: str, name: str = KSERVE_RUNTIME_NAME) -> dict[str, Any]:
    """ferry as a KServe ClusterServingRuntime: KServe's storage initializer puts the
    model (a folder of numbered versions, as for its TF Serving runtime) at /mnt/models,
    and ferry serves it under the InferenceService's name on KServe's ports."""
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": name, "annotations": {"serving.kserve.io/server-type": "ferry"}},
        "spec": {
            "annotations": {
                "prometheus.kserve.io/port": str(KSERVE_REST_PORT),
                "prometheus.kserve.io/path": PROMETHEUS_PATH,
            },
            "supportedModelFormats": [
                {"name": format_name, "version": version, "autoSelect": True, "priority": 1}
                for format_name, version in KSERVE_FORMATS
            ],
            "protocolVersions": list(KSERVE_PROTOCOLS),
            "containers": [
                {
                    "name": KSERVE_CONTAINER,
                    "image": image,
                    "args": [
                        "serve",
                        "--model_name={{.Name}}",
                        f"--model_base_path={KSERVE_MODEL_DIR}",
                        "--host=0.0.0.0",
                        f"--rest_api_port={KSERVE_REST_PORT}",
                        f"--port={KSERVE_GRPC_PORT}",
                    ],
                    "env": [{"name": "FERRY_SAGEMAKER", "value": "false"}],
                    "securityContext": {
                        "runAsUser": 1000,
                        "runAsNonRoot": True,
                        "allowPrivilegeEscalation": False,
                        "privileged": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {
                        "requests": {"cpu": "1", "memory": "2Gi"},
                        "limits": {"cpu": "1", "memory": "2Gi"},
                    },
                }
            ],
        },
    }


def kserve_inference_service(
    name: str,
    storage_uri: str,
    model_format: str,
    protocol: str = "v2",
    namespace: str = "default",
    runtime: str = KSERVE_RUNTIME_NAME,
    grpc: bool = False,
) -> dict[str, Any]:
    """An InferenceService served by ferry's runtime. `grpc`: expose the gRPC port (KServe
    serverless mode routes one port per container, named h2c for gRPC)."""
    model: dict[str, Any] = {
        "modelFormat": {"name": model_format},
        "runtime": runtime,
        "protocolVersion": protocol,
        "storageUri": storage_uri,
    }
    if grpc:
        model["ports"] = [{"name": "h2c", "protocol": "TCP", "containerPort": KSERVE_GRPC_PORT}]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"predictor": {"model": model}},
    }
