"""The `ferry` command."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ferry import cli_config, cli_errors, rest_tls, sagemaker_flags, tfserving_flags
from ferry import transport_limits as limits
from ferry.batching import BatchingConfig
from ferry.cli_groups import FerryGroup
from ferry.cli_logging import filter_native_logs, quiet_tensorflow
from ferry.cli_progress import working
from ferry.cli_spelling import add_spelling_aliases
from ferry.cli_version import version_lines
from ferry.consent import CODE_ENV, PICKLE_ENV, ExecutionConsent
from ferry.dataplane import flags as dataplane_flags
from ferry.flag_groups import BOOL_FLAG as _BOOL
from ferry.logging_setup import configure_logging
from ferry.manager import ManagerOptions
from ferry.model_config import (
    DEFAULT_MODEL_NAME,
    ConfigError,
    ModelSpec,
    load_batching_file,
)
from ferry.model_options import ModelOptions
from ferry.observability_flags import observability_flag_options, observability_options
from ferry.protocols import cors_flags, response_encoding_flags, v2_extension_flags
from ferry.readiness import ReadyWhen
from ferry.repository.label_file import DEFAULT_MAX_VERSION_LABELS_FILE_BYTES, VERSION_LABELS_FILE
from ferry.repository.location import (
    S3_EXTRA_HINT,
    BasePath,
    ObjectStoreOptions,
    S3Url,
    parse_base_path,
    s3_support_installed,
)
from ferry.repository.sagemaker_catalog import DEFAULT_MODEL_DIR as DEFAULT_SAGEMAKER_MODEL_DIR
from ferry.repository.uploads import DEFAULT_MAX_UPLOADED_BYTES
from ferry.runtimes import RuntimeOptions
from ferry.sagemaker_env import (
    CONTAINER_GRPC_PORT,
    CONTAINER_REQUEST_TIMEOUT_SECONDS,
    SAGEMAKER_MAX_REQUEST_BYTES,
)
from ferry.tensor_limits import DEFAULT_MAX_REQUEST_BYTES, TENSOR_BYTES_PER_REQUEST_BYTE
from ferry.triton_config import (
    DEFAULT_MAX_CONFIG_BYTES,
    DEFAULT_MAX_LABEL_FILE_BYTES,
    MAX_CONFIG_BYTES_FLAG,
    MAX_LABEL_FILE_BYTES_FLAG,
    TritonConfigLimits,
)

if TYPE_CHECKING:
    from ferry.protocols.sagemaker import SageMakerOptions
    from ferry.protocols.sagemaker_handlers import InferenceHandlers
    from ferry.repository.catalog import ModelCatalog
    from ferry.sagemaker_env import SageMakerEnvironment

# TF Serving spells booleans `--flag=true|false`; `--flag` alone means true.
# The port SageMaker calls a container on (unless it sets SAGEMAKER_BIND_TO_PORT).
SAGEMAKER_PORT = 8080


class BasePathType(click.ParamType):
    """A local folder or an `s3://bucket/prefix` URL (click.Path would fold the '//')."""

    name = "PATH|s3://BUCKET/PREFIX"

    def convert(self, value, param, ctx) -> BasePath:
        if isinstance(value, Path | S3Url):
            return value
        try:
            return parse_base_path(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _resolved(base: BasePath) -> BasePath:
    return base.resolve() if isinstance(base, Path) else base


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo("\n".join(version_lines()))
        ctx.exit(0)


@click.group(cls=FerryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_print_version,
    help="Show ferry's version and the frameworks found, and exit.",
)
@click.option(
    "--debug",
    is_flag=True,
    envvar=cli_errors.DEBUG_ENV,
    help="Tracebacks for unexpected errors, and TensorFlow's C++ logs "
    f"(also ${cli_errors.DEBUG_ENV}=1).",
)
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """ferry: serve trained models over TensorFlow Serving's, KServe V2's and SageMaker's
    APIs, with dynamic batching and live version updates."""
    cli_errors.set_debug(ctx, debug)
    quiet_tensorflow(debug)


@main.command()
def version() -> None:
    """Show ferry's version and those of the frameworks found."""
    click.echo("\n".join(version_lines()))


