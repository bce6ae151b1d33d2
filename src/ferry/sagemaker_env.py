"""The SageMaker TensorFlow Serving container's environment, read as its `serve.py` and
`tfs_utils.py` read it, so an endpoint configured for that container behaves the same
on `ferry serve --sagemaker`.

`VARIABLES` is the one table of every `SAGEMAKER_*` variable ferry knows: what it does
here, or why it has no meaning in one ferry process (nginx, gunicorn and several TF
Serving processes are the container's; ferry is one server). Each one set is logged as
read; any other `SAGEMAKER_*` variable gets one warning, so a typo is not silent.

The container's validation comes with its messages (`SAGEMAKER_TFS_ENABLE_BATCHING`
must be `true` or `false`; a `SAGEMAKER_SAFE_PORT_RANGE` too small for its ports), and
batching parameters are written as the container writes its batching config file, then
parsed as TF Serving parses `--batching_parameters_file`; the container's own batching
test looks for those lines (`max_batch_size { value: 16 }`) in the log.

Explicit `ferry serve` flags win over these variables, except SageMaker's own
instructions (`SAGEMAKER_BIND_TO_PORT`, `SAGEMAKER_SAFE_PORT_RANGE`), which win as they
must for a container on SageMaker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ferry.batching import BatchingConfig
from ferry.model_config import ConfigError, parse_batching_parameters

log = logging.getLogger(__name__)

# SageMaker real-time endpoints refuse payloads over 6 MB (InvokeEndpoint's quota), so
# a bigger body never reaches a container there: the default --max_request_bytes in
# SageMaker mode, so that local tests see the same limit.
SAGEMAKER_MAX_REQUEST_BYTES = 6 * 1024 * 1024
# The container's TF Serving gRPC port without SAGEMAKER_SAFE_PORT_RANGE (serve.py).
CONTAINER_GRPC_PORT = 9000
# nginx's proxy_read_timeout in the container (SAGEMAKER_NGINX_PROXY_READ_TIMEOUT_SECONDS).
CONTAINER_REQUEST_TIMEOUT_SECONDS = 60
# The gunicorn timeout the container compares it with (SAGEMAKER_GUNICORN_TIMEOUT_SECONDS).
CONTAINER_GUNICORN_TIMEOUT_SECONDS = 30

BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
SAFE_PORT_RANGE = "SAGEMAKER_SAFE_PORT_RANGE"
DEFAULT_MODEL_NAME = "SAGEMAKER_TFS_DEFAULT_MODEL_NAME"
ENABLE_BATCHING = "SAGEMAKER_TFS_ENABLE_BATCHING"
INSTANCE_COUNT = "SAGEMAKER_TFS_INSTANCE_COUNT"
INTER_OP = "SAGEMAKER_TFS_INTER_OP_PARALLELISM"
INTRA_OP = "SAGEMAKER_TFS_INTRA_OP_PARALLELISM"
NGINX_TIMEOUT = "SAGEMAKER_NGINX_PROXY_READ_TIMEOUT_SECONDS"
GUNICORN_TIMEOUT = "SAGEMAKER_GUNICORN_TIMEOUT_SECONDS"
BATCH_JOB = "SAGEMAKER_BATCH"

# The container's batching parameters: (config key, variable); defaults in `_batching`.
BATCHING_PARAMETERS = (
    ("max_batch_size", "SAGEMAKER_TFS_MAX_BATCH_SIZE"),
    ("batch_timeout_micros", "SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS"),
    ("num_batch_threads", "SAGEMAKER_TFS_NUM_BATCH_THREADS"),
    ("max_enqueued_batches", "SAGEMAKER_TFS_MAX_ENQUEUED_BATCHES"),
)

_NO_MEANING = "ignored: "
# Every SAGEMAKER_* variable ferry knows, and what it does here. Entries starting with
# _NO_MEANING are the container's settings for parts ferry does not have.
VARIABLES: dict[str, str] = {
    BIND_TO_PORT: "the HTTP port (/ping, /invocations and every REST API)",
    SAFE_PORT_RANGE: "the gRPC port is its first port, as the container's TF Serving's",
    DEFAULT_MODEL_NAME: "the model that answers without tfs-model-name (must exist)",
    ENABLE_BATCHING: "batching with the SAGEMAKER_TFS_* parameters (true) or none (false)",
    **{var: f"batching parameter {key}" for key, var in BATCHING_PARAMETERS},
    BATCH_JOB: "batch transform: max_enqueued_batches defaults to 100000000",
    INTER_OP: "--tensorflow_inter_op_parallelism (unless given)",
    INTRA_OP: "--tensorflow_intra_op_parallelism (unless given)",
    INSTANCE_COUNT: "checked against SAGEMAKER_SAFE_PORT_RANGE; one ferry process serves "
    "on every core (the container ran this many TF Serving processes)",
    NGINX_TIMEOUT: "--rest_api_timeout_in_ms (unless given): a request's time limit",
    GUNICORN_TIMEOUT: "raises the request time limit to it when higher, as the container",
    "SAGEMAKER_MULTI_MODEL": "multi-model endpoint mode",
    "SAGEMAKER_MULTI_MODEL_UNIVERSAL_BUCKET": "multi-model endpoint mode",
    "SAGEMAKER_MULTI_MODEL_UNIVERSAL_PREFIX": "multi-model endpoint mode",
    "SAGEMAKER_TFS_NGINX_LOGLEVEL": _NO_MEANING + "ferry has no nginx; see --log_level",
    "SAGEMAKER_TFS_VERSION": _NO_MEANING + "ferry serves with the TensorFlow it has",
    "SAGEMAKER_TFS_WAIT_TIME_SECONDS": _NO_MEANING + "ferry opens its port once each "
    "model's first load was tried, however long it takes",
    "SAGEMAKER_TFS_FRACTIONAL_GPU_MEM_MARGIN": _NO_MEANING + "one process; TensorFlow "
    "grows its GPU memory as needed",
    "SAGEMAKER_GUNICORN_WORKERS": _NO_MEANING + "inference.py runs in ferry's worker threads",
    "SAGEMAKER_GUNICORN_THREADS": _NO_MEANING + "inference.py runs in ferry's worker threads",
    "SAGEMAKER_GUNICORN_WORKER_CLASS": _NO_MEANING + "ferry has no gunicorn",
    "SAGEMAKER_GUNICORN_LOGLEVEL": _NO_MEANING + "ferry has no gunicorn; see --log_level",
}


class SageMakerEnvError(ValueError):
    """A variable the container would also refuse (its message where it has one)."""


@dataclass(frozen=True)
class SageMakerEnvironment:
    """The variables' settings for `ferry serve --sagemaker` (None: not set)."""

    default_model: str = ""
    bind_to_port: int | None = None
    grpc_port: int | None = None
    # SAGEMAKER_TFS_ENABLE_BATCHING: None unset, else its value; with true, the
    # container's batching config file (TF Serving's BatchingParameters text).
    enable_batching: bool | None = None
    batching_text: str = ""
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    request_timeout_seconds: int = CONTAINER_REQUEST_TIMEOUT_SECONDS
    # What was read, logged by `log_notes` (the container logs these at start-up).
    notes: tuple[tuple[int, str], ...] = field(default=(), compare=False)

    def batching_over(self, base: BatchingConfig) -> BatchingConfig:
        """`base` (ferry's flags) unless SAGEMAKER_TFS_ENABLE_BATCHING is set: false turns
        batching off, true batches with the container's parameters (allowed batch sizes
        are not among them; ferry's own fill_under_load stays)."""
        if self.enable_batching is None:
            return base
        if not self.enable_batching:
            return replace(base, enabled=False)
        return parse_batching_parameters(
            self.batching_text, replace(base, enabled=True, allowed_batch_sizes=())
        )

    def log_notes(self) -> None:
        for level, message in self.notes:
            log.log(level, "%s", message)


