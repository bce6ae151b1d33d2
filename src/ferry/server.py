"""Wires storage, manager, protocols and metrics into one server process.

One asyncio event loop (uvloop) serves HTTP through uvicorn with the httptools
parser (chosen by measurement: see docs/serving.md; ferry.protocols.http_limits adds head
limits, read deadlines and a connection limit) and gRPC through grpc.aio, so
requests of every protocol meet in the same batch queues. Model runs happen on
the batch queues' worker threads, never on the event loop. SIGTERM/SIGINT stop
accepting connections, finish in-flight requests, unload the models and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferry.auth.keys import KeyStore
from ferry.auth.middleware import Authenticator, AuthMetrics, GrpcAuth, HttpAuth
from ferry.dataplane.flags import Dataplane, DataplaneOptions
from ferry.drain_grace import DrainGrace
from ferry.errors import FerryError, ListenError
from ferry.grpc_listen import grpc_addresses, grpc_server_arguments, grpc_tls_credentials
from ferry.inference import InferenceService
from ferry.manager import ManagerOptions, ModelManager
from ferry.metrics import PROMETHEUS_CONTENT_TYPE, PROMETHEUS_PATH, Metrics
from ferry.model_control import ModelControl
from ferry.observability_flags import ObservabilityOptions
from ferry.protocols.cors import CorsApp, CorsOriginsApp, CorsPolicy
from ferry.protocols.dashboard import Dashboard
from ferry.protocols.grpc_health import GrpcHealth
from ferry.protocols.http_limits import enforce_deadlines, limited_protocol, sweep_interval
from ferry.protocols.http_util import Receive, Scope, Send
from ferry.protocols.https_accept import https_protocol
from ferry.protocols.openapi import OpenApi
from ferry.protocols.request_log import GrpcRequestId, RequestIdApp
from ferry.protocols.response_encoding import ResponseCompression
from ferry.protocols.rest_answers import error_parts
from ferry.protocols.sagemaker import INVOCATIONS_PATH, SageMakerInvocations, SageMakerOptions
from ferry.protocols.sagemaker_handlers import LoopbackAddress
from ferry.protocols.sagemaker_mme import MODELS_PREFIX, MultiModelEndpoint, MultiModelOptions
from ferry.protocols.sagemaker_proxy import TfsProxyPath
from ferry.protocols.sagemaker_runtime import RUNTIME_PREFIX, SageMakerRuntime
from ferry.protocols.shared_memory import SharedMemoryRegistry
from ferry.protocols.tfserving_grpc import TFServingGrpc
from ferry.protocols.tfserving_rest import TFServingRest
from ferry.protocols.v2_extension_flags import V2ExtensionOptions
from ferry.protocols.v2_grpc import V2Grpc
from ferry.protocols.v2_models import V2Models
from ferry.protocols.v2_rest import V2Rest
from ferry.protocols.v2_shared_memory_api import SharedMemoryApi
from ferry.readiness import READY, Phase, Readiness, ReadyWhen
from ferry.repository.catalog import ModelCatalog
from ferry.repository.label_file import DEFAULT_MAX_VERSION_LABELS_FILE_BYTES
from ferry.repository.location import BasePath, ObjectStoreOptions
from ferry.repository.mme_cache import LoadedModelCache
from ferry.repository.uploads import DEFAULT_MAX_UPLOADED_BYTES, ModelUploads
from ferry.repository.watcher import RepositoryWatcher
from ferry.rest_tls import RestTls
from ferry.served_version import VersionState
from ferry.tensor_limits import DEFAULT_MAX_REQUEST_BYTES, RequestLimits
from ferry.tfserving_flags import GrpcTls
from ferry.tracing import Tracer
from ferry.transport_limits import (
    GrpcLimits,
    HttpLimits,
    raise_open_file_limit,
    resolve_connection_limits,
)

log = logging.getLogger(__name__)

# Python's default is a young-generation collection every 700 new container objects.
# A request allocates a few hundred (dicts, lists, coroutines, futures), so the collector
# ran every few requests and a full collection every few hundred. Measured: about 12 µs
# of the event loop's ~75 µs per mlp_small request, 10-13 % of c64 throughput.
GC_THRESHOLDS = (10_000, 20, 20)


def tune_garbage_collector() -> None:
    """Collect less often, and never look at what start-up created again.

    `gc.freeze()` moves every object alive now (modules, classes, functions: hundreds of
    thousands with onnxruntime, numpy, grpc and botocore imported) out of the
    collector's sight, so full collections walk only what serving created since.
    Request handling makes few reference cycles, and the manager collects explicitly
    after unloading a version (so reloads free their memory at once), so rarer
    collections cost no memory growth; the 50-reload RSS test checks it."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass(frozen=True)
