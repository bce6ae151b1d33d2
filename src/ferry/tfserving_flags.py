"""TensorFlow Serving's `tensorflow_model_server` flags that `ferry serve` has no option of
its own for: one table, one decorator that adds them all, one function that turns their
values into ferry settings and log lines.

Why: TF Serving's launch commands (its Docker image's, its own test harness's, which passes
`--monitoring_config_file`, `--prefer_tflite_model`, `--grpc_socket_path` and
`--grpc_channel_arguments` on every start) must start ferry unchanged. A flag that has a
meaning here is honoured; one that has none is accepted, and one warning line names it and
says why it does nothing. Names, types and defaults are TF Serving's
(`tensorflow_serving/model_servers/main.cc`, `server.h`). The flags that `ferry serve`
declares itself (`--port`, `--model_config_file`, `--enable_model_warmup`, ...) are not
repeated here.

Booleans take TF Serving's forms: `--flag`, `--flag=true`, `--flag=false`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from google.protobuf import text_format

from ferry.flag_groups import BOOL_FLAG, FlagGroup, FlagSpec
from ferry.metrics import PROMETHEUS_PATH
from ferry.protos import message_class, pool

log = logging.getLogger("ferry.cli")

# Where the decorator's callbacks leave the values given on the command line.
_META_KEY = "ferry.tfserving_flags"
# TF Serving parses a channel argument's value as an int32 when it can, else a string.
_INT32_RANGE = range(-(2**31), 2**31)
# TF Serving's `--version` output names the server; ferry names itself the same way.
VERSION_LINE = "TensorFlow ModelServer: ferry {version}"


@dataclass(frozen=True)
class TFServingFlag:
    """One TF Serving flag: its type and default there, and what ferry does with it.

    `honoured`: ferry acts on the value (`effect` says how); otherwise it is accepted and
    ignored, and `effect` is the reason given in the warning. `same_as`: the value ferry's
    own behaviour already matches; giving it logs at info level instead of a warning."""

    name: str
    kind: type  # bool, int, float or str
    default: Any  # TF Serving's, as documented (docs/tfserving_flags.md)
    effect: str
    honoured: bool = False
    same_as: Any = None


# fmt: off
FLAGS: tuple[TFServingFlag, ...] = (
    # -- honoured ----------------------------------------------------------------------
    TFServingFlag("version", bool, False, "print ferry's version and exit", honoured=True),
    TFServingFlag("monitoring_config_file", str, "",
                  "MonitoringConfig text file: prometheus_config { enable path } turns the "
                  "Prometheus endpoint on or off and places it; without the file it is at "
                  f"{PROMETHEUS_PATH}", honoured=True),
    TFServingFlag("grpc_channel_arguments", str, "",
                  "comma-separated key=value gRPC server arguments (ints as ints), e.g. "
                  "grpc.max_connection_age_ms=2000; keys that a ferry limit flag sets stay "
                  "under that flag (a warning names it)", honoured=True),
    TFServingFlag("grpc_socket_path", str, "",
                  "also serve gRPC on this UNIX socket", honoured=True),
    TFServingFlag("ssl_config_file", str, "",
                  "SSLConfig text file: TLS (and client certificates with client_verify) on "
                  "the gRPC port and socket; REST stays plain HTTP, as in TF Serving",
                  honoured=True),
    TFServingFlag("rest_api_enable_cors_support", bool, False,
                  "CORS headers on every HTTP answer, and OPTIONS preflights from web origins "
                  "answered", honoured=True),
    TFServingFlag("enable_grpc_healthcheck_service", bool, False,
                  "serve grpc.health.v1 Check: SERVING for \"\", ModelService and "
                  "PredictionService while ferry serves", honoured=True),
    TFServingFlag("tensorflow_session_parallelism", int, 0,
                  "threads per model run and across graph nodes, where "
                  "--tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism are 0",
                  honoured=True),
    TFServingFlag("saved_model_tags", str, "",
                  "comma-separated tags of the SavedModel meta graph to load (default: serve)",
                  honoured=True),
    TFServingFlag("num_request_iterations_for_warmup", int, 0,
                  "times each recorded warm-up request runs (0: once)", honoured=True),
    TFServingFlag("prefer_tflite_model", bool, False,
                  "serve a version folder's model.tflite rather than its saved_model.pb",
                  honoured=True),
    TFServingFlag("enable_signature_method_name_check", bool, False,
                  "a signature must declare the method it is called for (Predict: any of "
                  "predict, classify, regress)", honoured=True),
    TFServingFlag("allow_version_labels_for_unavailable_models", bool, False,
                  "a version label not yet in force may name a version that is not "
                  "AVAILABLE (a label in force still moves only to an AVAILABLE one)",
                  honoured=True),
    TFServingFlag("use_alts_credentials", bool, False,
                  "ferry has no ALTS: true stops start-up rather than serve gRPC without the "
                  "credentials asked for", honoured=True, same_as=False),
    # -- accepted, nothing to do ---------------------------------------------------------
    TFServingFlag("rest_api_num_threads", int, "4 x CPUs",
                  "ferry's REST API runs on one event loop; model runs use the batch threads "
                  "(num_batch_threads)"),
    TFServingFlag("enable_per_model_batching_parameters", bool, False,
                  "ferry always reads a model folder's batching_params.pbtxt", same_as=True),
    TFServingFlag("num_load_threads", int, 0,
                  "ferry loads versions one at a time on its repository thread"),
    TFServingFlag("num_unload_threads", int, 0,
                  "ferry unloads each version on a thread of its own after its requests drain"),
    TFServingFlag("max_num_load_retries", int, 5,
                  "ferry retries a failed version when its files change"),
    TFServingFlag("load_retry_interval_micros", int, 60_000_000,
                  "ferry retries a failed version when its files change"),
    TFServingFlag("flush_filesystem_caches", bool, True,
                  "ferry leaves the page cache to the operating system"),
    TFServingFlag("tensorflow_session_config_file", str, "",
                  "ferry builds its TensorFlow sessions from its own thread flags"),
    TFServingFlag("platform_config_file", str, "",
                  "ferry picks each version's runtime from its files (model_platform in "
                  "--model_config_file restricts the choice)"),
    TFServingFlag("per_process_gpu_memory_fraction", float, 0.0,
                  "ferry runs models on the CPU", same_as=0.0),
    TFServingFlag("grpc_max_threads", int, "4 x CPUs",
                  "ferry's gRPC runs on its event loop; --grpc_max_concurrent_rpcs bounds calls"),
    TFServingFlag("remove_unused_fields_from_bundle_metagraph", bool, True,
                  "ferry keeps no MetaGraphDef after load"),
    TFServingFlag("num_tflite_pools", int, "CPUs",
                  "ferry keeps one pool of TFLite interpreters per version"),
    TFServingFlag("num_tflite_interpreters_per_pool", int, 1,
                  "ferry's TFLite pool grows to the number of concurrent runs"),
    TFServingFlag("xla_cpu_compilation_enabled", bool, False,
                  "ferry does not JIT-compile with XLA", same_as=False),
    TFServingFlag("xla_gpu_compilation_enabled", bool, False,
                  "ferry runs models on the CPU", same_as=False),
    TFServingFlag("enable_profiler", bool, True,
                  "ferry has no TensorFlow profiler service", same_as=False),
    TFServingFlag("thread_pool_factory_config_file", str, "",
                  "ferry's model runs use the batch threads"),
    TFServingFlag("mixed_precision", str, "",
                  "ferry serves versions as stored (`ferry optimize --precision fp16` writes "
                  "a reduced-precision version)", same_as=""),
    TFServingFlag("skip_initialize_tpu", bool, False,
                  "ferry does not use TPUs"),
)
# fmt: on
FLAGS_BY_NAME = {flag.name: flag for flag in FLAGS}

_CLICK_TYPES: dict[type, click.ParamType] = {
    bool: click.BOOL,
    int: click.INT,
    float: click.FLOAT,
    str: click.STRING,
}


class TFServingFlagError(click.ClickException):
    """A TF Serving flag's value that ferry cannot act on safely (bad file, bad syntax):
    start-up stops with exit status 1, as TF Serving's does."""