def read_environment(
    environ: Mapping[str, str] | None = None, cpu_count: int | None = None
) -> SageMakerEnvironment:
    """The container's variables from `environ` (default: this process's environment),
    checked as the container checks them. Raises SageMakerEnvError."""
    env = os.environ if environ is None else environ
    cpus = cpu_count or os.cpu_count() or 1
    notes: list[tuple[int, str]] = []
    for name in sorted(k for k in env if k.startswith("SAGEMAKER_")):
        meaning = VARIABLES.get(name)
        if meaning is None:
            notes.append((logging.WARNING, f"{name} is not a variable ferry reads: ignored"))
        elif meaning.startswith(_NO_MEANING):
            notes.append((logging.WARNING, f"{name}={env[name]} {meaning}"))
        else:
            notes.append((logging.INFO, f"{name}={env[name]}: {meaning}"))
    instance_count = _whole(env, INSTANCE_COUNT, 1, minimum=1)
    timeout = _whole(env, NGINX_TIMEOUT, CONTAINER_REQUEST_TIMEOUT_SECONDS, minimum=1)
    gunicorn = _whole(env, GUNICORN_TIMEOUT, CONTAINER_GUNICORN_TIMEOUT_SECONDS, minimum=1)
    if gunicorn > timeout:
        notes.append(
            (
                logging.INFO,
                f"{GUNICORN_TIMEOUT} ({gunicorn}) is above the proxy read timeout "
                f"({timeout}): requests may take {gunicorn} seconds, as in the container",
            )
        )
        timeout = gunicorn
    notes.append(
        (
            logging.INFO,
            f"request time limit {timeout} s unless --rest_api_timeout_in_ms is given "
            f"(the container's nginx: proxy_read_timeout {timeout};)",
        )
    )
    batching_text = _batching(env, cpus, notes)
    return SageMakerEnvironment(
        default_model=env.get(DEFAULT_MODEL_NAME, ""),
        bind_to_port=_port(env),
        grpc_port=_grpc_port(env, instance_count),
        enable_batching=None if ENABLE_BATCHING not in env else bool(batching_text),
        batching_text=batching_text,
        intra_op_threads=_whole(env, INTRA_OP, 0, minimum=0),
        inter_op_threads=_whole(env, INTER_OP, 0, minimum=0),
        request_timeout_seconds=timeout,
        notes=tuple(notes),
    )


