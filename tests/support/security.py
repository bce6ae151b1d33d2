"""What every security test checks beside the refusal itself.

An attack is refused only if, while it runs, a well-behaved client keeps being served
(`GoodClient`), the server's memory stays bounded (`RssWatch`), and nothing the attacker
sent ran (`marker_file`: attack payloads write a file; the test asserts it is absent).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

MIB = 1024 * 1024


@dataclass
class GoodClient:
    """A thread that sends one valid request every `interval` seconds and records what
    came back. Use as a context manager around the attack, then `assert_served`."""

    url: str
    body: dict
    interval: float = 0.05
    timeout: float = 5.0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="good-client", daemon=True)

    def __enter__(self) -> GoodClient:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 1)

    def _loop(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = session.post(self.url, json=self.body, timeout=self.timeout)
                    if response.status_code != 200:
                        self.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
                except requests.RequestException as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                self.latencies.append(time.monotonic() - started)
                self._stop.wait(self.interval)

    def assert_served(self, max_latency: float = 1.0, min_requests: int = 3) -> None:
        """Every request answered 200, none slower than `max_latency` seconds."""
        assert not self.failures, f"the good client was refused: {self.failures[:5]}"
        assert len(self.latencies) >= min_requests, (
            f"the good client sent only {len(self.latencies)} requests"
        )
        worst = max(self.latencies)
        assert worst <= max_latency, (
            f"the good client waited {worst:.2f}s (limit {max_latency}s) during the attack"
        )


class RssWatch:
    """Samples a process's resident memory every `interval` seconds while active;
    `growth` is the peak over the value at entry."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-watch", daemon=True)
        self.start = 0
        self.peak = 0

    def __enter__(self) -> RssWatch:
        self.start = self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sample()

    def _sample(self) -> None:
        # A process that ended is no error here: the caller's own assertions say why.
        with contextlib.suppress(psutil.Error):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    @property
    def growth(self) -> int:
        return self.peak - self.start

    def assert_bounded(self, limit: int = 200 * MIB) -> None:
        assert self.growth <= limit, (
            f"server memory grew by {self.growth / MIB:.0f} MiB (limit {limit / MIB:.0f} MiB)"
        )


def marker_file(folder: Path) -> Path:
    """A path an attack payload writes when its code runs; it must never exist."""
    return folder / "ATTACK-RAN"