@dataclass(frozen=True)
class GrpcTls:
    """`--ssl_config_file`'s PEM texts: the gRPC server's TLS credentials."""

    server_key: str
    server_cert: str
    custom_ca: str = ""
    client_verify: bool = False


@dataclass(frozen=True)
class TFServingSettings:
    """What the honoured TF Serving flags ask of ferry (defaults: none given)."""

    # None: no Prometheus endpoint (a monitoring config without `enable: true`).
    prometheus_path: str | None = PROMETHEUS_PATH
    grpc_channel_arguments: tuple[tuple[str, int | str], ...] = ()
    grpc_socket_path: str = ""
    grpc_tls: GrpcTls | None = None
    session_parallelism: int = 0
    rest_api_enable_cors_support: bool = False
    enable_grpc_healthcheck_service: bool = False
    saved_model_tags: tuple[str, ...] = ("serve",)
    warmup_iterations: int = 1
    prefer_tflite_model: bool = False
    enable_signature_method_name_check: bool = False
    allow_version_labels_for_unavailable_models: bool = False
    # Log lines for the flags given: (level, message).
    notes: tuple[tuple[int, str], ...] = field(default_factory=tuple)

    def log_notes(self) -> None:
        for level, message in self.notes:
            log.log(level, "%s", message)


