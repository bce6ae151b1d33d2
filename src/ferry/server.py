"""Wires storage, manager, protocols and metrics into one server process.

One asyncio event loop (uvloop) serves HTTP through uvicorn with the httptools
parser (chosen by measurement: see the README). Model runs happen on the batch
queues' worker threads, never on the event loop. SIGTERM/SIGINT stop accepting
connections, finish in-flight requests, unload the models and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferry.inference import InferenceService
from ferry.manager import ManagerOptions, ModelManager
from ferry.metrics import PROMETHEUS_CONTENT_TYPE, PROMETHEUS_PATH, Metrics
from ferry.protocols.health import health_routes
from ferry.protocols.http_util import Receive, Scope, Send
from ferry.protocols.tfserving_rest import TFServingRest
from ferry.repository.catalog import ModelCatalog
from ferry.repository.watcher import RepositoryWatcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerOptions:
    """Everything `ferry serve` can set; defaults follow TF Serving where it has one."""

    host: str = "0.0.0.0"
    rest_api_port: int = 8501
    grpc_port: int = 8500
    file_system_poll_wait_seconds: float = 2.0
    version_settle_seconds: float = 0.5
    max_request_bytes: int = 64 * 1024 * 1024
    rest_api_timeout_in_ms: int = 30_000
    manager: ManagerOptions = field(default_factory=ManagerOptions)


class FerryServer:
    """A configured server; `serve()` runs it until a signal asks it to stop."""

    def __init__(self, catalog: ModelCatalog, options: ServerOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        self.manager = ModelManager(options.manager, self.metrics)
        self.watcher = RepositoryWatcher(
            catalog,
            self.manager,
            options.file_system_poll_wait_seconds,
            options.version_settle_seconds,
        )
        self.inference = InferenceService(
            self.manager, self.metrics, options.rest_api_timeout_in_ms / 1000
        )
        self._shutting_down = threading.Event()
        self.app = self._build_app()

    def is_ready(self) -> bool:
        return self.manager.is_ready() and not self._shutting_down.is_set()

    def _build_app(self) -> ASGIApp:
        rest = TFServingRest(self.manager, self.inference, self.options.max_request_bytes)

        async def prometheus(request: Request) -> Response:
            return Response(self.metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

        routes = [
            *rest.routes(),
            *health_routes(self.is_ready),
            Route(PROMETHEUS_PATH, prometheus, methods=["GET"]),
        ]
        return _InferenceFirst(rest, Starlette(routes=routes))

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT; returns after a graceful drain."""
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is absent on Windows
            asyncio.run(self.serve())
        else:
            uvloop.run(self.serve())

    async def serve(self) -> None:
        self.watcher.start()
        config = uvicorn.Config(
            self.app,
            host=self.options.host,
            port=self.options.rest_api_port,
            http="httptools",
            loop="none",
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            date_header=False,
        )
        server = _GracefulServer(config, on_signal=self._shutting_down.set)
        log.info("REST API on http://%s:%d", self.options.host, self.options.rest_api_port)
        try:
            await server.serve()
        finally:
            self._shutting_down.set()
            log.info("draining: unloading models")
            await asyncio.to_thread(self._stop_models)
            log.info("stopped")

    def _stop_models(self) -> None:
        self.watcher.stop()
        self.manager.shutdown()


class _InferenceFirst:
    """The top-level ASGI app: POSTs under /v1/ (inference) go straight to the REST
    protocol's plain-ASGI handler; everything else goes through Starlette's routing."""

    def __init__(self, rest: TFServingRest, routes: Starlette) -> None:
        self._rest = rest
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"][:4].lower() == "/v1/"
        ):
            await self._rest.handle_post(scope, receive, send)
        else:
            await self._routes(scope, receive, send)


ASGIApp = _InferenceFirst


class _GracefulServer(uvicorn.Server):
    """uvicorn's server, minus re-raising the caught signal after shutdown: ferry finishes
    its own drain (unloading models) and then exits with status 0."""

    def __init__(self, config: uvicorn.Config, on_signal) -> None:
        super().__init__(config)
        self._on_signal = on_signal

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
        self._on_signal()
        super().handle_exit(sig, frame)
