"""The dynamic batcher: merges concurrent requests, splits results back exactly, and fails
requests one at a time (queue full, deadline, model error) without hurting their neighbours.

Tests that need requests to pile up hold the worker inside the model: a `GatedModel` blocks
its first run until the test opens the gate, so everything submitted meanwhile is queued and
the next batch is predictable, with no timing involved.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import numpy as np
import pytest

from ferry.batching import BatchingConfig, BatchObserver, BatchQueue, RunFunction, Tensors
from ferry.errors import DeadlineExceeded, InternalError, InvalidArgument, StatusCode, Unavailable

# A bound on waits that should end almost at once; generous, so a slow machine never fails.
WAIT = 10.0

# Weights and inputs are small multiples of 1/4, so every product and sum is exact in float32
# and a batched matmul must match the unbatched one bit for bit whatever the BLAS kernel.
WEIGHTS = (np.arange(-6, 6, dtype=np.float32).reshape(4, 3) / 4).astype(np.float32)
BIAS = np.array([0.5, -0.25, 1.0], dtype=np.float32)


def linear(inputs: Tensors) -> Tensors:
    return {"y": inputs["x"] @ WEIGHTS + BIAS}


def rowwise(inputs: Tensors) -> Tensors:
    """Two outputs computed row by row: a norm per row and an element-wise transform."""
    x = inputs["x"]
    return {"norm": np.sqrt((x * x).sum(axis=1, keepdims=True)), "scaled": x * 2 - 1}


def double(inputs: Tensors) -> Tensors:
    return {"y": inputs["x"] * 2}


def rows(n: int, seed: int = 0, width: int = 4, dtype: type = np.float32) -> Tensors:
    """A request of `n` rows with distinct, exactly representable values."""
    rng = np.random.default_rng(seed)
    return {"x": (rng.integers(-8, 9, size=(n, width)) / 4).astype(dtype)}


def assert_same_outputs(got: Tensors, want: Tensors) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name], strict=True)


class RecordingObserver(BatchObserver):
    """Records (rows, padded_rows) of every batch, in run order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.batches: list[tuple[int, int]] = []

    def on_batch(
        self, rows: int, padded_rows: int, queue_seconds: list[float], compute_seconds: float
    ) -> None:
        with self._lock:
            self.batches.append((rows, padded_rows))


class GatedModel:
    """Wraps a model function; its first run blocks until `open()`, and every run's inputs
    are recorded in `seen`."""

    def __init__(self, fn: RunFunction) -> None:
        self.fn = fn
        self.entered = threading.Event()
        self.seen: list[Tensors] = []
        self._gate = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, inputs: Tensors) -> Tensors:
        with self._lock:
            first = not self.seen
            self.seen.append(inputs)
        if first:
            self.entered.set()
            self._gate.wait(WAIT)
        return self.fn(inputs)

    def open(self) -> None:
        self._gate.set()


@pytest.fixture
def make_queue() -> Iterator[Callable[..., BatchQueue]]:
    """Builds BatchQueues (config given as keyword arguments) and closes them after the test."""
    queues: list[BatchQueue] = []

    def make(
        run: RunFunction,
        batchable: bool = True,
        observer: BatchObserver | None = None,
        **config: object,
    ) -> BatchQueue:
        queue = BatchQueue("test", run, BatchingConfig(**config), batchable, observer)
        queues.append(queue)
        return queue

    yield make
    for queue in queues:
        queue.close(timeout=WAIT)


@pytest.fixture
def gated(make_queue: Callable[..., BatchQueue]) -> Iterator[Callable[[RunFunction], GatedModel]]:
    """Builds GatedModels; depends on `make_queue` so the gates open before the queues close."""
    models: list[GatedModel] = []

    def make(fn: RunFunction) -> GatedModel:
        model = GatedModel(fn)
        models.append(model)
        return model

    yield make
    for model in models:
        model.open()


def hold_worker(queue: BatchQueue, model: GatedModel) -> Future[Tensors]:
    """Submit a one-row request and wait until the worker is blocked inside the model."""
    future = queue.submit({"x": np.ones((1, 4), np.float32)})
    assert model.entered.wait(WAIT)
    return future