class ServerOptions:
    """Everything `ferry serve` can set; defaults follow TF Serving where it has one."""

    host: str = "0.0.0.0"
    rest_api_port: int = 8501
    grpc_port: int = 8500
    file_system_poll_wait_seconds: float = 2.0
    version_settle_seconds: float = 0.5
    # A model's version_labels.json larger than this is refused (repository.label_file).
    max_version_labels_file_bytes: int = DEFAULT_MAX_VERSION_LABELS_FILE_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # Decoded input tensors of one request (0: 4x max_request_bytes; ferry.tensor_limits).
    max_tensor_bytes: int = 0
    # Model files sent in V2 load requests, all together (ferry.repository.uploads).
    max_uploaded_model_bytes: int = DEFAULT_MAX_UPLOADED_BYTES
    rest_api_timeout_in_ms: int = 30_000
    # gRPC Predict outputs in tensor_content, not the typed *_val fields (TF Serving's flag).
    enable_serialization_as_tensor_content: bool = False
    manager: ManagerOptions = field(default_factory=ManagerOptions)
    # s3:// model paths: endpoint and local download cache.
    object_store: ObjectStoreOptions = field(default_factory=ObjectStoreOptions)
    # `ferry serve --sagemaker`: add /ping and /invocations (the REST APIs stay served).
    sagemaker: SageMakerOptions | None = None
    # `ferry serve --auth FILE`: SigV4 and bearer-token keys for every API (ferry.auth).
    auth_file: Path | None = None
    # Connection limits and read deadlines (ferry.transport_limits).
    http_limits: HttpLimits = field(default_factory=HttpLimits)
    grpc_limits: GrpcLimits = field(default_factory=GrpcLimits)
    # `--enable_model_control`: the admin APIs (config reload, V2 load/unload) answer;
    # a reload may read only under `model_roots` (empty: the catalog's start-up roots).
    enable_model_control: bool = False
    model_roots: tuple[BasePath, ...] = ()
    # TF Serving's flags (ferry.tfserving_flags): the Prometheus path (None: not served),
    # extra gRPC server arguments, a UNIX socket for gRPC too, TLS for gRPC.
    prometheus_path: str | None = PROMETHEUS_PATH
    grpc_channel_arguments: tuple[tuple[str, int | str], ...] = ()
    grpc_socket_path: str = ""
    grpc_tls: GrpcTls | None = None
    # `--rest_api_enable_cors_support`: TF Serving's CORS headers (ferry.protocols.cors).
    rest_api_enable_cors_support: bool = False
    # `--cors_origins` and companions (ferry.protocols.cors_flags); given, it decides.
    cors: CorsPolicy | None = None
    # `--ssl_certfile` and companions: HTTPS on the REST port (ferry.rest_tls).
    rest_tls: RestTls | None = None
    # `--enable_grpc_healthcheck_service`: grpc.health.v1 Check (ferry.protocols.grpc_health).
    enable_grpc_healthcheck_service: bool = False
    # Triton's shared memory and streaming limits (ferry.protocols.v2_extension_flags).
    v2_extensions: V2ExtensionOptions = field(default_factory=V2ExtensionOptions)
    # `--http_response_compression` and companions (ferry.protocols.response_encoding).
    response_compression: ResponseCompression = field(default_factory=ResponseCompression)
    # `--sagemaker` with SAGEMAKER_MULTI_MODEL=true: the MME API (ferry.protocols.sagemaker_mme).
    multi_model: MultiModelOptions | None = None
    # `--enable_signature_method_name_check`: signatures must declare the method called.
    enable_signature_method_name_check: bool = False
    # `--drain_grace_seconds`: after SIGTERM, answer "not ready" but keep serving this long
    # before the listeners close, so balancers see readiness fail first (cluster.md).
    drain_grace_seconds: float = 0.0
    # `--ready_when all|any`: which models must serve for readiness (ferry.readiness).
    ready_when: ReadyWhen = ReadyWhen.ALL
    # `--log_format`, `--access_log`, `--otlp_endpoint` (ferry.observability_flags).
    observability: ObservabilityOptions = field(default_factory=ObservabilityOptions)
    # `--dataplane auto|python|rust`: who owns the REST socket (ferry.dataplane).
    dataplane: DataplaneOptions = field(default_factory=DataplaneOptions)