def _option(flag: TFServingFlag) -> FlagSpec:
    """click's option for one TF Serving flag. Its default is None, so only the flags
    given are recorded (for `given_flags` and `resolve`); those that ferry ignores are
    hidden from `--help` (docs/tfserving_flags.md lists them)."""
    option_kwargs: dict[str, Any] = {
        "type": _CLICK_TYPES[flag.kind],
        "default": None,
        "hidden": not flag.honoured,
        "help": f"TF Serving flag: {flag.effect}.",
    }
    if flag.kind is bool:
        option_kwargs.update(BOOL_FLAG, metavar="[=true|false]")
    if flag.name == "version":
        option_kwargs["is_eager"] = True
    return f"--{flag.name}", option_kwargs


def _act(ctx: click.Context, name: str, value: Any) -> None:
    """`--version` prints TF Serving's version line for ferry and exits at once."""
    if name == "version" and value:
        from ferry.distribution import installed_version

        click.echo(VERSION_LINE.format(version=installed_version()))
        ctx.exit(0)


_GROUP = FlagGroup(_META_KEY, tuple(_option(flag) for flag in FLAGS), on_record=_act)
# Adds every flag of `FLAGS` to a click command.
tfserving_flag_options = _GROUP.add_to
# The TF Serving flags given on the command line (or FERRY_*, --config), by name.
given_flags = _GROUP.given


def resolve(given: dict[str, Any]) -> TFServingSettings:
    """ferry's settings and log lines for the TF Serving flags `given`.

    Raises TFServingFlagError for a value ferry cannot act on: an unreadable or invalid
    file, a malformed channel argument, or credentials ferry does not have."""
    notes: list[tuple[int, str]] = []
    for name, value in given.items():
        flag = FLAGS_BY_NAME[name]
        if flag.honoured:
            continue
        shown = _shown(flag, value)
        if flag.same_as is not None and value == flag.same_as:
            notes.append((logging.INFO, f"{shown}: accepted; {flag.effect}"))
        else:
            notes.append((logging.WARNING, f"{shown} is accepted and ignored: {flag.effect}"))
    if given.get("use_alts_credentials"):
        alts = FLAGS_BY_NAME["use_alts_credentials"]
        raise TFServingFlagError(f"--use_alts_credentials: {alts.effect}")
    prometheus_path: str | None = PROMETHEUS_PATH
    if given.get("monitoring_config_file"):
        prometheus_path = prometheus_path_from(Path(given["monitoring_config_file"]))
        where = prometheus_path or "off"
        notes.append((logging.INFO, f"--monitoring_config_file: Prometheus metrics: {where}"))
    tls = None
    if given.get("ssl_config_file"):
        tls = grpc_tls_from(Path(given["ssl_config_file"]))
    return TFServingSettings(
        prometheus_path=prometheus_path,
        grpc_channel_arguments=parse_channel_arguments(given.get("grpc_channel_arguments", "")),
        grpc_socket_path=given.get("grpc_socket_path", ""),
        grpc_tls=tls,
        session_parallelism=max(int(given.get("tensorflow_session_parallelism", 0)), 0),
        rest_api_enable_cors_support=bool(given.get("rest_api_enable_cors_support", False)),
        enable_grpc_healthcheck_service=bool(given.get("enable_grpc_healthcheck_service", False)),
        saved_model_tags=parse_saved_model_tags(given.get("saved_model_tags", "")),
        warmup_iterations=max(int(given.get("num_request_iterations_for_warmup", 0)), 1),
        prefer_tflite_model=bool(given.get("prefer_tflite_model", False)),
        enable_signature_method_name_check=bool(
            given.get("enable_signature_method_name_check", False)
        ),
        allow_version_labels_for_unavailable_models=bool(
            given.get("allow_version_labels_for_unavailable_models", False)
        ),
        notes=tuple(notes),
    )