def check_default_model(default_model: str, found: list[str], model_dir: object) -> None:
    """The container waits for its default model and gives up when it never appears;
    ferry says so at once. No model found at all is the catalog's warning, not this."""
    if default_model and found and default_model not in found:
        raise SageMakerEnvError(
            f"{DEFAULT_MODEL_NAME}={default_model} names no model under {model_dir} "
            f"(found: {', '.join(sorted(found))})"
        )


def _batching(env: Mapping[str, str], cpus: int, notes: list[tuple[int, str]]) -> str:
    """The container's batching config file for SAGEMAKER_TFS_ENABLE_BATCHING=true, its
    defaults and log lines included (tfs_utils.create_batching_config); "" without."""
    enabled = env.get(ENABLE_BATCHING, "false").lower()
    if enabled not in ("true", "false"):
        raise SageMakerEnvError(f"{ENABLE_BATCHING} must be 'true' or 'false'")
    if enabled == "false":
        return ""
    defaults = {
        "max_batch_size": 8,
        "batch_timeout_micros": 1000,
        "num_batch_threads": cpus,
        "max_enqueued_batches": 100000000 if BATCH_JOB in env else cpus,
    }
    lines, defaulted = [], []
    for key, var in BATCHING_PARAMETERS:
        value = env.get(var)
        if value is None:
            value = str(defaults[key])
            defaulted.append(f"{key} defaulted to {value}. Set {var} to override default.")
        lines.append(f"{key} {{ value: {value.strip()} }}\n")
    text = "".join(lines)
    if defaulted:
        notes.append((logging.WARNING, "\n".join(defaulted)))
    notes.append((logging.INFO, f"batching is enabled; batching config: \n{text}"))
    try:  # refused now, as TF Serving refuses the container's file at start-up
        parse_batching_parameters(text)
    except (ConfigError, ValueError) as exc:
        raise SageMakerEnvError(f"the SAGEMAKER_TFS_* batching parameters: {exc}") from None
    return text


def _whole(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    value = env.get(name)
    if value is None or value == "":
        return default
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < minimum:
        raise SageMakerEnvError(
            f"{name} must be a whole number of at least {minimum}, not {value!r}"
        )
    return int(text)


def _port(env: Mapping[str, str]) -> int | None:
    value = env.get(BIND_TO_PORT)
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) < 65536:
        raise SageMakerEnvError(f"{BIND_TO_PORT} is not a port number: {value!r}")
    return int(value)


def _grpc_port(env: Mapping[str, str], instance_count: int) -> int | None:
    """The range's first port, as the container gives its first TF Serving's gRPC port
    (and the next to its REST port, which ferry serves on SAGEMAKER_BIND_TO_PORT)."""
    value = env.get(SAFE_PORT_RANGE)
    if value is None:
        return None
    low, _, high = value.partition("-")
    if not (low.strip().isdigit() and high.strip().isdigit()):
        raise SageMakerEnvError(f"{SAFE_PORT_RANGE} must be LOW-HIGH, not {value!r}")
    first, last = int(low), int(high)
    if not 0 < first <= last < 65536:
        raise SageMakerEnvError(f"{SAFE_PORT_RANGE} is not a range of ports: {value!r}")
    if first + 2 * instance_count > last:
        raise SageMakerEnvError(f"not enough ports available in {SAFE_PORT_RANGE} ({value})")
    return first