class FerryServer:
    """A configured server; `serve()` runs it until a signal asks it to stop."""

    def __init__(self, catalog: ModelCatalog, options: ServerOptions) -> None:
        self.options = options
        # What one request may take, shared by every protocol (ferry.tensor_limits).
        self.request_limits = RequestLimits(options.max_request_bytes, options.max_tensor_bytes)
        self.metrics = Metrics()
        self.manager = ModelManager(options.manager, self.metrics)
        self.watcher = RepositoryWatcher(
            catalog,
            self.manager,
            options.file_system_poll_wait_seconds,
            options.version_settle_seconds,
            options.object_store,
            options.max_version_labels_file_bytes,
        )
        # OpenTelemetry is imported only with an endpoint (ferry.tracing).
        endpoint = options.observability.otlp_endpoint
        self.tracer = Tracer(endpoint) if endpoint else None
        if self.tracer is not None:
            self.tracer.start()
        self.inference = InferenceService(
            self.manager, self.metrics, options.rest_api_timeout_in_ms / 1000, self.tracer
        )
        self.model_control = ModelControl(
            options.enable_model_control,
            options.model_roots or (catalog.roots() if options.enable_model_control else ()),
        )
        self._shutting_down = threading.Event()
        # Read (and permission-checked) now, so a bad key file stops start-up.
        self.authenticator = (
            Authenticator(KeyStore(options.auth_file), AuthMetrics(self.metrics.registry))
            if options.auth_file is not None
            else None
        )
        # Client-registered shared memory regions, shared by V2 REST and gRPC.
        self.shared_memory = SharedMemoryApi(
            SharedMemoryRegistry(options.v2_extensions.shared_memory)
        )
        # Model files sent in V2 load requests, shared by V2 REST and gRPC.
        self.uploads = ModelUploads(options.max_uploaded_model_bytes)
        # Outermost: refusals by --auth and CORS answers get a request id too.
        self.app = RequestIdApp(self._build_app(), options.observability.access_log)

    def readiness(self) -> Readiness:
        """The one readiness verdict of every health API (ferry.readiness)."""
        if self._shutting_down.is_set():
            return Readiness(Phase.DRAINING, "shutting down")
        verdict = self.manager.is_ready(self.options.ready_when)
        if self.options.multi_model is not None and verdict.phase is Phase.MODELS:
            return READY  # an MME loads its models on request: ready with none, as SageMaker's
        return verdict

    def is_ready(self) -> bool:
        return self.readiness().ready

    def is_started(self) -> bool:
        """Past the first scan and not draining: requests may be tried (each names its
        model; one that does not serve answers its own error)."""
        return self.readiness().phase in (Phase.READY, Phase.MODELS)

    def _build_app(self) -> HttpApp | TfsProxyPath | HttpAuth | CorsApp | CorsOriginsApp:
        rest = TFServingRest(
            self.manager,
            self.inference,
            self.request_limits,
            check_method_names=self.options.enable_signature_method_name_check,
        )
        v2 = V2Rest(
            self._v2_models(),
            self.inference,
            self.request_limits,
            self.shared_memory,
            self.options.response_compression,
        )

        async def prometheus(request: Request) -> Response:
            return Response(self.metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

        routes = [*rest.routes(), *v2.routes()]
        if self.options.prometheus_path is not None:
            routes.append(Route(self.options.prometheus_path, prometheus, methods=["GET"]))
        routes.extend(Dashboard(self.manager, self.metrics).routes())
        fast_posts: list[tuple[str, PostHandler]] = [
            ("/v1/", rest.handle_post),
            ("/v2/", v2.handle_post),
        ]
        sagemaker = SageMakerInvocations(
            self.manager,
            self.inference,
            self.request_limits,
            self.options.sagemaker or SageMakerOptions(),
            self.is_ready,
            LoopbackAddress(self.options.host, self.options.rest_api_port, self.options.grpc_port),
        )
        # SageMaker's runtime API (InvokeEndpoint) is always served: boto3's
        # sagemaker-runtime client works against any ferry server.
        runtime = SageMakerRuntime(self.manager, sagemaker, self.is_started)
        fast_posts.append((RUNTIME_PREFIX, runtime.handle_post))
        multi_model = self._multi_model_endpoint(sagemaker)
        if multi_model is not None:
            runtime.multi_model = multi_model
            routes.extend(multi_model.routes())
            fast_posts.append((INVOCATIONS_PATH, multi_model.handle_invocations))
            fast_posts.append((MODELS_PREFIX, multi_model.handle_invoke))
        elif self.options.sagemaker is not None:
            routes.extend(sagemaker.routes())
            fast_posts.append((INVOCATIONS_PATH, sagemaker.handle_post))
        # Last: the spec lists what the routes and prefixes above answer.
        prefixes = [prefix for prefix, _ in fast_posts]
        routes.extend(OpenApi(routes, prefixes, self.options.prometheus_path).routes())
        # Kept for ferry.protocols.openapi's tests: the routes and prefixes it serves.
        self.http_app = HttpApp(fast_posts, Starlette(routes=routes))
        app: HttpApp | TfsProxyPath | HttpAuth = self.http_app
        if self.options.sagemaker is not None:
            app = TfsProxyPath(app)  # the container's /tfs/v1/ path to TF Serving's REST API
        if self.authenticator is not None:
            app = HttpAuth(app, self.authenticator, self.options.max_request_bytes)
        # Outside --auth: a browser's preflight carries no credentials and runs nothing.
        if self.options.cors is not None:
            return CorsOriginsApp(app, self.options.cors)
        if self.options.rest_api_enable_cors_support:
            return CorsApp(app, error_parts)
        return app

    def _multi_model_endpoint(self, sagemaker: SageMakerInvocations) -> MultiModelEndpoint | None:
        """The MME API over a cache of loaded models (None on a single-model server)."""
        options = self.options.multi_model
        if options is None:
            return None
        self.model_cache = LoadedModelCache(self.manager, options.limits)
        return MultiModelEndpoint(
            self.model_cache, sagemaker, options, self.options.object_store, self.is_ready
        )

    def grpc_handlers(self) -> list[grpc.GenericRpcHandler]:
        """The gRPC services of every protocol module, served on `--port`."""
        return [
            *TFServingGrpc(
                self.manager,
                self.inference,
                self.watcher,
                self.model_control,
                self.request_limits,
                outputs_as_tensor_content=self.options.enable_serialization_as_tensor_content,
                check_method_names=self.options.enable_signature_method_name_check,
            ).handlers(),
            *V2Grpc(
                self._v2_models(),
                self.inference,
                self.request_limits,
                self.shared_memory,
                self.options.v2_extensions.max_in_flight_per_stream,
            ).handlers(),
            *(
                GrpcHealth(self.is_ready).handlers()
                if self.options.enable_grpc_healthcheck_service
                else []
            ),
        ]

    def _v2_models(self) -> V2Models:
        """The V2 model queries (stateless, so REST and gRPC may each have one)."""
        return V2Models(
            self.manager,
            self.watcher,
            self.readiness,
            self.model_control,
            shared_memory=self.options.v2_extensions.shared_memory.enabled,
            uploads=self.uploads,
        )

    async def _start_grpc(self, limits: GrpcLimits) -> grpc.aio.Server | None:
        handlers = self.grpc_handlers()
        addresses = grpc_addresses(
            self.options.host, self.options.grpc_port, self.options.grpc_socket_path
        )
        if not addresses or not handlers:
            return None
        server = grpc.aio.server(
            # The request id first, so auth refusals are logged with it.
            interceptors=[
                GrpcRequestId(),
                *([GrpcAuth(self.authenticator)] if self.authenticator else []),
            ],
            options=grpc_server_arguments(
                limits.server_options(self.options.max_request_bytes),
                self.options.grpc_channel_arguments,
            ),
            # Beyond it grpc answers RESOURCE_EXHAUSTED at once instead of queueing.
            maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
        )
        server.add_generic_rpc_handlers(handlers)
        tls = self.options.grpc_tls
        for address in addresses:
            try:
                if tls is None:
                    server.add_insecure_port(address)
                else:
                    server.add_secure_port(address, grpc_tls_credentials(tls))
            except RuntimeError as exc:  # grpc's only word for it: "Failed to bind"
                raise ListenError(
                    f"gRPC cannot listen on {address}: in use, or not allowed "
                    "(--port sets the port; --port 0 turns gRPC off)"
                ) from exc
        await server.start()
        notes = [" (--auth)" if self.authenticator else "", " (TLS)" if tls else ""]
        log.info("gRPC APIs on %s%s", ", ".join(addresses), "".join(notes))
        return server

    async def _first_loads(self) -> bool:
        """Start the watcher and wait until every configured model's first load was tried
        (successfully or not); False when a signal asked to stop meanwhile.

        TF Serving opens its ports only then: its clients (its own test harness among
        them) take an open port for loaded models and would get NOT_FOUND before. Nothing
        is listening meanwhile, not even the health endpoints: SageMaker and
        `wait_ready`-style pollers treat a refused connection as "not yet", as they treat
        a 503, while a TF Serving client would take any answer for readiness."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        handled = (signal.SIGINT, signal.SIGTERM)
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            for sig in handled:
                loop.add_signal_handler(sig, stop.set)
        started = time.monotonic()
        log.info("loading the configured models; the ports open when each was tried")
        self.watcher.start()
        loaded = asyncio.ensure_future(asyncio.to_thread(self.manager.initial_sync_done.wait))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({loaded, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if in_main:
                for sig in handled:
                    loop.remove_signal_handler(sig)
        if stop.is_set():
            self._shutting_down.set()
            log.info("stopping before the first loads finished")
            return False
        log.info(
            "first load of every configured model tried in %.1fs: %s",
            time.monotonic() - started,
            first_load_summary(self.manager),
        )
        return True

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; returns after a graceful drain."""
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is absent on Windows
            asyncio.run(self.serve())
        else:
            uvloop.run(self.serve())

    async def serve(self) -> None:
        tune_garbage_collector()
        http_limits, grpc_limits = resolve_connection_limits(
            self.options.http_limits, self.options.grpc_limits, raise_open_file_limit()
        )
        if not await self._first_loads():
            await asyncio.to_thread(self._stop_models)
            return
        grpc_server = await self._start_grpc(grpc_limits)
        loop = asyncio.get_running_loop()
        grpc_stopped: asyncio.Task | None = None

        def on_signal() -> None:
            nonlocal grpc_stopped
            self._shutting_down.set()
            if grpc_server is not None and grpc_stopped is None:
                # Stop taking RPCs now; those in flight get the drain timeout to finish.
                grace = self.options.manager.drain_timeout_seconds
                grpc_stopped = loop.create_task(grpc_server.stop(grace))

        if self.options.dataplane.chosen() is Dataplane.RUST:
            try:
                await self._serve_rust_front(http_limits, on_signal)
            finally:
                await self._finish(on_signal, lambda: grpc_stopped)
            return
        config = uvicorn.Config(
            self.app,
            host=self.options.host,
            port=self.options.rest_api_port,
            # uvicorn's httptools protocol with head limits, read deadlines and a
            # connection limit (ferry.protocols.http_limits).
            # With --ssl_certfile ferry does TLS in the protocol (under these limits too).
            http=(
                https_protocol(http_limits, self.options.rest_tls.ssl_context())
                if self.options.rest_tls is not None
                else limited_protocol(http_limits)
            ),
            timeout_keep_alive=http_limits.keep_alive_timeout_seconds,
            loop="none",
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            date_header=False,
            proxy_headers=False,  # ferry reports no client addresses; saves time per request
        )
        server = _GracefulServer(
            config,
            on_signal=lambda: loop.call_soon_threadsafe(on_signal),
            deadline_sweep=sweep_interval(http_limits),
            on_not_ready=self._shutting_down.set,
            grace_seconds=self.options.drain_grace_seconds,
        )
        scheme = "https" if self.options.rest_tls is not None else "http"
        log.info("REST API on %s://%s:%d", scheme, self.options.host, self.options.rest_api_port)
        try:
            await server.serve()
        except SystemExit as exc:
            # uvicorn logs the bind error (address in use, permission) and exits with
            # STARTUP_FAILURE; the `ferry` command prints this as its one Error line.
            if exc.code != uvicorn.config.STARTUP_FAILURE:
                raise
            raise ListenError.rest_port(self.options.host, self.options.rest_api_port) from None
        finally:
            await self._finish(on_signal, lambda: grpc_stopped)

    async def _finish(
        self, on_signal: Callable[[], None], grpc_stopped: Callable[[], asyncio.Task | None]
    ) -> None:
        """After the REST listener has stopped: gRPC's drain, the models, the traces."""
        on_signal()
        stopping = grpc_stopped()
        if stopping is not None:
            await stopping
        log.info("draining: unloading models")
        await asyncio.to_thread(self._stop_models)
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.shutdown)  # flushes the queued spans
        log.info("stopped")

    async def _serve_rust_front(
        self, http_limits: HttpLimits, on_signal: Callable[[], None]
    ) -> None:
        """Serve REST through the Rust front (ferry.dataplane.front) until SIGTERM/SIGINT,
        with the same drain as uvicorn's path: the first signal with a drain grace turns
        readiness off; the grace's end (or a second signal) stops accepting, and requests
        in flight get the drain timeout to finish."""
        from ferry.dataplane.front import RustHttpFront

        front = RustHttpFront(
            self.app,
            self.options.host,
            self.options.rest_api_port,
            http_limits,
            self.options.max_request_bytes,
            self.options.dataplane.thread_count(),
            self.options.rest_tls,
        )
        if self.authenticator is not None:
            self.authenticator.publish_to(front.publish_keys)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        grace = DrainGrace(
            self.options.drain_grace_seconds,
            on_not_ready=self._shutting_down.set,
            drain=stop.set,
            schedule=loop.call_later,
        )
        handled = (signal.SIGINT, signal.SIGTERM)
        for sig in handled:
            loop.add_signal_handler(sig, grace.on_exit_signal)
        front.start()
        log.info(
            "REST API on %s://%s:%d (the Rust front, %d threads)",
            "https" if self.options.rest_tls is not None else "http",
            self.options.host,
            front.port,
            self.options.dataplane.thread_count(),
        )
        try:
            await stop.wait()
            self._shutting_down.set()
            on_signal()
            await front.drain(self.options.manager.drain_timeout_seconds)
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            front.stop()

    def _stop_models(self) -> None:
        self.watcher.stop()
        self.manager.shutdown()
        self.shared_memory.registry.close()
        self.uploads.close()


