"""OpenTelemetry traces of inference requests, exported over OTLP/HTTP (off by default).

Spans: per request `ferry.request` (model, version, api, request id) with children
`decode` (wire tensors to arrays, checked against the signature) and `queue` (from
submission to the start of the batch that ran it); per model run `batch` (rows, padded
rows), linked to the request spans of the requests it carried, with a child `run` (the
model itself). A batch is its own trace: it serves several requests, so it cannot be a
child of one of them; the links join them.

Zero cost when off: nothing here imports OpenTelemetry until `Tracer.start` runs, and
the request path checks one `None`. Spans are exported in the background by the SDK's
BatchSpanProcessor, whose queue is bounded (2048 spans; the excess is dropped, counted
by the SDK, never blocking a request).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ferry.distribution import install_hint

log = logging.getLogger(__name__)

OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXTRA_HINT = f"OpenTelemetry traces need the otel extra: {install_hint('otel')}"
SERVICE_NAME = "ferry"


def otlp_traces_url(endpoint: str) -> str:
    """OTLP/HTTP's traces URL for a base endpoint (the meaning of
    OTEL_EXPORTER_OTLP_ENDPOINT): `{endpoint}/v1/traces`; a URL that already ends so is
    kept."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def endpoint_from(flag: str | None) -> str | None:
    """`--otlp_endpoint`, else $OTEL_EXPORTER_OTLP_ENDPOINT, else None (tracing off)."""
    return flag or os.environ.get(OTLP_ENDPOINT_ENV) or None


def otel_installed() -> bool:
    import importlib.util

    return all(
        importlib.util.find_spec(name) is not None
        for name in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
    )


class Tracer:
    """Makes ferry's spans; one per server. `start` imports OpenTelemetry and sets up the
    exporter; `shutdown` flushes what is queued (at the end of the drain)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = otlp_traces_url(endpoint)
        self._provider: Any = None
        self._tracer: Any = None
        self._trace: Any = None

    def start(self) -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # The provider is ferry's own, not the global one: a model's code that uses
        # OpenTelemetry keeps its own setup.
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=self.endpoint)))
        self._provider = provider
        self._tracer = provider.get_tracer("ferry")
        self._trace = trace
        log.info("OpenTelemetry traces to %s", self.endpoint)

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()

    def request(self, api: str, model: str, request_id: str | None) -> RequestTrace:
        """The span of one request, started now (ended by `RequestTrace.end`)."""
        span = self._tracer.start_span(
            "ferry.request",
            attributes={
                "ferry.api": api,
                "ferry.model": model,
                "ferry.request_id": request_id or "",
            },
        )
        return RequestTrace(self, span)

    def batch(self, traces: Sequence[RequestTrace], rows: int, padded_rows: int) -> BatchTrace:
        """The span of one model run over the traced requests in it; ends their queue
        spans (the batch starts now)."""
        now = time.time_ns()
        links = []
        for request in traces:
            request.end_queue(now)
            links.append(self._trace.Link(request.span.get_span_context()))
        span = self._tracer.start_span(
            "batch",
            links=links,
            start_time=now,
            attributes={"ferry.rows": rows, "ferry.padded_rows": padded_rows},
            # A new trace: the batch belongs to no single request.
            context=self._trace.set_span_in_context(self._trace.INVALID_SPAN),
        )
        return BatchTrace(self, span)

    def error_status(self) -> Any:
        return self._trace.Status(self._trace.StatusCode.ERROR)

    def child(self, parent: Any, name: str, start_time: int | None = None) -> Any:
        return self._tracer.start_span(
            name, context=self._trace.set_span_in_context(parent), start_time=start_time
        )


@dataclass
class RequestTrace:
    """One request's spans. The protocol's thread (event loop) starts and ends the
    request and decode spans; the batch worker ends the queue span."""

    tracer: Tracer
    span: Any
    queue_span: Any = None

    def decode_span(self) -> Any:
        return self.tracer.child(self.span, "decode")

    def start_queue(self) -> None:
        self.queue_span = self.tracer.child(self.span, "queue")

    def end_queue(self, at_ns: int) -> None:
        queue_span, self.queue_span = self.queue_span, None
        if queue_span is not None:
            queue_span.end(at_ns)

    def end(self, version: int | None, error: str | None) -> None:
        if version is not None:
            self.span.set_attribute("ferry.version", version)
        if error is not None:
            self.span.set_attribute("ferry.error", error)
            self.span.set_status(self.tracer.error_status())
        self.end_queue(time.time_ns())  # a request that never ran (deadline, queue full)
        self.span.end()


@dataclass
class BatchTrace:
    """The batch span and its `run` child (the model run)."""

    tracer: Tracer
    span: Any
    run_span: Any = None

    def start_run(self) -> None:
        self.run_span = self.tracer.child(self.span, "run")

    def end(self, error: BaseException | None = None) -> None:
        if self.run_span is not None:
            self.run_span.end()
        if error is not None:
            self.span.set_attribute("ferry.error", f"{type(error).__name__}: {error}")
        self.span.end()
