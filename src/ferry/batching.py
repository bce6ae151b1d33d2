"""The dynamic batcher: merges concurrent requests to one model entry point.

It knows numpy arrays and queues, nothing of HTTP or gRPC. Requests are stacked
along dimension 0 (rows), run once, and split back, so each caller gets exactly
what an unbatched run would give. Limits count rows, not requests: a request with
more rows than `max_batch_size` is cut into slices that may share batches with
other requests. Its slices join the queue one at a time, each behind whatever
arrived while the previous one waited, so one large request takes turns with the
others: it never fills the queue (turning others away) nor holds them behind all
of its rows.

Scheduling: at light load a free worker takes what is queued at once, so batching
adds no wait. Under sustained load it waits for the batch to fill (see
`BatchQueue._wait_for_fill`). A full queue refuses new requests immediately
(`Unavailable`).

Thread-safety: `submit` may be called from any thread; results are delivered
through `concurrent.futures.Future`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

import numpy as np

from ferry.errors import DeadlineExceeded, FerryError, InternalError, InvalidArgument, Unavailable
from ferry.tracing import RequestTrace

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
# While waiting for a batch to fill, a pause this long between arrivals ends the wait.
ARRIVAL_GAP_SECONDS = 0.001
RunFunction = Callable[[Tensors], Tensors]


@dataclass(frozen=True)
class BatchingConfig:
    """TF Serving's BatchingParameters, with ferry's CPU defaults.

    `max_batch_size` rows per model run; `max_enqueued_batches` bounds the queue at
    `max_enqueued_batches * max_batch_size` rows; `allowed_batch_sizes` (increasing,
    ending at `max_batch_size`) pads each batch up to the next allowed size.
    `fill_under_load` (ferry's, not TF Serving's) lets a worker under sustained load
    wait up to one model run's time for a full batch while `batch_timeout_micros` is 0.
    """

    enabled: bool = True
    max_batch_size: int = 64
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 16
    num_batch_threads: int = 1
    allowed_batch_sizes: tuple[int, ...] = ()
    fill_under_load: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.batch_timeout_micros < 0:
            raise ValueError("batch_timeout_micros must not be negative")
        if self.max_enqueued_batches < 1:
            raise ValueError("max_enqueued_batches must be at least 1")
        if self.num_batch_threads < 1:
            raise ValueError("num_batch_threads must be at least 1")
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in itertools.pairwise(sizes)) or sizes[0] < 1:
                raise ValueError("allowed_batch_sizes must be positive and increasing")
            if sizes[-1] != self.max_batch_size:
                raise ValueError(
                    f"the last allowed_batch_sizes entry ({sizes[-1]}) must equal "
                    f"max_batch_size ({self.max_batch_size})"
                )

    @property
    def max_queued_rows(self) -> int:
        return self.max_batch_size * self.max_enqueued_batches


class BatchObserver:
    """Receives per-batch facts (for metrics). The default records nothing."""

    def on_batch(
        self, rows: int, padded_rows: int, queue_seconds: list[float], compute_seconds: float
    ) -> None:
        """Called after every model run, from the worker thread."""


class _Request:
    """One submitted request; completes when all of its slices have results.

    `backlog` holds the slices not yet in the shared queue: a request enters the queue
    one slice at a time (see `BatchQueue._pop`). `started` is set when its first slice
    is taken: the future is then RUNNING, so the client side can no longer cancel it
    and the worker alone settles it.
    """

    __slots__ = (
        "backlog",
        "deadline",
        "enqueued_at",
        "future",
        "inputs",
        "parts",
        "pending_slices",
        "rows",
        "started",
        "trace",
    )

    def __init__(
        self, inputs: Tensors, rows: int, deadline: float | None, trace: RequestTrace | None
    ) -> None:
        self.inputs = inputs
        self.trace = trace  # the request's spans (ferry.tracing), None when tracing is off
        self.rows = rows
        self.deadline = deadline
        self.enqueued_at = time.monotonic()
        self.future: Future[Tensors] = Future()
        self.parts: list[tuple[int, Tensors]] = []
        self.pending_slices = 0
        self.backlog: deque[_Slice] | None = None
        self.started = False


@dataclass(slots=True)
class _Slice:
    """Rows [start, stop) of a request; `shape_key` groups slices that can be stacked."""

    request: _Request
    start: int
    stop: int
    shape_key: tuple
    solo: bool = False  # runs alone and unsplit (model not batch-major, or ragged dim 0)

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.stop == self.request.rows

    @property
    def cost(self) -> int:
        """What the slice counts against the queue's capacity (a solo request: 1)."""
        return 1 if self.solo else self.stop - self.start


