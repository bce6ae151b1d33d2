"""Per-version inference statistics in the shape of Triton's statistics extension.

perf_analyzer and Triton's clients read these (`/v2/models/{m}/stats`, gRPC
`ModelStatistics`) to split server time into queue and compute. Counters are plain
ints behind one lock: updated once per request (by the request path) and once per
batch (by the batch worker), which costs well under a microsecond each, far less than
the Prometheus histograms already on that path.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ferry.batching import BatchObserver


@dataclass
class Duration:
    """A count and total nanoseconds (Triton's StatisticDuration)."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(frozen=True)
class StatsSnapshot:
    """A consistent copy of one version's statistics."""

    last_inference_ms: int
    inference_count: int
    execution_count: int
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    batch_sizes: dict[int, Duration]  # rows per run -> model runs of that size and their time


class VersionStats(BatchObserver):
    """Statistics of one served version; a BatchObserver that forwards to `inner`.

    Thread-safe. Requests are counted by outcome (`record_request`) and batches by the
    observer hook, so both REST and gRPC requests of every protocol land here alike.
    """

    def __init__(self, inner: BatchObserver | None = None) -> None:
        self._inner = inner or BatchObserver()
        self._lock = threading.Lock()
        self._last_inference_ms = 0
        self._inference_count = 0
        self._execution_count = 0
        self._success = Duration()
        self._fail = Duration()
        self._queue = Duration()
        self._compute_infer = Duration()
        self._batch_sizes: dict[int, Duration] = {}

    def record_request(self, ok: bool, seconds: float) -> None:
        """One request finished (after its version was found), successfully or not."""
        with self._lock:
            (self._success if ok else self._fail).add(seconds)
            if ok:
                self._last_inference_ms = int(time.time() * 1000)

    def on_batch(
        self, rows: int, padded_rows: int, queue_seconds: list[float], compute_seconds: float
    ) -> None:
        requests = len(queue_seconds)
        with self._lock:
            self._execution_count += 1
            self._inference_count += rows
            self._queue.add(sum(queue_seconds), requests)
            # As in Triton, every request of a batch is charged the whole run's time.
            self._compute_infer.add(compute_seconds * requests, requests)
            by_size = self._batch_sizes.get(rows)
            if by_size is None:
                by_size = self._batch_sizes[rows] = Duration()
            by_size.add(compute_seconds)
        self._inner.on_batch(rows, padded_rows, queue_seconds, compute_seconds)

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            runs = self._compute_infer.count
            return StatsSnapshot(
                last_inference_ms=self._last_inference_ms,
                inference_count=self._inference_count,
                execution_count=self._execution_count,
                success=Duration(self._success.count, self._success.ns),
                fail=Duration(self._fail.count, self._fail.ns),
                queue=Duration(self._queue.count, self._queue.ns),
                # ferry hands numpy arrays to the runtime without a separate copy-in or
                # copy-out step, so those phases count their requests with zero time.
                compute_input=Duration(runs, 0),
                compute_infer=Duration(runs, self._compute_infer.ns),
                compute_output=Duration(runs, 0),
                batch_sizes={k: Duration(v.count, v.ns) for k, v in self._batch_sizes.items()},
            )
