"""`ferry serve --dataplane auto|python|rust` and `--dataplane_threads`.

`python` (the default) serves HTTP with uvicorn on ferry's event loop; `rust` with the
Rust front (`ferry.dataplane.front`: the wheels carry it, and `make` builds it where cargo
is); `auto` is `rust` where the Rust front is built in this install and `python`
otherwise, and says which at start-up. The whole suite passes on both. The default stays
`python` while the Rust front is slower for a lone client (it hands each request to the
event loop and back: two thread wake-ups more than uvicorn; docs/dataplane.md, measured).
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from enum import StrEnum

import click

from ferry.flag_groups import FlagGroup, FlagSpec

log = logging.getLogger(__name__)


class Dataplane(StrEnum):
    AUTO = "auto"
    PYTHON = "python"
    RUST = "rust"


EXTENSION = "ferry._dataplane"


def rust_front_built() -> bool:
    """Whether this install has the Rust front (the compiled module imports)."""
    try:
        importlib.import_module(EXTENSION)
    except ImportError:
        return False
    return True


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

    def chosen(self) -> Dataplane:
        """The front that serves: `auto` made `rust` or `python` by what is built."""
        if self.kind is not Dataplane.AUTO:
            return self.kind
        if rust_front_built():
            return Dataplane.RUST
        log.info(
            "the Rust front is not built in this install (a source install without cargo; "
            "the wheels carry it, docs/dataplane.md): REST is served by the Python front"
        )
        return Dataplane.PYTHON


_OPTIONS: list[FlagSpec] = [
    (
        ("--dataplane",),
        {
            "type": click.Choice([kind.value for kind in Dataplane]),
            "default": Dataplane.PYTHON.value,
            "show_default": True,
            "help": "Who owns the REST socket: 'python' (uvicorn on ferry's event loop), "
            "'rust' (ferry's Rust front on threads of its own; in the wheels, built by make "
            "where cargo is; docs/dataplane.md), or 'auto': 'rust' where it is built, else "
            "'python'.",
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