def _shape_key(inputs: Tensors) -> tuple:
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in inputs.items())


class BatchQueue:
    """A queue of requests for one model entry point, served by `num_batch_threads` workers."""

    def __init__(
        self,
        name: str,
        run: RunFunction,
        config: BatchingConfig,
        batchable: bool,
        observer: BatchObserver | None = None,
    ) -> None:
        """`batchable` is False for models whose tensors are not batch-major: each request
        then runs alone, unsplit."""
        self.name = name
        self.config = config
        self._run = run
        self._batchable = batchable and config.enabled
        self._observer = observer or BatchObserver()
        self._queue: deque[_Slice] = deque()
        self._queued_rows = 0
        self._running = 0
        self._last_batch_rows = 0
        self._last_run_seconds = 0.0
        self._last_arrival = 0.0
        self._filling = 0  # workers in _wait_for_fill
        self._fill_gap_from = 0.0  # arrivals after this end a fill wait after a pause
        self._closed = False
        self._cond = threading.Condition()
        self._completion_lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._work, name=f"batch-{name}-{i}", daemon=True)
            for i in range(config.num_batch_threads)
        ]
        for worker in self._workers:
            worker.start()

    # -- submitting -----------------------------------------------------------------

    def submit(
        self, inputs: Tensors, deadline: float | None = None, trace: RequestTrace | None = None
    ) -> Future[Tensors]:
        """Queue a checked request; the future resolves to its outputs or a FerryError.

        `deadline` is a `time.monotonic()` value after which the request is dropped
        unrun. Raises Unavailable at once when the queue is full or closed. `trace`
        (ferry.tracing) gets the batch and run spans of the batches that carry it.
        """
        rows = _rows_of(inputs) if self._batchable else None
        request = _Request(inputs, rows or 0, deadline, trace)
        if rows is None:
            first = _Slice(request, 0, 0, (), solo=True)
            request.pending_slices = 1
        elif rows == 0:
            raise InvalidArgument("The request has no rows (dimension 0 of the inputs is 0)")
        else:
            key = _shape_key(inputs)
            step = self.config.max_batch_size
            first = _Slice(request, 0, min(step, rows), key)
            if rows > step:
                request.backlog = deque(
                    _Slice(request, s, min(s + step, rows), key) for s in range(step, rows, step)
                )
            request.pending_slices = 1 + len(request.backlog or ())
        cost = first.cost
        with self._cond:
            if self._closed:
                raise Unavailable(f"Model {self.name} is shutting down")
            limit = self.config.max_queued_rows
            if self._queued_rows and self._queued_rows + cost > limit:
                raise Unavailable(
                    f"The batch queue of {self.name} is full ({self._queued_rows} rows queued, "
                    f"limit {limit}); retry later"
                )
            self._queue.append(first)
            self._queued_rows += cost
            first_in_fill = self._last_arrival < self._fill_gap_from
            self._last_arrival = request.enqueued_at
            # A worker waiting for its batch to fill wakes on its own deadlines; waking it
            # per arrival would only make it take the GIL from the event loop to go back
            # to sleep. It is woken when the batch is full, and by the first arrival of
            # its wait (which starts the pause rule's clock).
            if (
                not self._filling
                or first_in_fill
                or self._queued_rows >= self.config.max_batch_size
            ):
                self._cond.notify()
        return request.future

    # -- workers --------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return  # closed and drained
                self._wait_for_fill()
                batch = self._take_batch()
                if not batch:
                    continue  # another worker took the batch, or only cancelled ones were left
                self._last_batch_rows = sum(piece.rows for piece in batch)
                self._running += 1
            try:
                self._execute(batch)
            except Exception as exc:
                # A bug here must cost this batch, never the worker: with one worker per
                # queue (the default) a dead worker would leave the model unanswered.
                log.exception("batch of %s failed outside the model run", self.name)
                for piece in batch:
                    self._fail(piece, InternalError(f"Internal error: {type(exc).__name__}"))
            finally:
                with self._cond:
                    self._running -= 1

    def _wait_for_fill(self) -> None:
        """Under load, give the queue time to fill a batch (lock held).

        "Under load" means another batch of this queue is running, or the previous
        batch was at least half full. At light load a request is dispatched at once,
        so batching costs no latency. Under sustained load a full batch is cheaper
        per row (the model's fixed cost per run, such as reading all its weights, is
        shared by more rows), and on a CPU shared with the HTTP front it runs while
        the front is idle instead of competing with it for cores: measured, mlp_large
        at 64 connections on 2 cores went from batches of ~30 to full batches of 64
        and served ~15 % more requests.

        How long: with `batch_timeout_micros` set, until that long after the oldest
        queued request arrived (TF Serving's meaning). Otherwise, with
        `fill_under_load`, at most as long as the previous model run took, counted
        from now: a request waits at most about one more run. Either wait ends once
        requests stop arriving for `ARRIVAL_GAP_SECONDS` (for the adaptive wait: after
        one arrived during it, since a loaded front is busy writing the previous
        batch's answers before new requests come in).
        """
        if not self._batchable:
            return
        if not self._running and self._last_batch_rows * 2 < self.config.max_batch_size:
            return
        timeout = self.config.batch_timeout_micros / 1e6
        if timeout:
            deadline = self._queue[0].request.enqueued_at + timeout
            gap_counts_after = 0.0  # every arrival
        elif self.config.fill_under_load:
            gap_counts_after = time.monotonic()
            deadline = gap_counts_after + self._last_run_seconds
        else:
            return
        self._filling += 1
        self._fill_gap_from = gap_counts_after
        try:
            while self._queued_rows < self.config.max_batch_size and not self._closed:
                # Stop early once requests stop arriving: waiting longer only adds latency.
                until = deadline
                if self._last_arrival >= gap_counts_after:
                    until = min(deadline, self._last_arrival + ARRIVAL_GAP_SECONDS)
                remaining = until - time.monotonic()
                if remaining <= 0 or not self._queue:
                    return
                self._cond.wait(remaining)
        finally:
            self._filling -= 1

    def _take_batch(self) -> list[_Slice]:
        """Pop the head slice and every following slice that stacks with it (lock held);
        empty when only cancelled requests were queued."""
        head = None
        while head is None and self._queue:
            head = self._pop()
        if head is None:
            return []
        batch = [head]
        if head.solo:
            return batch
        rows = head.rows
        limit = self.config.max_batch_size
        while self._queue:
            candidate = self._queue[0]
            if (
                candidate.solo
                or candidate.shape_key != head.shape_key
                or rows + candidate.rows > limit
            ):
                break
            piece = self._pop()
            if piece is not None:
                batch.append(piece)
                rows += piece.rows
        return batch

    def _pop(self) -> _Slice | None:
        """Pop the head slice (lock held); None when its request was cancelled or failed.

        The first slice taken starts the request (`set_running_or_notify_cancel`): a
        request cancelled while queued is dropped unrun, and a started one can no longer
        be cancelled, so only this queue completes its future. Then the request's next
        slice joins the tail of the queue: a large request advances one batch at a time,
        taking turns with the requests that arrived meanwhile, so it can neither fill
        the queue (others would get "queue full") nor make them wait for all its rows.
        """
        piece = self._queue.popleft()
        self._queued_rows -= piece.cost
        request = piece.request
        if not request.started:
            request.started = True
            if not request.future.set_running_or_notify_cancel():
                request.backlog = None
                return None
        elif request.future.done():  # an earlier slice failed: drop the rest
            request.backlog = None
            return None
        if request.backlog:
            following = request.backlog.popleft()
            self._queue.append(following)
            self._queued_rows += following.cost
        return piece

    def _execute(self, batch: list[_Slice]) -> None:
        now = time.monotonic()
        live = []
        for piece in batch:
            deadline = piece.request.deadline
            if deadline is not None and now > deadline:
                self._fail(piece, DeadlineExceeded("Request timed out before it could run"))
            elif piece.request.future.done():
                continue  # an earlier slice of this request failed
            else:
                live.append(piece)
        if not live:
            return
        try:
            self._run_and_split(live, now)
        except Exception as exc:
            if len(live) > 1:
                # Isolate the culprit: rerun each piece alone so one bad input cannot fail others.
                for piece in live:
                    try:
                        self._run_and_split([piece], time.monotonic())
                    except Exception as single_exc:
                        self._fail(piece, _as_ferry_error(single_exc))
            else:
                self._fail(live[0], _as_ferry_error(exc))

    def _run_and_split(self, pieces: list[_Slice], started: float) -> None:
        solo = pieces[0].solo
        inputs = pieces[0].request.inputs if solo else _stack(pieces)
        rows = _solo_rows(inputs) if solo else sum(p.rows for p in pieces)
        padded_rows = rows
        if not solo and self.config.allowed_batch_sizes:
            padded_rows = next(s for s in self.config.allowed_batch_sizes if s >= rows)
            if padded_rows > rows:
                inputs = {k: _pad(v, padded_rows - rows) for k, v in inputs.items()}
        traces = [p.request.trace for p in pieces if p.request.trace is not None]
        begin = time.monotonic()
        if traces:
            outputs = _traced_run(self._run, inputs, traces, rows, padded_rows)
        else:
            outputs = self._run(inputs)
        compute_seconds = time.monotonic() - begin
        self._last_run_seconds = compute_seconds
        if solo:
            self._complete(pieces[0], outputs)
        else:
            for name, array in outputs.items():
                if array.ndim == 0 or array.shape[0] != padded_rows:
                    raise InternalError(
                        f"Output '{name}' has shape {list(array.shape)}; expected "
                        f"{padded_rows} rows to match the batch"
                    )
            offset = 0
            for piece in pieces:
                end = offset + piece.rows
                self._complete(piece, {k: v[offset:end] for k, v in outputs.items()})
                offset = end
        queue_seconds = [started - p.request.enqueued_at for p in pieces]
        self._observer.on_batch(rows, padded_rows, queue_seconds, compute_seconds)

    def _complete(self, piece: _Slice, outputs: Tensors) -> None:
        request = piece.request
        if piece.whole or piece.solo:
            _settle(request.future, outputs)
            return
        with self._completion_lock:
            request.parts.append((piece.start, outputs))
            request.pending_slices -= 1
            finished = request.pending_slices == 0
        if finished and not request.future.done():
            request.parts.sort(key=lambda part: part[0])
            names = request.parts[0][1].keys()
            merged = {n: np.concatenate([p[1][n] for p in request.parts]) for n in names}
            request.parts.clear()
            _settle(request.future, merged)

    def _fail(self, piece: _Slice, error: FerryError) -> None:
        with self._completion_lock:
            _settle(piece.request.future, error=error)

    # -- lifecycle ------------------------------------------------------------------

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, finish the queued ones, then stop the workers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join(timeout)