@main.command()
@click.argument("root", required=False, type=BasePathType())
@click.option("--model_name", help="Serve one model under this name (TF Serving flag).")
@click.option(
    "--model_base_path",
    type=BasePathType(),
    help="Folder or s3:// URL of the model's integer version folders (TF Serving flag).",
)
@click.option(
    "--model_config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TF Serving model_config_list text file: several models, version policies and labels.",
)
@click.option(
    "--model_config_file_poll_wait_seconds",
    type=float,
    default=0.0,
    show_default=True,
    help="Re-read the config file this often (0: read once).",
)
@click.option(
    "--rest_api_port",
    type=int,
    default=8501,
    show_default=True,
    help="HTTP port for the REST APIs, health and metrics (with --sagemaker: "
    f"{SAGEMAKER_PORT}, or $SAGEMAKER_BIND_TO_PORT).",
)
@click.option(
    "--port",
    "grpc_port",
    type=int,
    default=8500,
    show_default=True,
    help="gRPC port (TF Serving's and KServe V2's gRPC services); 0 turns gRPC off. With "
    f"--sagemaker: {CONTAINER_GRPC_PORT}, or the first port of $SAGEMAKER_SAFE_PORT_RANGE.",
)
@click.option(
    "--host",
    default="0.0.0.0",
    show_default=True,
    help="Address to listen on (127.0.0.1 for this machine only).",
)
@click.option(
    "--file_system_poll_wait_seconds",
    type=float,
    default=2.0,
    show_default=True,
    help="Poll storage for new, changed and removed versions this often (0: once at start-up).",
)
@click.option(
    "--version_settle_seconds",
    type=float,
    default=0.5,
    show_default=True,
    help="A new or changed version folder must stay unchanged this long before it loads.",
)
@click.option(
    "--max_version_labels_file_bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_VERSION_LABELS_FILE_BYTES,
    show_default=True,
    help=f"A model's {VERSION_LABELS_FILE} (read on every poll) larger than this is "
    "refused, before it is read, and the labels in force stay (docs/rollouts.md).",
)
@click.option(
    "--enable_batching",
    default=True,
    show_default=True,
    **_BOOL,
    help="Merge concurrent requests into one model run (TF Serving's default is false, "
    "ferry's true).",
)
@click.option(
    "--batch_fill_under_load",
    default=True,
    show_default=True,
    **_BOOL,
    help="Under sustained load, wait up to one model run's time for a full batch "
    "(when batch_timeout_micros is 0). Fuller batches cost less per row (docs/serving.md).",
)
@click.option(
    "--batching_parameters_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TF Serving BatchingParameters text file (max_batch_size, "
    "batch_timeout_micros, max_enqueued_batches, num_batch_threads, "
    "allowed_batch_sizes).",
)
@click.option(
    "--max_request_bytes",
    type=int,
    default=DEFAULT_MAX_REQUEST_BYTES,
    show_default=True,
    help="Largest accepted request body; larger ones get HTTP 413, and a gzip/deflate body "
    "(Content-Encoding) is refused as soon as it inflates past it (V2: Triton's 400). With "
    f"--sagemaker: {SAGEMAKER_MAX_REQUEST_BYTES}, AWS's 6 MB payload limit.",
)
@click.option(
    "--max_tensor_bytes",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Largest decoded size of one request's input tensors, each and all together, "
    "sized from their shapes before any is allocated (one-value fills and element counts "
    "included); larger ones get HTTP 400 / "
    f"INVALID_ARGUMENT. 0: {TENSOR_BYTES_PER_REQUEST_BYTE}x --max_request_bytes.",
)
@click.option(
    "--max_uploaded_model_bytes",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_UPLOADED_BYTES,
    show_default=True,
    help="All model files sent in V2 load requests (file: overrides, with "
    "--enable_model_control) together; more get RESOURCE_EXHAUSTED.",
)
@click.option(
    MAX_CONFIG_BYTES_FLAG,
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_CONFIG_BYTES,
    show_default=True,
    help="Largest Triton model config: a model folder's config.pbtxt or a V2 load "
    "request's config override; a larger one fails the load (INVALID_ARGUMENT).",
)
@click.option(
    MAX_LABEL_FILE_BYTES_FLAG,
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_LABEL_FILE_BYTES,
    show_default=True,
    help="Largest label_filename file a Triton model config names (read into memory "
    "for the classification extension); a larger one fails the load.",
)
@click.option(
    "--rest_api_timeout_in_ms",
    type=int,
    default=30_000,
    show_default=True,
    help="A request that has not finished by then gets 504 (with --sagemaker: "
    f"{CONTAINER_REQUEST_TIMEOUT_SECONDS * 1000}, or the container's timeout variables).",
)
@click.option(
    "--max_header_bytes",
    type=click.IntRange(min=1024),
    default=limits.DEFAULT_MAX_HEADER_BYTES,
    show_default=True,
    help="Largest HTTP request head (request line and headers); larger: 431 (URL: 414).",
)
@click.option(
    "--max_header_count",
    type=click.IntRange(min=1),
    default=limits.DEFAULT_MAX_HEADER_COUNT,
    show_default=True,
    help="Most headers in an HTTP request; more: 431.",
)
@click.option(
    "--http_header_timeout_seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=limits.DEFAULT_HEADER_TIMEOUT_SECONDS,
    show_default=True,
    help="An HTTP request head must arrive within this (from connect or its first byte), "
    "else: 408.",
)
@click.option(
    "--http_body_timeout_seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=limits.DEFAULT_BODY_TIMEOUT_SECONDS,
    show_default=True,
    help="The whole HTTP request body must arrive within this after its head; else 408 "
    "(the default fits 64 MB at 1.8 Mbit/s).",
)
@click.option(
    "--http_keep_alive_timeout_seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=limits.DEFAULT_KEEP_ALIVE_TIMEOUT_SECONDS,
    show_default=True,
    help="Close an idle kept-alive HTTP connection after this (behind a load balancer: "
    "more than its idle timeout).",
)
@click.option(
    "--max_connections",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Open HTTP connections; beyond it new ones get 503. 0: the open-file limit (which "
    "ferry raises to the hard limit at start) less a reserve and gRPC's share, at most "
    f"{limits.MAX_AUTO_HTTP_CONNECTIONS}.",
)
@click.option(
    "--grpc_max_connections",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Open gRPC connections; beyond it new ones are closed. "
    f"0: 1/{limits.GRPC_SHARE} of the open-file budget, at most "
    f"{limits.MAX_AUTO_GRPC_CONNECTIONS}.",
)
@click.option(
    "--grpc_max_concurrent_streams",
    type=click.IntRange(min=1),
    default=limits.DEFAULT_GRPC_MAX_CONCURRENT_STREAMS,
    show_default=True,
    help="Concurrent gRPC streams per connection (clients queue beyond it).",
)
@click.option(
    "--grpc_max_concurrent_rpcs",
    type=click.IntRange(min=1),
    default=limits.DEFAULT_GRPC_MAX_CONCURRENT_RPCS,
    show_default=True,
    help="In-flight gRPC calls in all; beyond it RESOURCE_EXHAUSTED.",
)
@click.option(
    "--grpc_max_metadata_bytes",
    type=click.IntRange(min=1024),
    default=limits.DEFAULT_GRPC_MAX_METADATA_BYTES,
    show_default=True,
    help="Largest gRPC request metadata (headers); larger: RESOURCE_EXHAUSTED.",
)
@click.option(
    "--grpc_max_connection_idle_seconds",
    type=click.FloatRange(min=0),
    default=limits.DEFAULT_GRPC_MAX_CONNECTION_IDLE_SECONDS,
    show_default=True,
    help="Send GOAWAY to a gRPC connection without calls for this long (0: never).",
)
@click.option(
    "--intra_op_threads",
    "--tensorflow_intra_op_parallelism",
    type=int,
    default=0,
    show_default=True,
    help="Threads per model run (0: all cores).",
)
@click.option(
    "--inter_op_threads",
    "--tensorflow_inter_op_parallelism",
    type=int,
    default=0,
    show_default=True,
    help="Threads across independent graph nodes (0: runtime's choice).",
)
@click.option(
    "--allow_spinning",
    default=False,
    show_default=True,
    **_BOOL,
    help="Let idle onnxruntime threads spin-wait: about 80 µs lower latency at light load "
    "for small models, 10-20% less throughput under load (more CPU burnt).",
)
@click.option(
    "--accelerate",
    type=click.Choice(["none", "onnx"]),
    default="none",
    show_default=True,
    help="Serve TensorFlow/Keras/PyTorch models through onnxruntime when their ONNX "
    "export matches (per model: accelerate in the model's ferry.toml).",
)
@click.option(
    "--enable_model_warmup",
    default=True,
    show_default=True,
    **_BOOL,
    help="Run each new version once before it takes traffic.",
)
@click.option(
    "--enable_serialization_as_tensor_content",
    default=False,
    show_default=True,
    **_BOOL,
    help="gRPC Predict outputs in tensor_content (strings as TensorFlow's length-prefixed "
    "list) instead of the typed *_val fields (float_val, int64_val, ...) that TF Serving "
    "fills by default.",
)
@click.option(
    "--unload_drain_timeout_seconds",
    type=float,
    default=60.0,
    show_default=True,
    help="How long an outgoing version may finish its in-flight requests.",
)
@click.option(
    "--drain_grace_seconds",
    type=click.FloatRange(min=0.0, max=3600.0),
    default=0.0,
    show_default=True,
    help="After SIGTERM, answer readiness with 503 but keep serving this long before the "
    "listeners close, so load balancers and Kubernetes endpoints stop sending first "
    "(a second signal drains at once; docs/cluster.md).",
)
@click.option(
    "--ready_when",
    type=click.Choice([choice.value for choice in ReadyWhen]),
    default="all",
    show_default=True,
    help="Readiness (/v2/health/ready, gRPC ServerReady, /ping): 'all': every configured "
    "model serves a version; 'any': at least one does. Never ready with no model "
    "(except a SageMaker multi-model endpoint); docs/readiness.md.",
)
@click.option(
    "--allow_code",
    multiple=True,
    metavar="MODEL[,MODEL...]",
    help="Models whose code may run: model.py, code/inference.py (needs '*'), Keras Lambda "
    "layers, compiled .pt2 code. '*': every model you configured; repeatable. With "
    "--sagemaker also $FERRY_ALLOW_CODE. Never a model configured by a reload request "
    "(docs/security.md).",
)
@click.option(
    "--allow_pickle",
    multiple=True,
    metavar="MODEL[,MODEL...]",
    help="Models whose pickled files (model.joblib, pickled .pt2 entries) may be unpickled, "
    "which runs code. '*': every model you configured; repeatable. With --sagemaker also "
    "$FERRY_ALLOW_PICKLE.",
)
@click.option(
    "--sagemaker",
    is_flag=True,
    envvar="FERRY_SAGEMAKER",
    help="SageMaker container mode: GET /ping and POST /invocations on port 8080 "
    "($SAGEMAKER_BIND_TO_PORT when set), models from --sagemaker_model_dir. "
    "Env FERRY_SAGEMAKER=true does the same (for an image whose entrypoint is `ferry`).",
)
@click.option(
    "--sagemaker_model_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_SAGEMAKER_MODEL_DIR,
    show_default=True,
    help="Where SageMaker put the model (with --sagemaker).",
)
@click.option(
    "--s3_endpoint_url",
    help="S3-compatible store for s3:// paths (MinIO, moto, ...); default: AWS, or "
    "$AWS_ENDPOINT_URL_S3 / $AWS_ENDPOINT_URL. Credentials: boto3's standard chain.",
)
@click.option(
    "--s3_event_queue_url",
    help="SQS queue that receives the bucket's S3 event notifications: an upload then "
    "starts a poll at once instead of waiting up to --file_system_poll_wait_seconds "
    "(polling goes on as a safety net). Give ferry its own queue: it deletes what it reads.",
)
@click.option(
    "--model_cache_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where versions from s3:// paths are downloaded to before they load "
    "(default: ferry's folder in the user cache folder, e.g. ~/.cache/ferry).",
)
@click.option(
    "--auth",
    "auth_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Key file (ferry keys create --file FILE): every API then needs an AWS SigV4 "
    "signature (service sagemaker) or a bearer token from it; health paths stay open "
    "(docs/deploy.md).",
)
@click.option(
    "--enable_model_control",
    default=False,
    show_default=True,
    **_BOOL,
    help="Answer the admin APIs: TF Serving's HandleReloadConfigRequest and the V2 "
    "repository load/unload (with --auth: keys with the admin scope only). Off, they get "
    "UNAVAILABLE / 503, as on Triton without explicit model control.",
)
@click.option(
    "--model_roots",
    metavar="PATH[,PATH...]",
    help="Folders and s3:// prefixes a config reload may use as base paths "
    "(default: ROOT, --model_base_path or the start-up --model_config_file's base paths).",
)
@click.option(
    "--log_level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Least severe log lines shown.",
)
@tfserving_flags.tfserving_flag_options
@sagemaker_flags.sagemaker_flag_options
@v2_extension_flags.v2_extension_flag_options
@response_encoding_flags.response_compression_flag_options
@rest_tls.rest_tls_flag_options
@cors_flags.cors_flag_options
@dataplane_flags.dataplane_flag_options
@observability_flag_options
def serve(
    root: Path | None,
    model_name: str | None,
    model_base_path: Path | None,
    model_config_file: Path | None,
    model_config_file_poll_wait_seconds: float,
    rest_api_port: int,
    grpc_port: int,
    host: str,
    file_system_poll_wait_seconds: float,
    version_settle_seconds: float,
    max_version_labels_file_bytes: int,
    enable_batching: bool,
    batch_fill_under_load: bool,
    batching_parameters_file: Path | None,
    max_request_bytes: int,
    max_tensor_bytes: int,
    max_uploaded_model_bytes: int,
    max_triton_config_bytes: int,
    max_triton_label_file_bytes: int,
    rest_api_timeout_in_ms: int,
    max_header_bytes: int,
    max_header_count: int,
    http_header_timeout_seconds: float,
    http_body_timeout_seconds: float,
    http_keep_alive_timeout_seconds: float,
    max_connections: int,
    grpc_max_connections: int,
    grpc_max_concurrent_streams: int,
    grpc_max_concurrent_rpcs: int,
    grpc_max_metadata_bytes: int,
    grpc_max_connection_idle_seconds: float,
    intra_op_threads: int,
    inter_op_threads: int,
    allow_spinning: bool,
    accelerate: str,
    enable_model_warmup: bool,
    enable_serialization_as_tensor_content: bool,
    unload_drain_timeout_seconds: float,
    drain_grace_seconds: float,
    ready_when: str,
    allow_code: tuple[str, ...],
    allow_pickle: tuple[str, ...],
    sagemaker: bool,
    sagemaker_model_dir: Path,
    s3_endpoint_url: str | None,
    s3_event_queue_url: str | None,
    model_cache_dir: Path | None,
    auth_file: Path | None,
    enable_model_control: bool,
    model_roots: str | None,
    log_level: str,
) -> None:
    """Serve models: every model folder under ROOT, one model (--model_name and
    --model_base_path), or a TF Serving --model_config_file.

    Without any of these, MODEL_NAME and MODEL_BASE_PATH from the environment are used
    as in TF Serving's Docker image: the model at $MODEL_BASE_PATH/$MODEL_NAME.

    Every model path may be an s3://bucket/prefix URL (pip install 'ferry-serve[s3]').

    The ports open once every configured model's first load was tried, as in TF Serving.
    TF Serving's other flags are accepted too: those shown here are honoured, the rest
    start ferry with a warning naming them (docs/tfserving_flags.md lists them all).
    """
    from ferry.repository.catalog import ConfigFileCatalog, FixedCatalog, RootFolderCatalog
    from ferry.server import FerryServer, ServerOptions

    observability = observability_options(click.get_current_context())
    configure_logging(log_level, observability.log_format)
    tfs = tfserving_flags.resolve(tfserving_flags.given_flags(click.get_current_context()))
    tfs.log_notes()
    if tfs.session_parallelism and not (intra_op_threads or inter_op_threads):
        intra_op_threads = inter_op_threads = tfs.session_parallelism
    sources = [x for x in (root, model_base_path, model_config_file) if x is not None]
    if len(sources) > 1:
        raise click.UsageError("give only one of ROOT, --model_base_path, --model_config_file")
    sagemaker_options = None
    multi_model = None
    object_store = ObjectStoreOptions(s3_endpoint_url, model_cache_dir, s3_event_queue_url)
    if (
        s3_event_queue_url or any(isinstance(x, S3Url) for x in sources)
    ) and not s3_support_installed():
        raise click.UsageError(S3_EXTRA_HINT)
    consent = _execution_consent(allow_code, allow_pickle, sagemaker)
    try:
        if sagemaker:
            if sources:
                raise click.UsageError(
                    "--sagemaker serves --sagemaker_model_dir: give no ROOT, "
                    "--model_base_path or --model_config_file"
                )
            environment = _sagemaker_environment()
            extras = sagemaker_flags.resolve(
                click.get_current_context(), True, object_store, _model_roots(model_roots)
            )
            multi_model = extras.multi_model
            if multi_model is not None:
                if enable_model_control:
                    raise click.UsageError(
                        "a multi-model endpoint's model control is its MME API "
                        "(POST /models, DELETE /models/NAME): drop --enable_model_control"
                    )
                from ferry.protocols.sagemaker import SageMakerOptions

                # No model loads at start-up; the MME API and TargetModel load them.
                catalog = FixedCatalog([])
                file_system_poll_wait_seconds = 0
                sagemaker_options = SageMakerOptions(
                    handlers=_sagemaker_handlers(multi_model.model_dir, consent, extras)
                )
            else:
                catalog, sagemaker_options = _sagemaker_catalog(
                    sagemaker_model_dir.resolve(), consent, environment.default_model, extras
                )
            rest_api_port = _sagemaker_port(rest_api_port, environment.bind_to_port)
            grpc_port = _sagemaker_grpc_port(grpc_port, environment.grpc_port)
            intra_op_threads = intra_op_threads or environment.intra_op_threads
            inter_op_threads = inter_op_threads or environment.inter_op_threads
            if _is_default("rest_api_timeout_in_ms"):
                rest_api_timeout_in_ms = environment.request_timeout_seconds * 1000
            if _is_default("max_request_bytes"):
                max_request_bytes = SAGEMAKER_MAX_REQUEST_BYTES
        elif model_config_file is not None:
            catalog = ConfigFileCatalog(model_config_file, model_config_file_poll_wait_seconds)
        elif model_base_path is not None:
            catalog = FixedCatalog(
                [ModelSpec(model_name or DEFAULT_MODEL_NAME, _resolved(model_base_path))]
            )
        elif isinstance(root, S3Url):
            from ferry.repository.s3_source import S3RootCatalog  # needs boto3

            catalog = S3RootCatalog(root, object_store)
        elif root is not None:
            catalog = RootFolderCatalog(root.resolve())
        elif "MODEL_NAME" in os.environ or "MODEL_BASE_PATH" in os.environ:
            name = os.environ.get("MODEL_NAME", "model")
            base = parse_base_path(os.environ.get("MODEL_BASE_PATH", "/models")) / name
            catalog = FixedCatalog([ModelSpec(model_name or name, _resolved(base))])
        else:
            raise click.UsageError(
                "nothing to serve: give ROOT, --model_base_path, "
                "--model_config_file, or MODEL_NAME/MODEL_BASE_PATH"
            )
        batching = BatchingConfig(enabled=enable_batching, fill_under_load=batch_fill_under_load)
        if batching_parameters_file is not None:
            batching = load_batching_file(batching_parameters_file, batching)
        if sagemaker:
            batching = environment.batching_over(batching)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    # HTTPS on the REST port, and CORS by origin (checked now: bad files stop start-up).
    https = rest_tls.resolve(click.get_current_context(), sagemaker)
    cors = cors_flags.resolve(click.get_current_context(), tfs.rest_api_enable_cors_support)
    options = ServerOptions(
        host=host,
        rest_api_port=rest_api_port,
        grpc_port=grpc_port,
        file_system_poll_wait_seconds=file_system_poll_wait_seconds,
        version_settle_seconds=version_settle_seconds,
        max_version_labels_file_bytes=max_version_labels_file_bytes,
        max_request_bytes=max_request_bytes,
        max_tensor_bytes=max_tensor_bytes,
        max_uploaded_model_bytes=max_uploaded_model_bytes,
        rest_api_timeout_in_ms=rest_api_timeout_in_ms,
        enable_serialization_as_tensor_content=enable_serialization_as_tensor_content,
        drain_grace_seconds=drain_grace_seconds,
        dataplane=dataplane_flags.resolve(click.get_current_context()),
        ready_when=ReadyWhen(ready_when),
        manager=ManagerOptions(
            runtime=RuntimeOptions(
                intra_op_threads,
                inter_op_threads,
                allow_spinning,
                saved_model_tags=tfs.saved_model_tags,
                prefer_tflite_model=tfs.prefer_tflite_model,
            ),
            batching=batching,
            enable_warmup=enable_model_warmup,
            warmup_iterations=tfs.warmup_iterations,
            drain_timeout_seconds=unload_drain_timeout_seconds,
            model_defaults=ModelOptions(accelerate="" if accelerate == "none" else accelerate),
            consent=consent,
            allow_version_labels_for_unavailable_models=(
                tfs.allow_version_labels_for_unavailable_models
            ),
            triton_limits=TritonConfigLimits(max_triton_config_bytes, max_triton_label_file_bytes),
        ),
        sagemaker=sagemaker_options,
        multi_model=multi_model,
        auth_file=auth_file,
        http_limits=limits.HttpLimits(
            max_header_bytes=max_header_bytes,
            max_header_count=max_header_count,
            header_timeout_seconds=http_header_timeout_seconds,
            body_timeout_seconds=http_body_timeout_seconds,
            keep_alive_timeout_seconds=http_keep_alive_timeout_seconds,
            max_connections=max_connections,
        ),
        grpc_limits=limits.GrpcLimits(
            max_concurrent_streams=grpc_max_concurrent_streams,
            max_concurrent_rpcs=grpc_max_concurrent_rpcs,
            max_metadata_bytes=grpc_max_metadata_bytes,
            max_connection_idle_seconds=grpc_max_connection_idle_seconds,
            max_connections=grpc_max_connections,
        ),
        enable_model_control=enable_model_control,
        model_roots=_model_roots(model_roots),
        object_store=object_store,
        prometheus_path=tfs.prometheus_path,
        grpc_channel_arguments=tfs.grpc_channel_arguments,
        grpc_socket_path=tfs.grpc_socket_path,
        grpc_tls=rest_tls.grpc_tls_for(tfs.grpc_tls, https),
        rest_tls=https,
        cors=cors,
        rest_api_enable_cors_support=tfs.rest_api_enable_cors_support,
        enable_grpc_healthcheck_service=tfs.enable_grpc_healthcheck_service,
        v2_extensions=v2_extension_flags.resolve(click.get_current_context()),
        response_compression=response_encoding_flags.resolve(click.get_current_context()),
        observability=observability,
        enable_signature_method_name_check=tfs.enable_signature_method_name_check,
    )
    from ferry.auth.keys import KeyFileError

    try:
        server = FerryServer(catalog, options)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    server.run()
    sys.exit(0)


@main.command()
@click.argument("root", type=click.Path(file_okay=False, path_type=Path), default="models")
@click.option(
    "--only",
    multiple=True,
    type=click.Choice(["mlp_small", "mlp_large"]),
    help="Build just these examples (repeatable).",
)
@click.option("--force", is_flag=True, help="Rebuild examples that already exist.")
def examples(root: Path, only: tuple[str, ...], force: bool) -> None:
    """Build the bundled example models (mlp_small, mlp_large) under ROOT as version 1."""
    from ferry.examples import build_examples

    with working(f"building the example models under {root}"):
        written = build_examples(root, list(only) or None, force)
    for path in written:
        click.echo(f"wrote {path}")
    if not written:
        click.echo(f"examples already present under {root} (use --force to rebuild)")


def _model_roots(text: str | None) -> tuple[BasePath, ...]:
    """`--model_roots` parsed (empty: the server takes its start-up roots)."""
    from ferry.model_control import ROOTS_FLAG, parse_roots

    if text is None:
        return ()
    try:
        return parse_roots(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=ROOTS_FLAG) from None


def _execution_consent(
    allow_code: tuple[str, ...], allow_pickle: tuple[str, ...], sagemaker: bool
) -> ExecutionConsent:
    """The operator's consent from the flags and, in SageMaker mode, the environment
    (SageMaker's deployer sets the container's environment: it is the operator there)."""
    code, pickle = list(allow_code), list(allow_pickle)
    if sagemaker:
        code.append(os.environ.get(CODE_ENV, ""))
        pickle.append(os.environ.get(PICKLE_ENV, ""))
    try:
        consent = ExecutionConsent.from_flags(code, pickle)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow_code / --allow_pickle") from None
    if consent.code or consent.pickle:
        logging.getLogger(__name__).info("operator consent: %s", consent.describe())
    return consent


def _sagemaker_environment() -> SageMakerEnvironment:
    """The SageMaker container's variables (`ferry.sagemaker_env`), logged as read; a
    value the container refuses stops start-up, as it stops the container."""
    from ferry.sagemaker_env import SageMakerEnvError, read_environment

    try:
        environment = read_environment()
    except SageMakerEnvError as exc:
        raise click.ClickException(str(exc)) from None
    environment.log_notes()
    return environment


def _is_default(parameter: str) -> bool:
    """Whether a `ferry serve` flag was left at its default (SageMaker's env may set it)."""
    source = click.get_current_context().get_parameter_source(parameter)
    return source is click.core.ParameterSource.DEFAULT


def _sagemaker_catalog(
    model_dir: Path,
    consent: ExecutionConsent,
    default_model: str,
    extras: sagemaker_flags.SageMakerExtras,
) -> tuple[ModelCatalog, SageMakerOptions]:
    """The SageMaker model folder's catalog (checked now, so a bad folder or an unknown
    default model fails at start-up as in the container) and the default model."""
    from ferry.protocols.sagemaker import SageMakerOptions
    from ferry.repository.sagemaker_catalog import (
        SageMakerModelDirCatalog,
        models_in_sagemaker_dir,
    )

    found = models_in_sagemaker_dir(model_dir)
    if not found:
        logging.getLogger(__name__).warning(
            "no model version folders under %s yet: /ping answers 503 until one appears",
            model_dir,
        )
    from ferry.sagemaker_env import SageMakerEnvError, check_default_model

    try:
        check_default_model(default_model, [spec.name for spec in found], model_dir)
    except SageMakerEnvError as exc:
        raise click.ClickException(str(exc)) from None
    return SageMakerModelDirCatalog(model_dir), SageMakerOptions(
        default_model=default_model, handlers=_sagemaker_handlers(model_dir, consent, extras)
    )


def _sagemaker_handlers(
    model_dir: Path, consent: ExecutionConsent, extras: sagemaker_flags.SageMakerExtras
) -> InferenceHandlers | None:
    """`code/inference.py`'s handlers (code/requirements.txt installed first when the
    operator allows it); a refused or broken file, or a failed pip, stops start-up, as
    in the container."""
    from ferry.protocols.sagemaker_handlers import load_handlers

    try:
        return load_handlers(model_dir, consent, extras.requirements)
    except Exception as exc:
        raise click.ClickException(f"code/inference.py: {type(exc).__name__}: {exc}") from exc


def _sagemaker_port(rest_api_port: int, bind_to_port: int | None) -> int:
    """SAGEMAKER_BIND_TO_PORT (SageMaker's instruction, so it wins), else an explicit
    --rest_api_port, else 8080, the port SageMaker calls."""
    if bind_to_port is not None:
        return bind_to_port
    return SAGEMAKER_PORT if _is_default("rest_api_port") else rest_api_port


def _sagemaker_grpc_port(grpc_port: int, safe_range_port: int | None) -> int:
    """SAGEMAKER_SAFE_PORT_RANGE's first port (SageMaker's instruction, so it wins), else
    an explicit --port, else 9000, the container's TF Serving gRPC port."""
    if safe_range_port is not None:
        return safe_range_port
    return CONTAINER_GRPC_PORT if _is_default("grpc_port") else grpc_port


@main.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--version", "version", type=int, help="Version number (default: the next one).")
@click.option("--format", "format_", help="File format to write where several fit.")
def save(source: Path, model_dir: Path, version: int | None, format_: str | None) -> None:
    """Save a trained model (SOURCE: a model file or folder) as the next version of
    MODEL_DIR, atomically, after checking that ferry can load it."""
    from ferry.convert.save import SaveError
    from ferry.convert.save import save as save_model

    filter_native_logs()
    try:
        with working(f"saving {source} into {model_dir} and checking it loads"):
            written = save_model(source, model_dir, version=version, format=format_)
    except SaveError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {written}")


from ferry.auth.cli import keys  # noqa: E402 - registered after main's own commands

main.add_command(keys)

from ferry.convert.commands import lite, optimize  # noqa: E402 - light: click only
from ferry.edge_cli import edge  # noqa: E402

main.add_command(optimize)
main.add_command(lite)
main.add_command(edge)

from ferry.deploy import cli_storage  # noqa: E402 - light: click only, boto3 on use

main.add_command(cli_storage.package)
main.add_command(cli_storage.unpack)
main.add_command(cli_storage.push)
main.add_command(cli_storage.pull)

# Light: click only; boto3 and PyYAML load on use.
from ferry.deploy import cli_kubernetes, cli_sagemaker  # noqa: E402

cli_sagemaker.deploy.add_command(cli_kubernetes.deploy_kubernetes)
cli_sagemaker.deploy.add_command(cli_kubernetes.deploy_kserve)
main.add_command(cli_sagemaker.deploy)
main.add_command(cli_sagemaker.endpoints)
main.add_command(cli_sagemaker.invoke)

# Last, so that every verb and flag registered above gets them: `ferry serve`'s flags
# from --config and FERRY_* (ferry.cli_config), and both spellings of every flag.
cli_config.config_option(serve)
cli_config.read_environment(serve)
add_spelling_aliases(main)

if __name__ == "__main__":
    main()
