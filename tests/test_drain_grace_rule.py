"""ferry.drain_grace: the rule both REST fronts follow after SIGTERM, with a scheduler the
test fires by hand (the servers' own behaviour is tests/cluster/test_drain_grace.py)."""

from __future__ import annotations

from collections.abc import Callable

from ferry.drain_grace import DrainGrace


class ManualTimer:
    def __init__(self, seconds: float, callback: Callable[[], None]) -> None:
        self.seconds = seconds
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        if not self.cancelled:
            self.callback()


class Recorder:
    def __init__(self, grace_seconds: float) -> None:
        self.events: list[str] = []
        self.timers: list[ManualTimer] = []
        self.rule = DrainGrace(
            grace_seconds,
            on_not_ready=lambda: self.events.append("not ready"),
            drain=lambda: self.events.append("drain"),
            schedule=self._schedule,
        )

    def _schedule(self, seconds: float, callback: Callable[[], None]) -> ManualTimer:
        timer = ManualTimer(seconds, callback)
        self.timers.append(timer)
        return timer


def test_without_a_grace_the_first_signal_drains() -> None:
    recorder = Recorder(0.0)
    recorder.rule.on_exit_signal()
    assert recorder.events == ["drain"]
    assert recorder.timers == []


def test_with_a_grace_the_first_signal_only_turns_readiness_off() -> None:
    recorder = Recorder(5.0)
    recorder.rule.on_exit_signal()
    assert recorder.events == ["not ready"]
    assert [timer.seconds for timer in recorder.timers] == [5.0]
    recorder.timers[0].fire()
    assert recorder.events == ["not ready", "drain"]


def test_a_second_signal_drains_at_once_and_cancels_the_grace() -> None:
    recorder = Recorder(60.0)
    recorder.rule.on_exit_signal()
    recorder.rule.on_exit_signal()
    assert recorder.events == ["not ready", "drain"]
    assert recorder.timers[0].cancelled
    recorder.timers[0].fire()  # a cancelled timer that fires anyway does nothing
    assert recorder.events == ["not ready", "drain"]


def test_a_signal_after_the_grace_ended_drains_again() -> None:
    """uvicorn counts exit signals: a second one after the drain began forces the exit."""
    recorder = Recorder(1.0)
    recorder.rule.on_exit_signal()
    recorder.timers[0].fire()
    recorder.rule.on_exit_signal()
    assert recorder.events == ["not ready", "drain", "drain"]
