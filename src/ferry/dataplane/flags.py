"""`ferry serve --dataplane python|rust` and `--dataplane_threads`.

`python` (the default) serves HTTP with uvicorn on ferry's event loop; `rust` with the
Rust front (`ferry.dataplane.front`), which is built by `make` where cargo is. The
default stays `python` until the Rust front passes the whole suite and takes the fast
paths (docs/dataplane.md says what it does today).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum

import click

from ferry.flag_groups import FlagGroup, FlagSpec


class Dataplane(StrEnum):
    PYTHON = "python"
    RUST = "rust"


def default_threads() -> int:
    """One front thread per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class DataplaneOptions:
    kind: Dataplane = Dataplane.PYTHON
    # 0: one per core (default_threads).
    threads: int = 0

    def thread_count(self) -> int:
        return self.threads or default_threads()


_OPTIONS: list[FlagSpec] = [
    (
        ("--dataplane",),
        {
            "type": click.Choice([kind.value for kind in Dataplane]),
            "default": Dataplane.PYTHON.value,
            "show_default": True,
            "help": "Who owns the REST socket: 'python' (uvicorn on ferry's event loop) or "
            "'rust' (ferry's Rust front on threads of its own; built by make where cargo "
            "is; docs/dataplane.md).",
        },
    ),
    (
        ("--dataplane_threads",),
        {
            "type": click.IntRange(min=0, max=1024),
            "default": 0,
            "show_default": True,
            "help": "Threads of the Rust front (0: one per core).",
        },
    ),
]

_GROUP = FlagGroup("ferry.dataplane_flags", _OPTIONS)
# Adds the flags to a click command (their values go to the context, for `resolve`).
dataplane_flag_options = _GROUP.add_to


def resolve(ctx: click.Context) -> DataplaneOptions:
    """The options the command line gave."""
    given = _GROUP.given(ctx)
    return DataplaneOptions(
        Dataplane(given.get("dataplane", Dataplane.PYTHON.value)),
        int(given.get("dataplane_threads", 0)),
    )
