"""The drain grace after SIGTERM (`--drain_grace_seconds`), one rule for both REST fronts.

The first signal with a grace only turns readiness off; the drain itself (listeners
closed, gRPC stopped, models unloaded) starts when the grace ends, or at once on a second
signal. Without a grace a balancer learns of the drain from refused connections, which
one that does not retry (kube-proxy) passes on as failed requests; with one its
readiness checks take the replica out first.

The uvicorn front (signals on the main thread, a timer thread) and the Rust front (the
event loop's signal handlers, `loop.call_later`) differ only in how they schedule, so
each passes its own `schedule`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# schedule(seconds, callback) -> a handle whose cancel() stops it: threading.Timer started,
# or asyncio's loop.call_later.
Schedule = Callable[[float, Callable[[], None]], Cancellable]


class DrainGrace:
    """Decides, per exit signal, whether to wait out the grace or drain now."""

    def __init__(
        self,
        grace_seconds: float,
        on_not_ready: Callable[[], None],
        drain: Callable[[], None],
        schedule: Schedule,
    ) -> None:
        self._grace_seconds = grace_seconds
        self._on_not_ready = on_not_ready
        self._drain = drain
        self._schedule = schedule
        self._pending: Cancellable | None = None

    def on_exit_signal(self) -> None:
        """SIGTERM or SIGINT arrived. Every signal after the first (or the first, without
        a grace) drains: uvicorn counts them, and its second one forces the exit."""
        if self._grace_seconds > 0 and self._pending is None:
            self._on_not_ready()
            self._pending = self._schedule(self._grace_seconds, self._drain)
            log.info("not ready; draining in %.1fs (--drain_grace_seconds)", self._grace_seconds)
            return
        if self._pending is not None:
            self._pending.cancel()
        self._drain()