def _settle(
    future: Future[Tensors], result: Tensors | None = None, error: FerryError | None = None
) -> None:
    """Complete `future` unless it is done already (a slice failed first, or it was never
    started). Started futures cannot be cancelled, so this never loses a race; the guard
    keeps a worker alive should that assumption ever break."""
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        log.warning("a request's result was settled twice; the second one is dropped")


def _rows_of(inputs: Tensors) -> int | None:
    """The shared dimension-0 size of all inputs, or None when they disagree (run alone)."""
    sizes = {array.shape[0] if array.ndim else None for array in inputs.values()}
    if len(sizes) != 1:
        return None
    (rows,) = sizes
    return rows


def _solo_rows(inputs: Tensors) -> int:
    """Rows reported for a request that runs alone: its largest dimension 0 (at least 1)."""
    return max((a.shape[0] for a in inputs.values() if a.ndim), default=1) or 1


def _stack(pieces: list[_Slice]) -> Tensors:
    if len(pieces) == 1 and pieces[0].whole:
        return pieces[0].request.inputs
    names = pieces[0].request.inputs.keys()
    return {
        name: np.concatenate([p.request.inputs[name][p.start : p.stop] for p in pieces])
        for name in names
    }


def _pad(array: np.ndarray, extra_rows: int) -> np.ndarray:
    """Pad by repeating the last row: real data keeps models free of NaN/zero-division surprises."""
    return np.concatenate([array, np.repeat(array[-1:], extra_rows, axis=0)])


def _traced_run(
    run: RunFunction, inputs: Tensors, traces: list[RequestTrace], rows: int, padded_rows: int
) -> Tensors:
    """`run(inputs)` inside a batch span linked to the requests in it (ferry.tracing)."""
    batch = traces[0].tracer.batch(traces, rows, padded_rows)
    batch.start_run()
    try:
        outputs = run(inputs)
    except BaseException as exc:
        batch.end(exc)
        raise
    batch.end()
    return outputs


def _as_ferry_error(exc: BaseException) -> FerryError:
    if isinstance(exc, FerryError):
        return exc
    log.warning("model run failed: %s: %s", type(exc).__name__, exc)
    return InternalError(f"The model failed while running: {type(exc).__name__}: {exc}")