def first_load_summary(manager: ModelManager) -> str:
    """One line on how the first loads went: how many models serve, and each one that
    does not with its error. (TF Serving exits when a configured model fails its first
    load; ferry serves the others and reports the failure in that model's status.)"""
    serving, failing = 0, []
    for name in manager.model_names():
        try:
            records = manager.version_status(name)
        except FerryError as exc:
            failing.append(f"{name} ({exc})")
            continue
        if any(r.state is VersionState.AVAILABLE for r in records):
            serving += 1
        else:
            errors = [r.error_message for r in records if r.error_message]
            failing.append(f"{name} ({errors[0] if errors else 'no version loaded'})")
    text = f"{serving} model(s) available"
    return text + (f"; not available: {', '.join(failing)}" if failing else "")


PostHandler = Callable[[Scope, Receive, Send], Awaitable[None]]


class HttpApp:
    """The top-level ASGI app. POSTs under a registered path prefix (inference) go straight
    to that protocol's plain-ASGI handler; everything else goes through Starlette's routing.
    Prefixes match case-insensitively (TF Serving matches `/v1/` so)."""

    def __init__(self, fast_posts: list[tuple[str, PostHandler]], routes: Starlette) -> None:
        self._fast_posts = [(prefix.lower(), handler) for prefix, handler in fast_posts]
        self._routes = routes

    @property
    def post_prefixes(self) -> list[str]:
        """The path prefixes whose POSTs skip routing (what ferry.protocols.openapi lists)."""
        return [prefix for prefix, _ in self._fast_posts]

    @property
    def routes(self) -> list:
        """The Starlette routes of everything else."""
        return list(self._routes.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            for prefix, handler in self._fast_posts:
                if path[: len(prefix)].lower() == prefix:
                    await handler(scope, receive, send)
                    return
        await self._routes(scope, receive, send)


class _GracefulServer(uvicorn.Server):
    """uvicorn's server, minus re-raising the caught signal after shutdown: ferry finishes
    its own drain (unloading models) and then exits with status 0."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_signal,
        deadline_sweep: float,
        on_not_ready: Callable[[], None] = lambda: None,
        grace_seconds: float = 0.0,
    ) -> None:
        super().__init__(config)
        self._on_signal = on_signal
        self._deadline_sweep = deadline_sweep
        self._deadlines: asyncio.Task | None = None
        self._last_signal: tuple[int, object] = (signal.SIGTERM, None)
        self._grace = DrainGrace(grace_seconds, on_not_ready, self._drain, _start_timer)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Expires connections past their head or body deadline (LimitedHttpToolsProtocol).
        self._deadlines = asyncio.create_task(
            enforce_deadlines(self.server_state.connections, self._deadline_sweep)
        )

    def _log_started_message(self, listeners) -> None:
        """Not logged: ferry logs its own "REST API on ..." line, and uvicorn's would say
        http:// on an HTTPS port (ferry does TLS in its protocol, ferry.rest_tls)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._deadlines is not None:
            self._deadlines.cancel()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame) -> None:
        """SIGTERM/SIGINT: the drain grace's rule (ferry.drain_grace) decides when the
        drain starts; the drain is uvicorn's own exit, after gRPC's stop is scheduled."""
        self._last_signal = (sig, frame)
        self._grace.on_exit_signal()

    def _drain(self) -> None:
        self._on_signal()
        super().handle_exit(*self._last_signal)


def _start_timer(seconds: float, callback: Callable[[], None]) -> threading.Timer:
    """A started daemon timer: the uvicorn front's signal handler runs on the main thread,
    outside the event loop."""
    timer = threading.Timer(seconds, callback)
    timer.daemon = True
    timer.start()
    return timer