def submit_from_threads(queue: BatchQueue, requests: list[Tensors]) -> list[Future[Tensors]]:
    """Submit every request from its own thread, all at once; futures come back in order."""
    futures: list[Future[Tensors] | None] = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def send(index: int) -> None:
        barrier.wait()
        futures[index] = queue.submit(requests[index])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert all(future is not None for future in futures)
    return futures  # type: ignore[return-value]


# -- merging and splitting --------------------------------------------------------------


@pytest.mark.parametrize("model", [linear, rowwise], ids=["linear", "rowwise"])
def test_concurrent_requests_are_merged_and_each_gets_its_unbatched_result(
    make_queue: Callable[..., BatchQueue],
    gated: Callable[[RunFunction], GatedModel],
    model: RunFunction,
) -> None:
    observer = RecordingObserver()
    gate = gated(model)
    queue = make_queue(gate, observer=observer, max_batch_size=64)
    blocker = hold_worker(queue, gate)
    requests = [rows(1 + i % 3, seed=i) for i in range(16)]

    futures = submit_from_threads(queue, requests)
    gate.open()

    for request, future in zip(requests, futures, strict=True):
        assert_same_outputs(future.result(WAIT), model(request))
    blocker.result(WAIT)
    queue.close()
    total = sum(len(request["x"]) for request in requests)
    assert observer.batches == [(1, 1), (total, total)]


def test_a_request_larger_than_max_batch_size_is_split_and_reassembled_in_order(
    make_queue: Callable[..., BatchQueue],
) -> None:
    observer = RecordingObserver()
    queue = make_queue(rowwise, observer=observer, max_batch_size=4)
    request = rows(10, seed=1)

    result = queue.submit(request).result(WAIT)

    assert_same_outputs(result, rowwise(request))
    queue.close()
    assert observer.batches == [(4, 4), (4, 4), (2, 2)]


def test_slices_of_a_large_request_share_batches_with_other_requests(
    make_queue: Callable[..., BatchQueue], gated: Callable[[RunFunction], GatedModel]
) -> None:
    observer = RecordingObserver()
    gate = gated(rowwise)
    queue = make_queue(gate, observer=observer, max_batch_size=4)
    blocker = hold_worker(queue, gate)
    requests = [rows(6, seed=2), rows(2, seed=3)]

    futures = [queue.submit(request) for request in requests]
    gate.open()

    for request, future in zip(requests, futures, strict=True):
        assert_same_outputs(future.result(WAIT), rowwise(request))
    blocker.result(WAIT)
    queue.close()
    # The large request's first slice (4 rows) runs alone; its last slice (2 rows) and
    # the 2-row request run together.
    assert observer.batches[1:] == [(4, 4), (4, 4)]


def test_a_large_request_takes_turns_with_requests_that_arrive_after_it(
    make_queue: Callable[..., BatchQueue], gated: Callable[[RunFunction], GatedModel]
) -> None:
    observer = RecordingObserver()
    gate = gated(rowwise)
    queue = make_queue(gate, observer=observer, max_batch_size=4)
    blocker = hold_worker(queue, gate)
    requests = [rows(1, seed=1), rows(10, seed=2), rows(2, seed=3)]

    futures = [queue.submit(request) for request in requests]
    gate.open()

    for request, future in zip(requests, futures, strict=True):
        assert_same_outputs(future.result(WAIT), rowwise(request))
    blocker.result(WAIT)
    queue.close()
    # One slice of the 10-row request per turn: the 2-row request, queued behind all of
    # its rows, runs after the first slice instead of after the last.
    assert observer.batches[1:] == [(1, 1), (4, 4), (2, 2), (4, 4), (2, 2)]