def _shown(flag: TFServingFlag, value: Any) -> str:
    if flag.kind is bool:
        return f"--{flag.name}={'true' if value else 'false'}"
    return f"--{flag.name}={value}"


def parse_saved_model_tags(text: str) -> tuple[str, ...]:
    """`--saved_model_tags`: the tag set of the meta graph to load ("" is TF Serving's
    default, `serve`). The order is kept for messages; loading compares them as a set."""
    tags = tuple(dict.fromkeys(tag.strip() for tag in text.split(",") if tag.strip()))
    return tags or ("serve",)


def parse_channel_arguments(text: str) -> tuple[tuple[str, int | str], ...]:
    """TF Serving's `--grpc_channel_arguments`: `key=value,key=value`; a value that is an
    int32 is passed as an int, any other as a string (gRPC ignores keys it does not know)."""
    arguments: list[tuple[str, int | str]] = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TFServingFlagError(
                f"--grpc_channel_arguments: {item!r} is not key=value "
                "(e.g. grpc.max_connection_age_ms=2000)"
            )
        arguments.append((key.strip(), _channel_value(value.strip())))
    return tuple(arguments)


def _channel_value(text: str) -> int | str:
    try:
        number = int(text)
    except ValueError:
        return text
    return number if number in _INT32_RANGE else text


def prometheus_path_from(path: Path) -> str | None:
    """The Prometheus path a MonitoringConfig file asks for; None when it is not enabled
    (TF Serving serves no metrics then)."""
    config = _parse_text_proto(
        path, "tensorflow.serving.MonitoringConfig", "monitoring_config_file"
    )
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    where = prometheus.path or PROMETHEUS_PATH
    if not where.startswith("/"):
        raise TFServingFlagError(
            f"--monitoring_config_file: prometheus_config.path must start with '/': {where!r}"
        )
    return where


def grpc_tls_from(path: Path) -> GrpcTls:
    """The gRPC TLS credentials of an SSLConfig file (PEM texts inside the file, as TF
    Serving reads them)."""
    config = _parse_text_proto(path, "tensorflow.serving.SSLConfig", "ssl_config_file")
    if not config.server_key or not config.server_cert:
        raise TFServingFlagError("--ssl_config_file: server_key and server_cert are both needed")
    if config.client_verify and not config.custom_ca:
        raise TFServingFlagError("--ssl_config_file: client_verify needs custom_ca")
    return GrpcTls(config.server_key, config.server_cert, config.custom_ca, config.client_verify)


def _parse_text_proto(path: Path, message_name: str, flag: str):
    try:
        text = path.read_text()
    except OSError as exc:
        raise TFServingFlagError(f"--{flag}: cannot read {path}: {exc.strerror}") from None
    message = message_class(message_name)()
    try:
        text_format.Parse(text, message, descriptor_pool=pool())
    except text_format.ParseError as exc:
        raise TFServingFlagError(
            f"--{flag}: Error parsing text-format {message_name}: {exc}"
        ) from None
    return message
