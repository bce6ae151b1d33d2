"""Progress for the CLI's slow steps, on stderr (issue 15: a TensorFlow import and
conversion in `ferry save` and `ferry lite` take 15-40 s, uploads and archives of large
models minutes, and a silent terminal looks hung).

One rule for every verb, so that they all look alike:

- on an interactive terminal, a rich spinner (a bar when the step knows its total) with
  the step's name and its elapsed time, then one line saying how long the step took;
- anywhere else (CI logs, pipes, files), one line when the step starts and one when it
  ends with its duration: no carriage returns, no control characters;
- with a verb's `--quiet`, nothing.

A step that ends within ANNOUNCE_AFTER_SECONDS (the issue's "over ~2 s") leaves no line
(on a terminal its spinner shows meanwhile, then goes): its start line is printed only
once it has run that long, so quick steps add nothing to a log, and a quick failure
stays the one `Error:` line the user reads. FERRY_PROGRESS_AFTER_SECONDS
changes the delay (0: announce every step at once, as the tests do).

Standard output is never written here: it carries what the verb produced (paths,
JSON, tables) for scripts to read. Steps may nest (`ferry optimize`'s "evaluating"
inside its whole run): on a terminal they share one display, since rich draws only one
live display per console at a time.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click

if TYPE_CHECKING:
    from rich.progress import Progress, Task, TaskID

T = TypeVar("T")
ANNOUNCE_AFTER_SECONDS = 2.0
ANNOUNCE_AFTER_ENV = "FERRY_PROGRESS_AFTER_SECONDS"
# The `unit` that makes a step's bar count bytes (sizes and speed instead of counts).
BYTES = "bytes"


def duration(seconds: float) -> str:
    """`4.2 s` or, past a minute, `3m05s`: the same spelling in every step's end line."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def start_line(description: str) -> str:
    """The line a step prints when it starts (off a terminal)."""
    return f"{description} ..."


def end_line(description: str, seconds: float, ok: bool = True) -> str:
    """The line a step prints when it ends, with how long it took."""
    return f"{description}: {'done in' if ok else 'failed after'} {duration(seconds)}"


def announce_after() -> float:
    """Seconds a step runs before its lines are printed (ANNOUNCE_AFTER_SECONDS unless
    FERRY_PROGRESS_AFTER_SECONDS says otherwise; a value that is no number is ignored)."""
    try:
        return max(0.0, float(os.environ[ANNOUNCE_AFTER_ENV]))
    except (KeyError, ValueError):
        return ANNOUNCE_AFTER_SECONDS


def interactive() -> bool:
    """Whether stderr is a terminal that can take a live display. rich decides, so that
    its own overrides (TTY_INTERACTIVE, TERM=dumb) and ferry's choice agree."""
    from rich.console import Console

    return Console(stderr=True).is_interactive


class _Display:
    """The one live rich display of this process, shared by the steps that are running;
    started with the first and stopped with the last."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.users = 0

    def add(self, description: str, total: float | None, unit: str) -> TaskID:
        if self.progress is None:
            self.progress = _new_progress()
            self.progress.start()
        self.users += 1
        return self.progress.add_task(description, total=total, unit=unit, started=time.monotonic())

    def remove(self, task: TaskID, line: str | None) -> None:
        progress = self.progress
        if progress is None:
            return
        progress.remove_task(task)
        self.users -= 1
        if self.users == 0:
            progress.stop()  # first, so the line is not followed by a last stale frame
            self.progress = None
        else:
            progress.refresh()
        if line is not None:
            progress.console.print(line, highlight=False, markup=False)


_display = _Display()


def _new_progress() -> Progress:
    """Spinner, name, bar (steps with a total), count or bytes, elapsed time."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TransferSpeedColumn,
    )
    from rich.text import Text

    class Bar(ProgressColumn):
        """rich's bar, only for steps that know their total (others pulse forever)."""

        bar = BarColumn()

        def render(self, task: Task) -> Any:
            return self.bar.render(task) if task.total is not None else Text("")

    class Amount(ProgressColumn):
        """`12.0/60.0 MB 8.1 MB/s` for bytes, `3/10` for counted items."""

        size, speed = DownloadColumn(), TransferSpeedColumn()

        def render(self, task: Task) -> Any:
            if task.total is None:
                return Text("")
            if task.fields.get("unit") == BYTES:
                return Text.assemble(self.size.render(task), " ", self.speed.render(task))
            return Text(f"{int(task.completed)}/{int(task.total)}")

    class Elapsed(ProgressColumn):
        """The step's own elapsed time, spelled as its end line will be."""

        def render(self, task: Task) -> Any:
            return Text(duration(time.monotonic() - task.fields["started"]), style="dim")

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        Bar(),
        Amount(),
        Elapsed(),
        console=Console(stderr=True),
        transient=True,
        # stdout stays the verb's own (a redirected table must not land on stderr);
        # stderr writes (warnings) print above the display instead of through it.
        redirect_stdout=False,
        redirect_stderr=True,
    )