def test_a_request_far_larger_than_the_queue_does_not_fill_it(
    make_queue: Callable[..., BatchQueue], gated: Callable[[RunFunction], GatedModel]
) -> None:
    gate = gated(double)
    queue = make_queue(gate, max_batch_size=4, max_enqueued_batches=2)  # 8 queued rows
    blocker = hold_worker(queue, gate)
    large = rows(1000, seed=1)

    large_future = queue.submit(large)
    small = [queue.submit(rows(1, seed=s)) for s in range(4)]  # no "queue full"
    gate.open()

    for seed, future in enumerate(small):
        assert_same_outputs(future.result(WAIT), double(rows(1, seed=seed)))
    assert_same_outputs(large_future.result(WAIT), double(large))
    blocker.result(WAIT)
    queue.close()


def test_requests_with_different_trailing_shapes_or_dtypes_are_not_stacked_together(
    make_queue: Callable[..., BatchQueue], gated: Callable[[RunFunction], GatedModel]
) -> None:
    gate = gated(double)
    queue = make_queue(gate, max_batch_size=64)
    blocker = hold_worker(queue, gate)
    requests = [
        rows(1, seed=1, width=3),
        rows(2, seed=2, width=3),
        rows(1, seed=3, width=5),
        rows(1, seed=4, width=5),
        rows(1, seed=5, width=5, dtype=np.float64),
    ]

    futures = [queue.submit(request) for request in requests]
    gate.open()

    for request, future in zip(requests, futures, strict=True):
        assert_same_outputs(future.result(WAIT), double(request))
    blocker.result(WAIT)
    batches = [(batch["x"].shape, batch["x"].dtype) for batch in gate.seen[1:]]
    assert batches == [
        ((3, 3), np.dtype(np.float32)),
        ((2, 5), np.dtype(np.float32)),
        ((1, 5), np.dtype(np.float64)),
    ]


