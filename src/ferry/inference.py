"""The one request path every protocol uses: resolve the version, check, queue, await.

Protocols decode wire bytes and hand a `decode` callback that turns them into a
signature name and input arrays once the version (and so its signatures) is known.
Everything after that (the counted reference that keeps the version loaded, the
shared batch queue, the deadline, metrics) happens here, the same way for all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from prometheus_client import Gauge, Histogram

from ferry.errors import FerryError
from ferry.logging_setup import request_id
from ferry.manager import ModelManager
from ferry.metrics import Metrics
from ferry.result_relay import ResultRelay
from ferry.served_version import ServedVersion
from ferry.tracing import RequestTrace, Tracer

Tensors = dict[str, np.ndarray]
# The metrics label for requests naming a model that does not exist.
UNKNOWN_MODEL = "_unknown"
Decoder = Callable[[ServedVersion], tuple[str, Tensors]]


@dataclass(frozen=True)
class Prediction:
    """The result of one request: which version answered and its output arrays."""

    model: str
    version: int
    signature_name: str
    outputs: Tensors


class InferenceService:
    """Runs requests against the manager's versions. Call from the server's event loop."""

    def __init__(
        self,
        manager: ModelManager,
        metrics: Metrics,
        timeout_seconds: float,
        tracer: Tracer | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.timeout_seconds = timeout_seconds
        # --otlp_endpoint (ferry.tracing); None: no spans, one check per request.
        self.tracer = tracer
        self._relays: dict[asyncio.AbstractEventLoop, ResultRelay] = {}
        # Metric children of the success path, by label values: `labels()` costs a lock
        # and tuple building per call, about 2 µs of every request. Label values come
        # from served models only, so these stay as small as the metrics. The per-version
        # counter lives on the ServedVersion (`ok_counters`): its series is removed when
        # the version stops serving, and a cached child would outlive it.
        self._in_flight: dict[str, Gauge] = {}
        self._latency: dict[tuple[str, str], Histogram] = {}

    def _relay(self) -> ResultRelay:
        loop = asyncio.get_running_loop()
        relay = self._relays.get(loop)
        if relay is None:
            relay = self._relays[loop] = ResultRelay(loop)
        return relay

    async def predict(
        self,
        api: str,
        model: str,
        version: int | None,
        label: str | None,
        decode: Decoder,
        timeout_seconds: float | None = None,
        trace: RequestTrace | None = None,
    ) -> Prediction:
        """Run one request; raises FerryError subclasses with the reason.

        `decode` runs before the request is queued, so a request that does not fit
        the signature fails alone and never joins (or breaks) a batch. `trace` is
        `_traced`'s: with tracing on, the request comes back here inside its span (off,
        this costs one check and no extra coroutine).
        """
        if trace is None and self.tracer is not None:
            return await self._traced(api, model, version, label, decode, timeout_seconds)
        started = time.monotonic()
        timeout = timeout_seconds or self.timeout_seconds
        try:
            served = self.manager.acquire(model, version, label)
        except FerryError as exc:
            # Label unknown names as such: client-chosen names must not grow the metrics.
            known = model if self.manager.has_model(model) else UNKNOWN_MODEL
            self.metrics.requests.labels(known, "-", api, exc.code.name).inc()
            raise
        served_version = str(served.version)
        in_flight = self._in_flight.get(model)
        if in_flight is None:
            in_flight = self._in_flight[model] = self.metrics.in_flight.labels(model)
        in_flight.inc()
        try:
            if trace is None:
                signature_name, inputs = decode(served)
                future = served.queue(signature_name).submit(inputs, started + timeout)
            else:
                with trace.decode_span():
                    signature_name, inputs = decode(served)
                trace.start_queue()
                future = served.queue(signature_name).submit(inputs, started + timeout, trace)
            outputs = await self._relay().wait(future, timeout)
        except FerryError as exc:
            self.metrics.requests.labels(model, served_version, api, exc.code.name).inc()
            served.stats.record_request(False, time.monotonic() - started)
            raise
        except asyncio.CancelledError:
            # The client went away (or its gRPC deadline passed first): count it too.
            self.metrics.requests.labels(model, served_version, api, "CANCELLED").inc()
            served.stats.record_request(False, time.monotonic() - started)
            raise
        finally:
            served.release()
            in_flight.dec()
        elapsed = time.monotonic() - started
        ok = served.ok_counters.get(api)
        if ok is None:
            ok = served.ok_counters[api] = self.metrics.requests.labels(
                model, served_version, api, "OK"
            )
        ok.inc()
        latency = self._latency.get((model, api))
        if latency is None:
            latency = self._latency[model, api] = self.metrics.request_latency.labels(model, api)
        latency.observe(elapsed)
        served.stats.record_request(True, elapsed)
        return Prediction(model, served.version, signature_name, outputs)

    async def _traced(
        self,
        api: str,
        model: str,
        version: int | None,
        label: str | None,
        decode: Decoder,
        timeout_seconds: float | None,
    ) -> Prediction:
        """`predict` inside the request's span (ferry.tracing)."""
        assert self.tracer is not None
        trace = self.tracer.request(api, model, request_id.get())
        try:
            prediction = await self.predict(
                api, model, version, label, decode, timeout_seconds, trace
            )
        except BaseException as exc:
            trace.end(None, f"{type(exc).__name__}: {exc}")
            raise
        trace.end(prediction.version, None)
        return prediction