class Step:
    """One running step: `advance` moves its bar (from any thread), `done` ends it early
    (before the verb prints its result, for instance)."""

    # Steps running now, outermost first: a nested step's lines are indented under it.
    _running: ClassVar[list[Step]] = []

    def __init__(self, description: str, total: float | None, unit: str, quiet: bool) -> None:
        self.description = description
        self._depth = len(Step._running)
        self._shown = "  " * self._depth + description
        self._started = time.monotonic()
        self._ended = False
        self._announced = False
        self._lock = threading.Lock()
        self._task: TaskID | None = None
        self._timer: threading.Timer | None = None
        if quiet:
            self._ended = True
            return
        Step._running.append(self)
        self._delay = announce_after()
        if interactive():
            self._task = _display.add(self._shown, total, unit)
        elif self._delay == 0:
            self._announce()
        else:
            self._timer = threading.Timer(self._delay, self._announce)
            self._timer.daemon = True
            self._timer.start()

    def _announce(self) -> None:
        """The start line (off a terminal), once the step has run long enough."""
        with self._lock:
            if not self._ended and not self._announced:
                self._announced = True
                click.echo(start_line(self._shown), err=True)

    def advance(self, amount: float = 1) -> None:
        """Count `amount` more of the step's total done (a no-op off a terminal)."""
        progress = _display.progress
        if self._task is not None and progress is not None and not self._ended:
            progress.update(self._task, advance=amount)

    def describe(self, text: str) -> None:
        """Show `text` as the step's name from now on (on a terminal; its lines keep the
        name it started with)."""
        progress = _display.progress
        if self._task is not None and progress is not None and not self._ended:
            progress.update(self._task, description="  " * self._depth + text)

    def done(self, ok: bool = True) -> None:
        """End the step with its line (once; later calls do nothing)."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
        if self._timer is not None:
            self._timer.cancel()
        if self in Step._running:
            Step._running.remove(self)
        seconds = time.monotonic() - self._started
        line = end_line(self._shown, seconds, ok)
        if self._task is not None:
            _display.remove(self._task, line if seconds >= self._delay else None)
        elif self._announced:
            click.echo(line, err=True)


@contextlib.contextmanager
def working(
    description: str, total: float | None = None, unit: str = "", quiet: bool = False
) -> Iterator[Step]:
    """Show progress for the block as the module docstring says; `total` (in `unit`s,
    e.g. BYTES) gives a bar that the block moves with the Step's `advance`."""
    step = Step(description, total, unit, quiet)
    try:
        yield step
    except GeneratorExit:  # a consumer of `track` stopped early: not a failure
        step.done()
        raise
    except BaseException:
        step.done(ok=False)
        raise
    step.done()


def track(description: str, items: Iterable[T], total: int) -> Iterator[T]:
    """`items`, counted on a bar as they are consumed: the progress callback shape that
    ferry.convert.optimize takes (description, items, total)."""
    with working(description, total=total) as step:
        for item in items:
            yield item
            step.advance()
