"""The in-process onnxruntime ceiling: how many samples/s the model itself can do here.

Why: a server can at best approach what a tight ``session.run`` loop achieves in the
same process with no HTTP, JSON or queueing. Comparing ferry's req/s against the
batch-64 figure says how much of the machine ferry's serving path leaves to the model;
the batch-1 figure is the compute floor under any per-request latency.

The session is built with exactly the SessionOptions choices of
``ferry.runtimes.onnx.OnnxRuntime.load`` (intra/inter-op threads, spinning as ferry
is told, on by default), so the ceiling and ferry differ only in the serving path.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ferry.runtimes.base import RuntimeOptions


@dataclass(frozen=True)
class CeilingResult:
    """One time-bounded loop of ``session.run`` at a fixed batch size."""

    model: str
    batch: int
    runs: int
    seconds: float
    p50_run_ms: float

    @property
    def runs_per_s(self) -> float:
        return self.runs / self.seconds

    @property
    def samples_per_s(self) -> float:
        return self.runs * self.batch / self.seconds


def make_session(model_file: Path, options: RuntimeOptions) -> ort.InferenceSession:
    """An InferenceSession configured the way ferry's ONNX runtime configures its own."""
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = options.inter_op_threads
    spinning = "1" if options.allow_spinning else "0"
    session_options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    session_options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    return ort.InferenceSession(
        str(model_file), sess_options=session_options, providers=["CPUExecutionProvider"]
    )


def _timed_loop(
    session: ort.InferenceSession, feed: dict[str, np.ndarray], seconds: float
) -> tuple[int, float, list[float]]:
    """Run until `seconds` have passed; returns (runs, elapsed, per-run seconds)."""
    durations: list[float] = []
    start = now = time.perf_counter()
    deadline = start + seconds
    while now < deadline:
        session.run(None, feed)
        after = time.perf_counter()
        durations.append(after - now)
        now = after
    return len(durations), now - start, durations


def measure_model(
    name: str,
    model_file: Path,
    width: int,
    batches: list[int],
    seconds: float,
    warmup_seconds: float,
    options: RuntimeOptions,
) -> list[CeilingResult]:
    """Samples/s of `model_file` at each batch size: a warm-up loop, then a measured
    loop of `seconds`, per batch size. Inputs are uniform [0, 1) floats, numpy seed 0."""
    session = make_session(model_file, options)
    input_name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    results = []
    for batch in batches:
        feed = {input_name: rng.random((batch, width), dtype=np.float32)}
        _timed_loop(session, feed, warmup_seconds)
        runs, elapsed, durations = _timed_loop(session, feed, seconds)
        results.append(
            CeilingResult(name, batch, runs, elapsed, statistics.median(durations) * 1e3)
        )
    return results
