"""Prometheus metrics, served at TF Serving's path `/monitoring/prometheus/metrics`.

Each server owns its registry (no process-global state), so several servers or
tests in one process never share counters.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as PROMETHEUS_CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ferry.batching import BatchObserver

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"

# Latency buckets from 100 µs to 30 s: CPU inference of small models sits at the low end.
_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Label names of the per-version series (removed when a version stops serving).
_REQUEST_LABELS = ("model", "version", "api", "outcome")
_VERSION_LABELS = ("model", "version")


class Metrics:
    """All of ferry's metrics. Safe to update from any thread."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "ferry_requests",
            "Requests by model, version, API and outcome (ok or error code).",
            _REQUEST_LABELS,
            registry=r,
        )
        self.request_latency = Histogram(
            "ferry_request_latency_seconds",
            "Time from request decoded to response ready.",
            ["model", "api"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_latency = Histogram(
            "ferry_queue_latency_seconds",
            "Time a request waited in the batch queue.",
            _VERSION_LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_latency = Histogram(
            "ferry_compute_latency_seconds",
            "Time of one model run (one batch).",
            _VERSION_LABELS,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "ferry_batch_size_rows",
            "Rows (instances) per model run, before padding.",
            _VERSION_LABELS,
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.padding_rows = Counter(
            "ferry_batch_padding_rows",
            "Rows added to reach an allowed batch size.",
            _VERSION_LABELS,
            registry=r,
        )
        self.in_flight = Gauge(
            "ferry_requests_in_flight",
            "Requests accepted and not yet answered.",
            ["model"],
            registry=r,
        )
        self.loaded_versions = Gauge(
            "ferry_loaded_versions",
            "Versions currently AVAILABLE.",
            ["model"],
            registry=r,
        )
        self.load_latency = Histogram(
            "ferry_load_latency_seconds",
            "Time to load and warm up one version.",
            ["model"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.load_failures = Counter(
            "ferry_load_failures",
            "Versions that failed to load or warm up.",
            ["model"],
            registry=r,
        )

    def batch_observer(self, model: str, version: int) -> BatchObserver:
        """An observer for one version's batch queues, with its labelled children bound once."""
        return _VersionBatchObserver(self, model, str(version))

    def forget_version(self, model: str, version: int) -> None:
        """Remove every series labelled with this model version (it stopped serving), so
        a server that loads version after version exports only what it serves."""
        wanted = {"model": model, "version": str(version)}
        for metric, names in (
            (self.requests, _REQUEST_LABELS),
            (self.queue_latency, _VERSION_LABELS),
            (self.compute_latency, _VERSION_LABELS),
            (self.batch_rows, _VERSION_LABELS),
            (self.padding_rows, _VERSION_LABELS),
        ):
            children = {
                tuple(sample.labels[name] for name in names)
                for family in metric.collect()
                for sample in family.samples
                if all(sample.labels.get(k) == v for k, v in wanted.items())
            }
            for values in children:
                metric.remove(*values)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _VersionBatchObserver(BatchObserver):
    def __init__(self, metrics: Metrics, model: str, version: str) -> None:
        self._queue = metrics.queue_latency.labels(model, version)
        self._compute = metrics.compute_latency.labels(model, version)
        self._rows = metrics.batch_rows.labels(model, version)
        self._padding = metrics.padding_rows.labels(model, version)

    def on_batch(
        self, rows: int, padded_rows: int, queue_seconds: list[float], compute_seconds: float
    ) -> None:
        self._rows.observe(rows)
        self._compute.observe(compute_seconds)
        if padded_rows > rows:
            self._padding.inc(padded_rows - rows)
        for seconds in queue_seconds:
            self._queue.observe(seconds)


__all__ = ["PROMETHEUS_CONTENT_TYPE", "PROMETHEUS_PATH", "Metrics"]
