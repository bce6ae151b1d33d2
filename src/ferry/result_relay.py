"""Hands results from batch worker threads to the asyncio event loop, cheaply.

`asyncio.wrap_future` wakes the event loop once per request (a write to the loop's
self-pipe and a callback each). A batch completes many requests at once, so the
relay queues finished futures and wakes the loop once per burst: under load that
is one wake-up per batch instead of one per request. Deadlines use one timer per
request on the loop instead of `asyncio.wait_for`'s extra task machinery.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from concurrent.futures import CancelledError, Future
from typing import TypeVar

from ferry.errors import DeadlineExceeded

T = TypeVar("T")


class ResultRelay:
    """Awaitable results of thread-side futures, for one event loop. Thread-safe."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._finished: deque[tuple[asyncio.Future, Future]] = deque()
        self._wake_scheduled = False
        self._lock = threading.Lock()

    async def wait(self, future: Future[T], timeout: float) -> T:
        """The future's result; DeadlineExceeded after `timeout` seconds (the thread-side
        future is then cancelled, so a request still queued is dropped unrun)."""
        waiter = self._loop.create_future()
        future.add_done_callback(lambda done: self._finish(waiter, done))
        timer = self._loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            if not future.done():
                future.cancel()

    def _finish(self, waiter: asyncio.Future, done: Future) -> None:
        """Runs on the thread that completed `done` (usually a batch worker)."""
        self._finished.append((waiter, done))
        with self._lock:
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        """Runs on the loop: settle every waiter whose future finished."""
        with self._lock:
            self._wake_scheduled = False
        finished = self._finished
        while finished:
            waiter, done = finished.popleft()
            if waiter.done():
                continue
            try:
                waiter.set_result(done.result())
            except CancelledError:
                waiter.cancel()
            except BaseException as exc:
                waiter.set_exception(exc)


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(DeadlineExceeded("Timed out waiting for notification"))