def test_allowed_batch_sizes_pad_each_batch_and_results_stay_exact(
    make_queue: Callable[..., BatchQueue], gated: Callable[[RunFunction], GatedModel]
) -> None:
    observer = RecordingObserver()
    gate = gated(linear)
    queue = make_queue(gate, observer=observer, max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
    blocker = hold_worker(queue, gate)
    requests = [rows(1, seed=1), rows(2, seed=2)]

    futures = [queue.submit(request) for request in requests]
    gate.open()

    for request, future in zip(requests, futures, strict=True):
        assert_same_outputs(future.result(WAIT), linear(request))
    assert blocker.result(WAIT)["y"].shape == (1, 3)
    queue.close()
    assert observer.batches == [(1, 2), (3, 4)]
    assert [batch["x"].shape[0] for batch in gate.seen] == [2, 4]


# -- failures stay with their request --------------------------------------------------


def refuse_negative(inputs: Tensors) -> Tensors:
    if (inputs["x"] < 0).any():
        raise ValueError("negative input")
    return rowwise(inputs)


def test_a_model_error_fails_only_the_request_that_caused_it(
    make_queue: Callable[..., BatchQueue], gated: Callable[[RunFunction], GatedModel]
) -> None:
    gate = gated(refuse_negative)
    queue = make_queue(gate, max_batch_size=64)
    blocker = hold_worker(queue, gate)
    good_1 = {"x": np.abs(rows(2, seed=1)["x"])}
    bad = {"x": -np.abs(rows(1, seed=2)["x"]) - 1}
    good_2 = {"x": np.abs(rows(3, seed=3)["x"])}

    futures = [queue.submit(request) for request in (good_1, bad, good_2)]
    gate.open()

    assert_same_outputs(futures[0].result(WAIT), rowwise(good_1))
    assert_same_outputs(futures[2].result(WAIT), rowwise(good_2))
    error = futures[1].exception(WAIT)
    assert isinstance(error, InternalError)
    assert error.code is StatusCode.INTERNAL
    assert "ValueError: negative input" in error.message
    blocker.result(WAIT)
    # The three did run as one batch first; the failure was isolated by rerunning each alone.
    assert gate.seen[1]["x"].shape[0] == 6


def test_a_ferry_error_raised_by_the_model_reaches_the_caller_unchanged(
    make_queue: Callable[..., BatchQueue],
) -> None:
    def reject(inputs: Tensors) -> Tensors:
        raise InvalidArgument("the model rejects this input")

    queue = make_queue(reject)

    error = queue.submit(rows(1)).exception(WAIT)

    assert isinstance(error, InvalidArgument)
    assert error.message == "the model rejects this input"


def test_a_request_whose_deadline_has_passed_is_dropped_unrun(
    make_queue: Callable[..., BatchQueue],
) -> None:
    calls: list[Tensors] = []

    def run(inputs: Tensors) -> Tensors:
        calls.append(inputs)
        return double(inputs)

    queue = make_queue(run)

    error = queue.submit(rows(1), deadline=time.monotonic() - 1).exception(WAIT)

    assert isinstance(error, DeadlineExceeded)
    assert calls == []


def test_a_request_that_expires_while_queued_gets_deadline_exceeded_and_others_still_run(
    make_queue: Callable[..., BatchQueue], gated: Callable[[RunFunction], GatedModel]
) -> None:
    gate = gated(linear)
    queue = make_queue(gate, max_batch_size=64)
    blocker = hold_worker(queue, gate)
    deadline = time.monotonic() + 0.05
    late = queue.submit(rows(2, seed=1), deadline=deadline)
    patient = rows(1, seed=2)
    on_time = queue.submit(patient, deadline=time.monotonic() + 3600)
    time.sleep(max(0.0, deadline - time.monotonic()) + 0.01)

    gate.open()

    assert isinstance(late.exception(WAIT), DeadlineExceeded)
    assert_same_outputs(on_time.result(WAIT), linear(patient))
    blocker.result(WAIT)
    assert [batch["x"].shape[0] for batch in gate.seen] == [1, 1]


# -- the worker settles every request, and survives --------------------------------------


def test_a_request_cancelled_while_queued_is_dropped_unrun(
    make_queue: Callable[..., BatchQueue], gated: Callable[[RunFunction], GatedModel]
) -> None:
    seen: list[int] = []

    def record(inputs: Tensors) -> Tensors:
        seen.append(len(inputs["x"]))
        return double(inputs)

    gate = gated(record)
    queue = make_queue(gate, max_batch_size=64)
    blocker = hold_worker(queue, gate)
    cancelled = queue.submit(rows(3))
    kept = queue.submit(rows(2, seed=1))

    assert cancelled.cancel()
    gate.open()

    assert_same_outputs(kept.result(WAIT), double(rows(2, seed=1)))
    blocker.result(WAIT)
    assert seen == [1, 2]  # the blocker, then only the request that was not cancelled


def test_a_started_request_cannot_be_cancelled_so_its_worker_completes_it_and_lives_on(
    make_queue: Callable[..., BatchQueue],
) -> None:
    # The interleaving that killed workers: the client side (ResultRelay.wait on a
    # deadline) cancels the future after the worker took the request and before it sets
    # the result. Here the model itself cancels at that point, every time.
    futures: list[Future[Tensors]] = []
    cancel_results: list[bool] = []

    def cancel_then_run(inputs: Tensors) -> Tensors:
        cancel_results.append(futures[-1].cancel())
        return double(inputs)

    queue = make_queue(cancel_then_run)
    for seed in range(3):
        futures.append(queue.submit(rows(2, seed=seed)))
        assert_same_outputs(futures[-1].result(WAIT), double(rows(2, seed=seed)))

    assert cancel_results == [False, False, False]


def test_a_failure_outside_the_model_run_costs_its_batch_not_the_worker(
    make_queue: Callable[..., BatchQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = make_queue(double)
    execute = queue._execute
    calls = 0

    def broken_once(batch):  # a bug in the batcher itself, on the first batch only
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug")
        execute(batch)

    monkeypatch.setattr(queue, "_execute", broken_once)

    with pytest.raises(InternalError):
        queue.submit(rows(1)).result(WAIT)
    assert_same_outputs(queue.submit(rows(2)).result(WAIT), double(rows(2)))


def test_workers_survive_a_storm_of_requests_cancelled_at_random_moments(
    make_queue: Callable[..., BatchQueue],
) -> None:
    queue = make_queue(double, max_batch_size=8, max_enqueued_batches=2000, num_batch_threads=2)
    futures = [queue.submit(rows(1 + i % 5, seed=i)) for i in range(2000)]
    for index, future in enumerate(futures):
        if index % 3:
            future.cancel()  # queued, running or done: whatever it is by now
    for future in futures:
        if not future.cancelled():
            future.result(WAIT)

    assert_same_outputs(queue.submit(rows(3)).result(WAIT), double(rows(3)))
    assert all(worker.is_alive() for worker in queue._workers)


# -- queue limits and scheduling ---------------------------------------------------------


def test_a_full_queue_refuses_new_requests_at_once_with_unavailable(
    make_queue: Callable[..., BatchQueue], gated: Callable[[RunFunction], GatedModel]
) -> None:
    gate = gated(linear)
    queue = make_queue(gate, max_batch_size=2, max_enqueued_batches=2)
    blocker = hold_worker(queue, gate)
    queued = [rows(2, seed=1), rows(2, seed=2)]
    futures = [queue.submit(request) for request in queued]
    assert queue.queued_rows == 4

    with pytest.raises(Unavailable, match="full"):
        queue.submit(rows(1, seed=3))

    gate.open()
    for request, future in zip(queued, futures, strict=True):
        assert_same_outputs(future.result(WAIT), linear(request))
    blocker.result(WAIT)
    # Once drained, the queue takes requests again.
    assert queue.submit(rows(1, seed=4)).result(WAIT)["y"].shape == (1, 3)


@pytest.mark.parametrize("threads", [1, 4])
def test_an_idle_queue_runs_a_single_request_at_once_despite_a_long_batch_timeout(
    make_queue: Callable[..., BatchQueue], threads: int
) -> None:
    queue = make_queue(
        linear, max_batch_size=64, batch_timeout_micros=30_000_000, num_batch_threads=threads
    )
    request = rows(1)

    # Far below the 30 s timeout: the request must not wait for the batch to fill.
    assert_same_outputs(queue.submit(request).result(timeout=5), linear(request))


def test_a_worker_whose_fill_wait_ends_on_an_emptied_queue_keeps_serving(
    make_queue: Callable[..., BatchQueue],
    gated: Callable[[RunFunction], GatedModel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With several workers, one may wait for a batch to fill while another takes it whole."""
    crashes: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashes.append(args.exc_value))
    gate = gated(double)
    queue = make_queue(gate, max_batch_size=2, batch_timeout_micros=200_000, num_batch_threads=3)
    blocker = hold_worker(queue, gate)  # one batch running, so free workers wait to fill
    requests = [rows(1, seed=1), rows(1, seed=2)]

    started = time.monotonic()
    first = queue.submit(requests[0])
    time.sleep(0.02)  # a second worker picks it up and waits for the batch to fill
    second = queue.submit(requests[1])  # the third worker takes the now full batch
    for request, future in zip(requests, (first, second), strict=True):
        assert_same_outputs(future.result(WAIT), double(request))
    time.sleep(max(0.0, started + 0.25 - time.monotonic()))  # the fill wait times out

    assert crashes == []
    gate.open()
    blocker.result(WAIT)
    later = rows(3, seed=3)
    assert_same_outputs(queue.submit(later).result(WAIT), double(later))
    queue.close(timeout=WAIT)
    assert crashes == []


def test_non_batchable_requests_run_alone_and_unsplit(
    make_queue: Callable[..., BatchQueue], gated: Callable[[RunFunction], GatedModel]
) -> None:
    def summarize(inputs: Tensors) -> Tensors:
        return {"total": np.asarray(inputs["x"].sum()), "y": inputs["x"] * 2}

    gate = gated(summarize)
    queue = make_queue(gate, batchable=False, max_batch_size=2)
    blocker = hold_worker(queue, gate)
    requests = [{"x": np.arange(5, dtype=np.float32) + i} for i in range(3)]

    futures = [queue.submit(request) for request in requests]
    gate.open()

    for request, future in zip(requests, futures, strict=True):
        assert_same_outputs(future.result(WAIT), summarize(request))
    blocker.result(WAIT)
    assert len(gate.seen) == 4
    for request, seen in zip(requests, gate.seen[1:], strict=True):
        assert seen["x"] is request["x"]


def test_inputs_that_disagree_on_dimension_0_run_alone_and_unsplit(
    make_queue: Callable[..., BatchQueue],
) -> None:
    def pair(inputs: Tensors) -> Tensors:
        return {"a": inputs["a"] + 1, "b": inputs["b"] - 1}

    queue = make_queue(pair, max_batch_size=2)
    request = {"a": np.ones((3, 2), np.float32), "b": np.zeros((5, 2), np.float32)}

    assert_same_outputs(queue.submit(request).result(WAIT), pair(request))


def test_a_request_without_rows_is_refused(make_queue: Callable[..., BatchQueue]) -> None:
    queue = make_queue(linear)

    with pytest.raises(InvalidArgument, match="no rows"):
        queue.submit({"x": np.zeros((0, 4), np.float32)})


def test_close_finishes_queued_work_then_refuses_new_requests(
    make_queue: Callable[..., BatchQueue], gated: Callable[[RunFunction], GatedModel]
) -> None:
    gate = gated(linear)
    queue = make_queue(gate, max_batch_size=2)
    blocker = hold_worker(queue, gate)
    requests = [rows(1, seed=i) for i in range(3)]
    futures = [queue.submit(request) for request in requests]
    opener = threading.Timer(0.1, gate.open)  # lets the worker go on only once close() waits
    opener.start()

    queue.close(timeout=WAIT)

    opener.join()
    assert blocker.done()
    for request, future in zip(requests, futures, strict=True):
        assert future.done()
        assert_same_outputs(future.result(), linear(request))
    with pytest.raises(Unavailable, match="shutting down"):
        queue.submit(rows(1))


# -- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"max_batch_size": 8, "allowed_batch_sizes": (4, 2, 8)}, "increasing"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (2, 2, 8)}, "increasing"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (0, 8)}, "positive"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (2, 4)}, r"\(4\) must equal max_batch_size"),
        ({"max_batch_size": 8, "allowed_batch_sizes": (2, 16)}, "must equal max_batch_size"),
        ({"max_batch_size": 0}, "max_batch_size must be at least 1"),
        ({"batch_timeout_micros": -1}, "must not be negative"),
        ({"max_enqueued_batches": 0}, "max_enqueued_batches must be at least 1"),
        ({"num_batch_threads": 0}, "num_batch_threads must be at least 1"),
    ],
)
def test_batching_config_rejects_invalid_values(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchingConfig(**config)  # type: ignore[arg-type]


def test_batching_config_accepts_allowed_sizes_ending_at_max_batch_size() -> None:
    config = BatchingConfig(max_batch_size=8, max_enqueued_batches=3, allowed_batch_sizes=(2, 8))

    assert config.allowed_batch_sizes == (2, 8)
    assert config.max_queued_rows == 24


# -- filling batches under load ---------------------------------------------------------


def test_under_load_a_worker_waits_for_the_batch_to_fill_while_requests_keep_coming(
    make_queue: Callable[..., BatchQueue],
    gated: Callable[[RunFunction], GatedModel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("ferry.batching.ARRIVAL_GAP_SECONDS", 2.0)
    observer = RecordingObserver()
    gate = gated(double)
    queue = make_queue(gate, observer=observer, max_batch_size=4, batch_timeout_micros=10**7)
    full = queue.submit(rows(4, seed=1))  # a full first batch: the queue is under load
    assert gate.entered.wait(WAIT)
    early = queue.submit(rows(2, seed=2))
    gate.open()
    time.sleep(0.2)  # the worker now waits for more rows instead of running 2 of 4
    late = queue.submit(rows(2, seed=3))

    for future, request in (
        (full, rows(4, seed=1)),
        (early, rows(2, seed=2)),
        (late, rows(2, seed=3)),
    ):
        assert_same_outputs(future.result(WAIT), double(request))
    queue.close()
    assert observer.batches == [(4, 4), (4, 4)]


def test_under_load_the_fill_wait_ends_when_requests_stop_arriving(
    make_queue: Callable[..., BatchQueue], gated: Callable[[RunFunction], GatedModel]
) -> None:
    observer = RecordingObserver()
    gate = gated(double)
    # A 30 s timeout: only the pause in arrivals can end the wait within the test's bound.
    queue = make_queue(gate, observer=observer, max_batch_size=4, batch_timeout_micros=30_000_000)
    full = queue.submit(rows(4, seed=1))
    assert gate.entered.wait(WAIT)
    partial = queue.submit(rows(2, seed=2))
    gate.open()

    assert_same_outputs(partial.result(timeout=5), double(rows(2, seed=2)))
    full.result(WAIT)
    queue.close()
    assert observer.batches == [(4, 4), (2, 2)]


@pytest.mark.parametrize(("fill", "expected"), [(True, [(4, 4), (4, 4)]), (False, None)])
def test_without_a_timeout_a_loaded_worker_waits_up_to_one_run_for_a_full_batch(
    make_queue: Callable[..., BatchQueue],
    gated: Callable[[RunFunction], GatedModel],
    fill: bool,
    expected: list[tuple[int, int]] | None,
) -> None:
    """batch_timeout_micros is 0 (ferry's default): with fill_under_load the worker waits
    for the two missing rows (the first run took 0.6 s, so it may wait that long); without
    it the two queued rows run at once."""
    observer = RecordingObserver()
    gate = gated(double)
    queue = make_queue(gate, observer=observer, max_batch_size=4, fill_under_load=fill)
    full = queue.submit(rows(4, seed=1))  # a full first batch: the queue is under load
    assert gate.entered.wait(WAIT)
    time.sleep(0.6)
    early = queue.submit(rows(2, seed=2))
    gate.open()
    time.sleep(0.2)
    late = queue.submit(rows(2, seed=3))

    for future, request in ((full, rows(4, 1)), (early, rows(2, 2)), (late, rows(2, 3))):
        assert_same_outputs(future.result(WAIT), double(request))
    queue.close()
    assert observer.batches == (expected or [(4, 4), (2, 2), (2, 2)])


def test_without_a_timeout_the_fill_wait_lasts_about_one_run(
    make_queue: Callable[..., BatchQueue], gated: Callable[[RunFunction], GatedModel]
) -> None:
    observer = RecordingObserver()
    gate = gated(double)
    queue = make_queue(gate, observer=observer, max_batch_size=4)
    queue.submit(rows(4, seed=1))
    assert gate.entered.wait(WAIT)
    time.sleep(0.4)  # the first run lasts at least 0.4 s
    partial = queue.submit(rows(2, seed=2))
    opened = time.monotonic()
    gate.open()

    assert_same_outputs(partial.result(WAIT), double(rows(2, seed=2)))
    waited = time.monotonic() - opened
    queue.close()
    assert 0.4 <= waited < WAIT / 2  # it waited one run's time for rows, then ran what it had
    assert observer.batches == [(4, 4), (2, 2)]


def test_without_a_timeout_the_fill_wait_ends_when_arrivals_pause(
    make_queue: Callable[..., BatchQueue], gated: Callable[[RunFunction], GatedModel]
) -> None:
    """Once a request arrived during the wait, a pause in arrivals ends it long before
    the run-length bound (3 s here)."""
    observer = RecordingObserver()
    gate = gated(double)
    queue = make_queue(gate, observer=observer, max_batch_size=8)
    queue.submit(rows(8, seed=1))
    assert gate.entered.wait(WAIT)
    time.sleep(3.0)
    early = queue.submit(rows(2, seed=2))
    gate.open()
    time.sleep(0.2)  # the worker is waiting now; this arrival starts the gap rule
    arrived = time.monotonic()
    late = queue.submit(rows(1, seed=3))

    assert_same_outputs(late.result(WAIT), double(rows(1, seed=3)))
    assert time.monotonic() - arrived < 1.5
    early.result(WAIT)
    queue.close()
    assert observer.batches == [(8, 8), (3, 3)]
